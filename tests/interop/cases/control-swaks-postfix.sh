#!/usr/bin/env bash
# Control: swaks against Postfix smtpd in the server modes the relay cases use
# (offer, require, client certificate ask / require). Proves that the swaks
# invocations and the assertions on their transcripts tell the outcomes apart.
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
case_begin control-swaks-postfix
need postfix swaks openssl
ensure_pki

P1=$(free_port) P2=$(free_port) P3=$(free_port)
tls="smtpd_tls_cert_file = $PKI/nexthop-chain.pem"
key="smtpd_tls_key_file = $PKI/nexthop.key"
pf_new offer "$P1" "smtpd_tls_security_level = may" "$tls" "$key" \
    "smtpd_tls_ask_ccert = yes" "smtpd_tls_CAfile = $PKI/ca.pem"
pf_new require "$P2" "smtpd_tls_security_level = encrypt" "$tls" "$key"
pf_new reqcert "$P3" "smtpd_tls_security_level = encrypt" "$tls" "$key" \
    "smtpd_tls_req_ccert = yes" "smtpd_tls_CAfile = $PKI/ca.pem"
pf_start_all offer "$P1" require "$P2" reqcert "$P3"

S="--server 127.0.0.1 --from s@client.test"

swaks_run "$WORK/plain.out" $S --port "$P1" --to a@dest.test || fail "offer: plaintext refused"
pf_wait_count offer 1 || fail "offer: plaintext message not delivered"
[ "$(tls_of offer a@dest.test)" = plain ] || fail "offer: plaintext message logged as TLS"
ok "offer: plaintext accepted and delivered, logged without TLS"

swaks_run "$WORK/tls.out" $S --port "$P1" --to b@dest.test -tls || fail "offer: STARTTLS failed"
pf_wait_count offer 2 || fail "offer: TLS message not delivered"
[ "$(tls_of offer b@dest.test)" = tls ] || fail "offer: TLS message not logged as TLS"
ok "offer: STARTTLS accepted, logged as TLS"

if swaks_run "$WORK/req-plain.out" $S --port "$P2" --to c@dest.test; then
    fail "require: plaintext MAIL accepted"
fi
grep -q '<\*\* *530 5.7.0 Must issue a STARTTLS command first' "$WORK/req-plain.out" ||
    fail "require: no 530 5.7.0 before TLS: $(grep '<' "$WORK/req-plain.out" | tail -n 2)"
ok "require: MAIL before STARTTLS answered 530 5.7.0"
swaks_run "$WORK/req-tls.out" $S --port "$P2" --to d@dest.test -tls || fail "require: TLS session refused"
ok "require: accepted after STARTTLS"

swaks_run "$WORK/ask-good.out" $S --port "$P1" --to e@dest.test -tls \
    --tls-cert "$PKI/client.pem" --tls-key "$PKI/client.key" || fail "ask: trusted client certificate refused"
swaks_run "$WORK/ask-bad.out" $S --port "$P1" --to f@dest.test -tls \
    --tls-cert "$PKI/client-other.pem" --tls-key "$PKI/client-other.key" || fail "ask: untrusted client certificate refused"
wait_for "$(pf_log offer)" "Trusted TLS connection established from" || fail "ask: trusted certificate not logged as Trusted"
wait_for "$(pf_log offer)" "Untrusted TLS connection established from" || fail "ask: untrusted certificate not logged as Untrusted"
ok "ask: both client certificates accepted; Postfix logs one Trusted, one Untrusted"

swaks_run "$WORK/req-good.out" $S --port "$P3" --to g@dest.test -tls \
    --tls-cert "$PKI/client.pem" --tls-key "$PKI/client.key" || fail "require cert: trusted client certificate refused"
ok "require cert: trusted client certificate accepted"
if swaks_run "$WORK/req-bad.out" $S --port "$P3" --to h@dest.test -tls \
    --tls-cert "$PKI/client-other.pem" --tls-key "$PKI/client-other.key"; then
    fail "require cert: untrusted client certificate accepted"
fi
if swaks_run "$WORK/req-none.out" $S --port "$P3" --to i@dest.test -tls; then
    fail "require cert: session without client certificate accepted"
fi
ok "require cert: untrusted and missing client certificates refused ($(grep -hE '^(<~?\*|\*\*\*)' "$WORK/req-bad.out" | head -n 1))"
pf_wait_count reqcert 1 || fail "require cert: accepted message not delivered"
[ "$(pf_count reqcert)" -eq 1 ] || fail "require cert: a refused session delivered mail"
ok "require cert: exactly the trusted client's message delivered"
case_end
