#!/usr/bin/env bash
# Control: the STARTTLS command injection probe (smtp_raw.py starttls-pipelined)
# must fail against a server with the CVE-2011-0411 bug and pass against the
# same server with the bug fixed; otherwise its verdicts on the relay and on
# Postfix prove nothing.
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
case_begin control-injection
need python3
ensure_pki
for variant in vulnerable fixed; do
    P=$(free_port)
    python3 "$INTEROP_DIR/smtp_raw.py" fake-server "$P" "$PKI/nexthop-chain.pem" "$PKI/nexthop.key" "$variant" \
        >"$WORK/fake-$variant.log" 2>&1 &
    on_exit "kill $!"
    wait_port "$P" 10 || fail "fake $variant server did not start"
    rc=0
    python3 "$INTEROP_DIR/smtp_raw.py" starttls-pipelined 127.0.0.1 "$P" >"$WORK/probe-$variant.out" 2>&1 || rc=$?
    case "$variant:$rc" in
    vulnerable:1) ok "probe detects the vulnerable server: $(tail -n 1 "$WORK/probe-$variant.out")" ;;
    fixed:0) ok "probe passes the fixed server: $(tail -n 1 "$WORK/probe-$variant.out")" ;;
    *) fail "probe against the $variant server exited $rc: $(cat "$WORK/probe-$variant.out")" ;;
    esac
done
case_end
