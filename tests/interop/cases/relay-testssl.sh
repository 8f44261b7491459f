#!/usr/bin/env bash
# testssl.sh --starttls smtp against postern-relay on its embedded defaults:
# offer TLS, the generated self-signed Default Cert (RSA 4096, SHA-256).
#
# Passes when testssl reports no finding of severity HIGH or CRITICAL other
# than those about trusting the self-signed Default Cert (chain of trust, and
# the revocation information a self-signed certificate cannot carry), and
# the STARTTLS command injection probe finds nothing. testssl.sh 3.0 (Debian
# 12) has no STARTTLS injection test of its own (it appeared in 3.2); the
# probe is ours (smtp_raw.py starttls-pipelined), also run when testssl has one.
#
#   relay-testssl.sh [relay|postfix]   postfix: control run against Postfix
#   (may level, test CA certificate); reports its findings, asserts nothing
#   about them, and proves the JSON reading works.
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
TARGET=${1:-relay}
case_begin "testssl-$TARGET"
need testssl python3
ensure_pki

P=$(free_port)
if [ "$TARGET" = relay ]; then
    need_relay
    R_RSA_BITS=4096 relay_new relay "$P"
    relay_start relay "$P"
else
    need postfix
    pf_new server "$P" "smtpd_tls_security_level = may" \
        "smtpd_tls_cert_file = $PKI/nexthop-chain.pem" "smtpd_tls_key_file = $PKI/nexthop.key"
    pf_start_all server "$P"
fi

testssl --quiet --color 0 --warnings off --openssl-timeout 10 --starttls smtp \
    --jsonfile "$WORK/testssl.json" "127.0.0.1:$P" >"$WORK/testssl.out" 2>&1 || true
[ -s "$WORK/testssl.json" ] || fail "testssl produced no JSON: $(tail -n 5 "$WORK/testssl.out")"
cp "$WORK/testssl.json" "${INTEROP_REPORT_DIR:-$WORK}/testssl-$TARGET.json" 2>/dev/null || true

# Severity summary and the findings that count.
python3 - "$WORK/testssl.json" "$WORK/summary.txt" <<'EOF'
import json, sys
findings = json.load(open(sys.argv[1]))
# Trust in the self-signed Default Cert: the chain cannot be trusted, and a
# self-signed certificate has no CRL or OCSP URI to check.
ALLOWED = {"cert_chain_of_trust", "cert_trust", "cert_revocation", "cert_ocspURL", "cert_crlDistributionPoints"}
counts, bad, allowed = {}, [], []
for f in findings:
    sev = f.get("severity", "")
    counts[sev] = counts.get(sev, 0) + 1
    if sev in ("HIGH", "CRITICAL"):
        base = f["id"].split(" ")[0]
        (allowed if base in ALLOWED else bad).append("%s %s: %s" % (sev, f["id"], f["finding"]))
with open(sys.argv[2], "w") as out:
    out.write("severities: %s\n" % ", ".join("%s=%d" % kv for kv in sorted(counts.items())))
    for a in allowed:
        out.write("allowed: %s\n" % a)
    for b in bad:
        out.write("FINDING: %s\n" % b)
print(len(bad))
EOF
cat "$WORK/summary.txt" >&2
python3 - "$WORK/testssl.json" >&2 <<'EOF'
import json, sys
SHOW = ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3", "cipher_order", "cert_keySize",
        "cert_signatureAlgorithm", "cert_commonName", "cert_notAfter", "secure_renego", "fallback_SCSV")
for f in json.load(open(sys.argv[1])):
    if f["id"] in SHOW or f["id"].startswith("cipher-tls") or f["id"].startswith("cipher_order"):
        print("    %-28s %-9s %s" % (f["id"], f["severity"], f["finding"][:90]))
EOF
if grep -qi '"id" *: *"starttls_injection"' "$WORK/testssl.json"; then
    grep -A3 '"starttls_injection"' "$WORK/testssl.json" | grep -qi '"finding" *: *"not vulnerable' ||
        fail "testssl: STARTTLS injection finding is not 'not vulnerable'"
    ok "testssl: STARTTLS injection not vulnerable"
fi
python3 "$INTEROP_DIR/smtp_raw.py" starttls-pipelined 127.0.0.1 "$P" >"$WORK/inject.out" 2>&1 ||
    fail "STARTTLS injection probe: $(cat "$WORK/inject.out")"
ok "STARTTLS injection probe: $(tail -n 1 "$WORK/inject.out")"

if [ "$TARGET" = relay ]; then
    if grep -q '^FINDING' "$WORK/summary.txt"; then
        fail "testssl reports HIGH/CRITICAL findings: $(grep '^FINDING' "$WORK/summary.txt" | tr '\n' ';')"
    fi
    grep -q '^allowed: .*cert_chain_of_trust' "$WORK/summary.txt" ||
        fail "testssl did not flag the self-signed Default Cert's chain of trust: the JSON reading is broken?"
    ok "testssl: no HIGH/CRITICAL finding beyond trust in the self-signed Default Cert"
else
    grep -q '^severities: ' "$WORK/summary.txt" || fail "control: no severities read"
    ok "control: testssl JSON read ($(head -n 1 "$WORK/summary.txt"))"
fi
case_end
