#!/usr/bin/env bash
# Every client TLS mode against every Postfix next-hop configuration
# (DESIGN.md section 3, docs/policy.md "Outbound outcome matrix").
#
#   nexthop-matrix.sh relay     postern-relay is the client (the case under test)
#   nexthop-matrix.sh postfix   a Postfix smtp client is (control: proves the
#                               next hops, the expectations and the log checks)
#
# Each (next hop, mode) pair has its own destination domain KIND-MODE.test,
# routed to that next hop with that mode. The outcome of each message is
# read from the next hop's own log (received over TLS or in plaintext) and,
# for deferrals, from the client's queue.
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
CLIENT=${1:?usage: nexthop-matrix.sh relay|postfix}
case_begin "nexthop-matrix-$CLIENT"
need postfix swaks openssl
[ "$CLIENT" = relay ] && need_relay
ensure_pki

KINDS="notls may-selfsigned may-ca may-wrongname encrypt"
if [ "$CLIENT" = relay ]; then MODES="none opportunistic encrypt verify"; else MODES="none may encrypt verify"; fi

# expected KIND MODE: plain | tls | defer:CODE | refused
# (refused: the next hop answers MAIL with 530 because the client never tried TLS)
expected() {
    local kind=$1 mode=$2
    case "$mode" in may) mode=opportunistic ;; esac
    case "$kind:$mode" in
    *:none) [ "$kind" = encrypt ] && echo refused || echo plain ;;
    notls:opportunistic) echo plain ;;
    notls:*) echo "defer:4.7.4" ;;
    may-selfsigned:verify | may-wrongname:verify) echo "defer:4.7.5" ;;
    *) echo tls ;;
    esac
}

# One next hop per kind; every one accepts every KIND-MODE.test domain.
domains=""
for k in $KINDS; do for m in $MODES; do domains="$domains $k-$m.test"; done; done
declare -A NH_PORT
starts=()
for k in $KINDS; do
    NH_PORT[$k]=$(free_port)
    PF_DOMAINS="$domains" nexthop_new "$k" "nh-$k" "${NH_PORT[$k]}"
    starts+=("nh-$k" "${NH_PORT[$k]}")
done

CPORT=$(free_port)
if [ "$CLIENT" = postfix ]; then
    # One transport per mode; the transport table sends KIND-MODE.test there.
    PF_MASTER_EXTRA=""
    for m in $MODES; do
        PF_MASTER_EXTRA+="smtp-$m unix - - n - - smtp -o smtp_tls_security_level=$m"$'\n'
    done
    : >"$WORK/transport"
    for k in $KINDS; do for m in $MODES; do
        echo "$k-$m.test smtp-$m:[localhost]:${NH_PORT[$k]}" >>"$WORK/transport"
    done; done
    PF_MASTER_EXTRA="$PF_MASTER_EXTRA" pf_new client "$CPORT" \
        "transport_maps = texthash:$WORK/transport" "relay_domains = $domains" \
        "smtp_host_lookup = native" "smtp_tls_CAfile = $PKI/ca.pem" \
        "smtp_tls_verify_cert_match = hostname"
    starts+=(client "$CPORT")
    pf_start_all "${starts[@]}"
else
    pf_start_all "${starts[@]}"
    R_ROUTES="" R_DOMAIN_MODES=""
    for k in $KINDS; do for m in $MODES; do
        R_ROUTES+=" $k-$m.test=127.0.0.1:${NH_PORT[$k]}"
        R_DOMAIN_MODES+=" $k-$m.test=$m"
    done; done
    R_TRUST="$PKI/ca.pem" R_ACCEPTED="dest.test"
    relay_new relay "$CPORT"
    relay_start relay "$CPORT"
fi

# Submit one message per (next hop, mode).
for k in $KINDS; do for m in $MODES; do
    swaks_run "$WORK/submit-$k-$m.out" --server 127.0.0.1 --port "$CPORT" \
        --from "sender@client.test" --to "u@$k-$m.test" --header "Subject: $k $m" ||
        fail "submission to the $CLIENT for u@$k-$m.test refused: $(tail -n 3 "$WORK/submit-$k-$m.out")"
done; done
ok "the $CLIENT accepted $(($(wc -w <<<"$KINDS") * $(wc -w <<<"$MODES"))) messages"

# client_deferred RCPT: print the client's deferral record for RCPT (empty if none).
client_deferred() {
    if [ "$CLIENT" = postfix ]; then
        local st
        st=$(pf_status client "$1")
        case "$st" in deferred* | bounced*) echo "$st" ;; esac
    else
        local st
        st=$(relay_status relay "$1")
        case "$st" in deferred* | bounced*) echo "$st" ;; esac
    fi
}

# Wait until each message reached its expected state, or 60 s.
settled() {
    local k m e
    for k in $KINDS; do for m in $MODES; do
        e=$(expected "$k" "$m")
        case "$e" in
        plain | tls) [ "$(tls_of "nh-$k" "u@$k-$m.test")" != absent ] || return 1 ;;
        defer:* | refused) [ -n "$(client_deferred "u@$k-$m.test")" ] || return 1 ;;
        esac
    done; done
}
for ((i = 0; i < 120; i++)); do settled && break; sleep 0.5; done
sleep 2 # let a wrong delivery (if any) show up too

failures=0
printf '  %-16s %-14s %-12s %-12s\n' "next hop" mode expected observed >&2
for k in $KINDS; do for m in $MODES; do
    rcpt="u@$k-$m.test"
    e=$(expected "$k" "$m")
    got=$(tls_of "nh-$k" "$rcpt")
    deferral=$(client_deferred "$rcpt")
    observed=$got
    row=ok
    case "$e" in
    plain | tls)
        [ "$got" = "$e" ] || row=MISMATCH
        ;;
    defer:*)
        code=${e#defer:}
        if [ "$got" != absent ]; then
            row=MISMATCH
        elif [ -z "$deferral" ]; then
            observed="not-deferred"
            row=MISMATCH
        elif [ "$CLIENT" = relay ] && ! grep -q "$code" <<<"$deferral"; then
            observed="deferred, not $code: $deferral"
            row=MISMATCH
        else
            observed="deferred"
            [ "$CLIENT" = relay ] && observed="defer:$code"
        fi
        ;;
    refused)
        if [ "$got" != absent ] || [ -z "$deferral" ]; then row=MISMATCH; else observed=refused; fi
        ;;
    esac
    [ "$row" = ok ] || failures=$((failures + 1))
    printf '  %-16s %-14s %-12s %-12s %s\n' "$k" "$m" "$e" "$observed" "$row" >&2
done; done
[ "$failures" -eq 0 ] || fail "$failures outcome(s) differ from DESIGN.md section 3"
ok "every (next hop, mode) outcome matches DESIGN.md section 3"

# A next hop with STARTTLS required saw the plaintext MAIL refused, never accepted.
# (Postfix counts a refused MAIL as mail=0/1 in its disconnect line.)
grep -Eq "disconnect from .* mail=0/1 " "$(pf_log nh-encrypt)" ||
    fail "nh-encrypt never refused a plaintext MAIL"
if [ "$CLIENT" = relay ]; then
    grep -q "530 5.7.0" <<<"$(relay_status relay u@encrypt-none.test)" ||
        fail "the relay did not record the 530 5.7.0 of nh-encrypt for u@encrypt-none.test"
    # Deferred messages are still queued, with the policy failure recorded.
    relay_queue_snapshot relay "$WORK/queue.json"
    for k in $KINDS; do for m in $MODES; do
        case "$(expected "$k" "$m")" in defer:*)
            q=$(RELAY_QUEUE_CACHE="$WORK/queue.json" relay_queue relay "u@$k-$m.test")
            grep -q '"state": "deferred"' <<<"$q" || fail "u@$k-$m.test is not queued as deferred: $q"
            ;;
        esac
    done; done
    ok "relay queue list --json: every deferred message still queued, state deferred"
fi
ok "nh-encrypt refused the plaintext MAIL of mode none (530 5.7.0)"
# No next hop that requires TLS of the client ever saw MAIL in plaintext from it.
for k in $KINDS; do for m in $MODES; do
    case "$(expected "$k" "$m")" in defer:*)
        if grep -E "to=<u@$k-$m.test>" "$(pf_log "nh-$k")" >/dev/null; then
            fail "u@$k-$m.test reached nh-$k although policy required to defer"
        fi
        ;;
    esac
done; done
ok "no deferred message reached its next hop"
case_end
