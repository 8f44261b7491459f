#!/usr/bin/env bash
# Postfix smtp client -> postern-relay, with smtp_tls_security_level = encrypt
# and = verify (the relay's certificate issued by the test CA, Postfix given
# that CA as smtp_tls_CAfile). The relay delivers on to a Postfix sink.
# A second relay serving only its self-signed Default Cert must be refused
# by the verify client (and accepted by encrypt).
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
case_begin relay-postfix-client
need postfix swaks
need_relay
ensure_pki

SINK=$(free_port) CPORT=$(free_port) RCA=$(free_port) RDEF=$(free_port)
D="enc-ca.test ver-ca.test enc-default.test ver-default.test"
PF_DOMAINS="$D" pf_new sink "$SINK"

routes=""
for d in $D; do routes+=" $d=127.0.0.1:$SINK"; done
R_ACCEPTED="$D" R_ROUTES="$routes" R_CERTS=ca relay_new relay-ca "$RCA"
R_ACCEPTED="$D" R_ROUTES="$routes" relay_new relay-default "$RDEF"
relay_start relay-ca "$RCA"
relay_start relay-default "$RDEF"

PF_MASTER_EXTRA="smtp-encrypt unix - - n - - smtp -o smtp_tls_security_level=encrypt
smtp-verify unix - - n - - smtp -o smtp_tls_security_level=verify"
cat >"$WORK/transport" <<EOF
enc-ca.test smtp-encrypt:[localhost]:$RCA
ver-ca.test smtp-verify:[localhost]:$RCA
enc-default.test smtp-encrypt:[localhost]:$RDEF
ver-default.test smtp-verify:[localhost]:$RDEF
EOF
PF_MASTER_EXTRA="$PF_MASTER_EXTRA" pf_new client "$CPORT" \
    "transport_maps = texthash:$WORK/transport" "relay_domains = $D" \
    "smtp_host_lookup = native" "smtp_tls_CAfile = $PKI/ca.pem"
pf_start_all sink "$SINK" client "$CPORT"

for d in $D; do
    swaks_run "$WORK/submit-$d.out" --server 127.0.0.1 --port "$CPORT" --from s@client.test --to "u@$d" ||
        fail "the Postfix client refused u@$d"
done

wait_for "$(pf_log sink)" "to=<u@enc-ca.test>.*status=sent" 40 || fail "encrypt -> relay (test CA cert): not delivered through the relay"
wait_for "$(pf_log sink)" "to=<u@ver-ca.test>.*status=sent" 40 || fail "verify -> relay (test CA cert): not delivered through the relay"
wait_for "$(pf_log sink)" "to=<u@enc-default.test>.*status=sent" 40 || fail "encrypt -> relay (Default Cert): not delivered through the relay"
wait_for "$(pf_log client)" "to=<u@ver-default.test>.*status=deferred" 40 || fail "verify -> relay (Default Cert): not deferred"

cl=$(pf_log client)
grep -q "Verified TLS connection established to localhost\[127.0.0.1\]:$RCA" "$cl" ||
    fail "Postfix did not log a Verified TLS connection to the relay: $(grep 'TLS connection' "$cl" | head -n 3)"
ok "verify: $(grep -m1 -o "Verified TLS connection established to localhost\[127.0.0.1\]:$RCA: [^(]*" "$cl")"
grep -Eq "(Trusted|Verified|Untrusted) TLS connection established to localhost\[127.0.0.1\]:$RDEF" "$cl" ||
    fail "encrypt: no TLS connection to the Default Cert relay logged"
grep -E "to=<u@enc-(ca|default).test>.*status=sent" "$cl" | grep -q . || fail "encrypt: not sent"
ok "encrypt: delivered to both relays over TLS"
grep -E "to=<u@ver-default.test>.*status=deferred" "$cl" | grep -q "Server certificate not verified" ||
    fail "verify against the Default Cert: deferred for another reason: $(pf_status client u@ver-default.test)"
grep -q "to=<u@ver-default.test>" "$(pf_log sink)" && fail "verify against the Default Cert: the message went through"
ok "verify against the self-signed Default Cert: deferred (Server certificate not verified)"
for d in enc-ca.test ver-ca.test enc-default.test; do
    [ "$(tls_of sink "u@$d")" != absent ] || fail "u@$d: sink has no record"
done
ok "the relay delivered each accepted message on to the sink"
case_end
