#!/usr/bin/env bash
# openssl s_client -starttls smtp -> postern-relay (certificates from the test
# CA: one RSA, one ECDSA P-256).
#
#   relay-openssl.sh [relay]   the relay under test
#   relay-openssl.sh postfix   control: Postfix smtpd with the same certificates
#                              and smtpd_tls_protocols = >=TLSv1.2
#   - TLS 1.2 and 1.3 only: a TLS 1.1 ClientHello (client security level 0, so
#     the client really sends it) is refused by the server;
#   - ECDSA certificate served to a client offering only ECDSA signature
#     algorithms, RSA otherwise;
#   - session resumption (-sess_out / -sess_in) for TLS 1.2 and TLS 1.3;
#   - "STARTTLS\r\nRSET\r\n" in one write: the RSET is never answered inside TLS.
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
TARGET=${1:-relay}
case_begin "openssl-$TARGET"
need openssl python3
ensure_pki

P=$(free_port)
if [ "$TARGET" = relay ]; then
    need_relay
    R_CERTS=ca relay_new relay "$P"
    relay_start relay "$P"
else
    need postfix
    pf_new server "$P" "smtpd_tls_security_level = may" \
        "smtpd_tls_cert_file = $PKI/relay-chain.pem" "smtpd_tls_key_file = $PKI/relay.key" \
        "smtpd_tls_eccert_file = $PKI/relay-ec-chain.pem" "smtpd_tls_eckey_file = $PKI/relay-ec.key" \
        "smtpd_tls_protocols = >=TLSv1.2" "smtpd_tls_session_cache_database = btree:$WORK/server/data/scache"
    pf_start_all server "$P"
fi
ok "$TARGET listening with the test CA's RSA and ECDSA certificates"

# sc NAME ARGS...: one s_client session (EHLO after TLS, then QUIT), output in $WORK/NAME.out.
sc() {
    local name=$1
    shift
    (
        sleep 0.5
        printf 'EHLO openssl.test\r\n'
        sleep 0.5
        printf 'QUIT\r\n'
    ) | timeout 20 openssl s_client -starttls smtp -connect "127.0.0.1:$P" -servername localhost \
        -CAfile "$PKI/ca.pem" "$@" >"$WORK/$name.out" 2>&1
}
established() { grep -Eq '^New, TLSv1\.[23], Cipher is|^Reused, TLSv1\.[23], Cipher is' "$WORK/$1.out"; }
keytype() { # the served certificate's public key algorithm
    openssl x509 -in "$WORK/$1.out" -noout -text 2>/dev/null |
        sed -n 's/^ *Public Key Algorithm: *//p' | head -n 1
}

# --- protocol versions
sc tls13 -tls1_3 || true
established tls13 || fail "TLS 1.3 handshake failed: $(tail -n 3 "$WORK/tls13.out")"
sc tls12 -tls1_2 || true
established tls12 || fail "TLS 1.2 handshake failed: $(tail -n 3 "$WORK/tls12.out")"
ok "TLS 1.3 and TLS 1.2 handshakes succeed"
sc tls11 -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' || true
if established tls11; then fail "a TLS 1.1 handshake succeeded"; fi
grep -qi "no protocols available" "$WORK/tls11.out" &&
    fail "the TLS 1.1 probe never left the client (no protocols available): the check proves nothing"
grep -Eqi "alert protocol version|unsupported protocol|wrong version number|tlsv1 alert|handshake failure" "$WORK/tls11.out" ||
    fail "TLS 1.1 refused without a protocol error: $(grep -i error "$WORK/tls11.out" | head -n 2)"
ok "TLS 1.1 refused: $(grep -Eoi 'alert protocol version|unsupported protocol|wrong version number|handshake failure' "$WORK/tls11.out" | head -n 1)"
sc tls10 -tls1 -cipher 'DEFAULT:@SECLEVEL=0' || true
if established tls10; then fail "a TLS 1.0 handshake succeeded"; fi
ok "TLS 1.0 refused"

# --- certificate selection by signature algorithms
for v in tls1_2 tls1_3; do
    sc "ec-$v" "-$v" -sigalgs 'ECDSA+SHA256:ECDSA+SHA384' || true
    established "ec-$v" || fail "$v with ECDSA-only sigalgs failed: $(tail -n 3 "$WORK/ec-$v.out")"
    [ "$(keytype "ec-$v")" = id-ecPublicKey ] || fail "$v, ECDSA-only client: served $(keytype "ec-$v")"
    grep -q "Verify return code: 0 (ok)" "$WORK/ec-$v.out" || fail "$v: the ECDSA chain does not verify against the test CA"
    sc "rsa-$v" "-$v" -sigalgs 'rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:RSA+SHA256' || true
    established "rsa-$v" || fail "$v with RSA-only sigalgs failed: $(tail -n 3 "$WORK/rsa-$v.out")"
    [ "$(keytype "rsa-$v")" = rsaEncryption ] || fail "$v, RSA-only client: served $(keytype "rsa-$v")"
done
ok "ECDSA certificate served to ECDSA-only clients, RSA to RSA-only clients (TLS 1.2 and 1.3)"

# --- resumption
for v in tls1_2 tls1_3; do
    sc "sess1-$v" "-$v" -sess_out "$WORK/sess-$v.pem" || true
    established "sess1-$v" || fail "$v: first session failed"
    [ -s "$WORK/sess-$v.pem" ] || fail "$v: no session saved by -sess_out"
    sc "sess2-$v" "-$v" -sess_in "$WORK/sess-$v.pem" || true
    grep -q "^Reused, TLSv1\.[23]" "$WORK/sess2-$v.out" ||
        fail "$v: session not resumed: $(grep -E '^(New|Reused),' "$WORK/sess2-$v.out")"
done
ok "sessions resumed with -sess_out / -sess_in: TLS 1.2 and TLS 1.3 show \"Reused\""

# --- STARTTLS command injection (CVE-2011-0411 class)
python3 "$INTEROP_DIR/smtp_raw.py" starttls-pipelined 127.0.0.1 "$P" >"$WORK/inject.out" 2>&1 ||
    fail "STARTTLS injection: $(cat "$WORK/inject.out")"
ok "STARTTLS injection: $(tail -n 1 "$WORK/inject.out")"
case_end
