#!/usr/bin/env bash
# SMTP smuggling (CVE-2023-51764/5/6): the twelve end-of-data lookalikes,
# each followed by a smuggled MAIL/RCPT/DATA, sent by a raw socket client.
#
#   smuggling.sh relay     client -> postern-relay -> Postfix: Postfix must
#                          receive at most the intended message, never the
#                          smuggled one
#   smuggling.sh relay-reject   the same with the relay's bare_newlines = "reject"
#   smuggling.sh postfix   control: client -> Postfix directly. Postfix 3.7
#                          with smtpd_forbid_bare_newline = no takes some
#                          lookalikes as the end of data, so the smuggled
#                          message arrives: proves that the detector detects.
#
# The receiving Postfix is deliberately the lenient kind (bare newlines
# allowed, unauthenticated pipelining allowed): the relay is what must not
# let a lookalike through.
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
MODE=${1:?usage: smuggling.sh relay|relay-reject|postfix}
TARGET=${MODE%-reject}
case_begin "smuggling-$MODE"
need postfix python3
[ "$TARGET" = relay ] && need_relay
ensure_pki
N=$(python3 "$INTEROP_DIR/smtp_raw.py" count-lookalikes)
[ "$N" -eq 12 ] || fail "expected 12 lookalikes, the client knows $N"

SINK=$(free_port)
pf_new sink "$SINK" "smtpd_forbid_bare_newline = no" "smtpd_forbid_unauth_pipelining = no" \
    "smtpd_tls_security_level = may" "smtpd_tls_cert_file = $PKI/nexthop-chain.pem" \
    "smtpd_tls_key_file = $PKI/nexthop.key"
pf_start_all sink "$SINK"

if [ "$TARGET" = relay ]; then
    PORT=$(free_port)
    R_ACCEPTED="dest.test" R_ROUTES="dest.test=127.0.0.1:$SINK"
    [ "$MODE" = relay-reject ] && R_EXTRA='bare_newlines = "reject"'
    relay_new relay "$PORT"
    relay_start relay "$PORT"
else
    PORT=$SINK
fi

for ((i = 0; i < N; i++)); do
    python3 "$INTEROP_DIR/smtp_raw.py" smuggle 127.0.0.1 "$PORT" "$i" \
        "intended-$i@dest.test" "smuggled-$i@dest.test" >>"$WORK/client.out" 2>&1 ||
        fail "lookalike $i: the client failed: $(tail -n 2 "$WORK/client.out")"
done
ok "$N lookalikes sent ($TARGET answered each session)"

# A marker message sent last: once it arrived and the relay's queue is empty,
# everything the relay was going to deliver has been delivered.
swaks_run "$WORK/marker.out" --server 127.0.0.1 --port "$PORT" --from s@client.test \
    --to marker@dest.test || fail "marker message refused"
for ((t = 0; t < 300; t++)); do
    if pf_grep sink "^Delivered-To: marker@dest.test"; then
        if [ "$TARGET" != relay ] || [ -z "$(relay_queue relay @dest.test)" ]; then break; fi
    fi
    sleep 0.1
done
pf_grep sink "^Delivered-To: marker@dest.test" || fail "marker message never delivered"
sleep 2

# Count, per lookalike, what the sink received.
smuggled=() intended_counts=""
for ((i = 0; i < N; i++)); do
    m=$(pf_maildir sink)
    # delivered to the smuggled recipient, or a message that is only the smuggled one
    s=$( (grep -lE "^Delivered-To: smuggled-$i@dest.test" "$m"/* 2>/dev/null || true) | wc -l)
    h=$( (grep -lE "^Subject: smuggled $i\$" "$m"/* 2>/dev/null || true) |
        (xargs -r grep -L "^Subject: intended $i" || true) | wc -l)
    n=$( (grep -lE "^Delivered-To: intended-$i@dest.test" "$m"/* 2>/dev/null || true) | wc -l)
    intended_counts+="$n"
    if [ "$s" -gt 0 ] || [ "$h" -gt 0 ]; then smuggled+=("$i"); fi
    if [ "$n" -gt 1 ]; then fail "lookalike $i: intended message delivered $n times"; fi
done
sed -n 's/^\([0-9]*\) \(b[^ ]*\) final=\([0-9]*\).*/    lookalike \1 \2: reply to the end of data \3/p' "$WORK/client.out" >&2

if [ "$TARGET" = relay ]; then
    [ ${#smuggled[@]} -eq 0 ] ||
        fail "smuggled message(s) reached Postfix through the relay for lookalike(s): ${smuggled[*]}"
    ok "no smuggled message reached Postfix; intended messages delivered per lookalike: $intended_counts"
    if [ "$MODE" = relay-reject ]; then
        refused=$(sed -n 's/^\([0-9]*\) .* final=5[0-9][0-9] .*/\1/p' "$WORK/client.out" | tr '\n' ' ')
        [ -n "$refused" ] || fail "bare_newlines = reject refused none of the lookalikes"
        ok "bare_newlines = reject: refused (5xx at the end of data) lookalike(s) $refused"
    fi
else
    [ ${#smuggled[@]} -gt 0 ] ||
        fail "control: Postfix 3.7 with bare newlines allowed let nothing through; the detector cannot be trusted"
    ok "control: the detector sees smuggling straight into Postfix for lookalike(s) ${smuggled[*]}"
fi
case_end
