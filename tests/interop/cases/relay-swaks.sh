#!/usr/bin/env bash
# swaks -> postern-relay in each server mode and client-certificate mode
# (DESIGN.md section 3, inbound). The relay delivers accepted mail to a
# Postfix sink, whose log shows that it arrived.
#
#   offer:            plaintext and STARTTLS both accepted and delivered
#   require:          MAIL before STARTTLS answered 530 5.7.0; accepted after it
#   ask (+ roots):    any client certificate accepted; only the verified one of a
#                     trusted agent may relay (no authorised networks here)
#   require + require: the test CA's client certificate accepted; a certificate
#                     from another CA, or none, refused with 554 5.7.1 after
#                     the handshake
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
case_begin relay-swaks
need postfix swaks openssl
need_relay
ensure_pki

SINK=$(free_port)
PF_DOMAINS="other.test" pf_new sink "$SINK"
pf_start_all sink "$SINK"
R_ROUTES="dest.test=127.0.0.1:$SINK other.test=127.0.0.1:$SINK"

P_OFFER=$(free_port) P_REQ=$(free_port) P_ASK=$(free_port) P_REQCERT=$(free_port)
R_SERVER_TLS=offer relay_new offer "$P_OFFER"
R_SERVER_TLS=require relay_new require "$P_REQ"
fp=$(openssl x509 -in "$PKI/client.pem" -noout -fingerprint -sha256 | sed 's/.*=//')
R_NETWORKS="" R_CLIENT_CERTS=ask R_CLIENT_CA="$PKI/ca.pem" R_AGENTS="$fp" relay_new ask "$P_ASK"
R_NETWORKS="" R_SERVER_TLS=require R_CLIENT_CERTS=require R_CLIENT_CA="$PKI/ca.pem" R_AGENTS="$fp" \
    relay_new reqcert "$P_REQCERT"
relay_start offer "$P_OFFER"
relay_start require "$P_REQ"
relay_start ask "$P_ASK"
relay_start reqcert "$P_REQCERT"
ok "four relays listening (offer, require, ask, require+require)"

S="--server 127.0.0.1 --from s@client.test"
GOOD=(--tls-cert "$PKI/client.pem" --tls-key "$PKI/client.key")
BAD=(--tls-cert "$PKI/client-other.pem" --tls-key "$PKI/client-other.key")
delivered() { # RCPT: wait until the sink delivered mail for RCPT
    wait_for "$(pf_log sink)" "to=<$1>.*status=sent" 30
}
transcript_errors() { grep -hE '^(<~?\*|\*\*\*)' "$1" | head -n 2 | tr '\n' ' '; }

# --- offer
swaks_run "$WORK/offer-plain.out" $S --port "$P_OFFER" --to offer-plain@dest.test ||
    fail "offer: plaintext refused: $(transcript_errors "$WORK/offer-plain.out")"
grep -q '<-  250-STARTTLS\|<-  250 STARTTLS' "$WORK/offer-plain.out" || fail "offer: STARTTLS not advertised"
swaks_run "$WORK/offer-tls.out" $S --port "$P_OFFER" --to offer-tls@dest.test -tls ||
    fail "offer: STARTTLS session refused: $(transcript_errors "$WORK/offer-tls.out")"
grep -q '<~  250[- ]STARTTLS' "$WORK/offer-tls.out" && fail "offer: STARTTLS advertised again inside TLS"
delivered offer-plain@dest.test || fail "offer: plaintext message not delivered to the sink"
delivered offer-tls@dest.test || fail "offer: TLS message not delivered to the sink"
ok "offer: plaintext and STARTTLS accepted and delivered; STARTTLS not re-advertised inside TLS"
f=$(grep -l "^Delivered-To: offer-tls@dest.test" "$(pf_maildir sink)"/*)
rcv=$(python3 -c '
import email, sys
m = email.message_from_binary_file(open(sys.argv[1], "rb"))
print("\n".join(" ".join(h.split()) for h in m.get_all("Received", []) if "by relay.test" in h))
' "$f")
[ -n "$rcv" ] || fail "offer: no Received header from relay.test"
grep -q "TLSv1\.[23]" <<<"$rcv" || fail "offer: the relay's Received header does not record the TLS version: $rcv"
ok "offer: the relay's Received header records the TLS version"

# --- require
if swaks_run "$WORK/req-plain.out" $S --port "$P_REQ" --to req-plain@dest.test; then
    fail "require: plaintext MAIL accepted"
fi
grep -q '<\*\* *530 5.7.0' "$WORK/req-plain.out" ||
    fail "require: no 530 5.7.0 before TLS: $(transcript_errors "$WORK/req-plain.out")"
ok "require: MAIL before STARTTLS answered $(grep -m1 -o '530 5.7.0.*' "$WORK/req-plain.out")"
swaks_run "$WORK/req-tls.out" $S --port "$P_REQ" --to req-tls@dest.test -tls ||
    fail "require: STARTTLS session refused: $(transcript_errors "$WORK/req-tls.out")"
delivered req-tls@dest.test || fail "require: message not delivered"
ok "require: accepted after STARTTLS and delivered"
sleep 1
grep -q "to=<req-plain@dest.test>" "$(pf_log sink)" && fail "require: the refused message was delivered"

# --- ask: never refuses; the verified trusted agent may relay
swaks_run "$WORK/ask-none.out" $S --port "$P_ASK" --to ask-none@dest.test -tls ||
    fail "ask: session without certificate refused: $(transcript_errors "$WORK/ask-none.out")"
swaks_run "$WORK/ask-good.out" $S --port "$P_ASK" --to ask-good@other.test -tls "${GOOD[@]}" ||
    fail "ask: the trusted agent may not relay: $(transcript_errors "$WORK/ask-good.out")"
swaks_run "$WORK/ask-bad-local.out" $S --port "$P_ASK" --to ask-bad@dest.test -tls "${BAD[@]}" ||
    fail "ask: untrusted certificate refused for an accepted domain: $(transcript_errors "$WORK/ask-bad-local.out")"
if swaks_run "$WORK/ask-bad-relay.out" $S --port "$P_ASK" --to ask-bad@other.test -tls "${BAD[@]}"; then
    fail "ask: an untrusted certificate was allowed to relay"
fi
grep -q '554 5.7.1' "$WORK/ask-bad-relay.out" ||
    fail "ask: relaying refused without 554 5.7.1: $(transcript_errors "$WORK/ask-bad-relay.out")"
if swaks_run "$WORK/ask-none-relay.out" $S --port "$P_ASK" --to ask-none@other.test -tls; then
    fail "ask: a client without certificate was allowed to relay (open relay)"
fi
delivered ask-good@other.test || fail "ask: relayed message not delivered"
delivered ask-bad@dest.test || fail "ask: local message with an untrusted certificate not delivered"
ok "ask: certificates never refused; the verified trusted agent relays; others get 554 5.7.1 for other domains"

# --- require + require
swaks_run "$WORK/rc-good.out" $S --port "$P_REQCERT" --to rc-good@other.test -tls "${GOOD[@]}" ||
    fail "require cert: trusted client certificate refused: $(transcript_errors "$WORK/rc-good.out")"
if swaks_run "$WORK/rc-bad.out" $S --port "$P_REQCERT" --to rc-bad@dest.test -tls "${BAD[@]}"; then
    fail "require cert: certificate from another CA accepted"
fi
if swaks_run "$WORK/rc-none.out" $S --port "$P_REQCERT" --to rc-none@dest.test -tls; then
    fail "require cert: session without client certificate accepted"
fi
delivered rc-good@other.test || fail "require cert: accepted message not delivered"
sleep 1
grep -Eq "to=<rc-(bad|none)@dest.test>" "$(pf_log sink)" && fail "require cert: a refused session's mail was delivered"
# The handshake completes and the client reads why (RFC 3207 section 4.1).
for t in rc-bad rc-none; do
    grep -q "554 5.7.1 Client certificate required" "$WORK/$t.out" ||
        fail "require cert: $t not answered 554 5.7.1 after the handshake: $(transcript_errors "$WORK/$t.out")"
done
# The relay says why: the other CA's certificate did not verify; no certificate was sent.
wait_for "$(relay_log reqcert)" "client certificate required from .*: client certificate not verified" 5 ||
    fail "require cert: the relay did not log the untrusted client certificate"
wait_for "$(relay_log reqcert)" "client certificate required from .*: no client certificate presented" 5 ||
    fail "require cert: the relay did not log the missing client certificate"
ok "require cert: test-CA certificate accepted; other CA refused ($(transcript_errors "$WORK/rc-bad.out")); none refused ($(transcript_errors "$WORK/rc-none.out"))"
case_end
