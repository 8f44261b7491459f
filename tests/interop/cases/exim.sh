#!/usr/bin/env bash
# Exim (exim4-daemon-light, GnuTLS) as a next hop, in opportunistic and verify modes.
#
#   exim.sh relay     postern-relay delivers to Exim
#   exim.sh postfix   control: a Postfix smtp client delivers to the same Exims
#
# Two Exims: one with a certificate from the test CA (names localhost,
# 127.0.0.1), one with a self-signed certificate. Expected (DESIGN.md
# section 3): opportunistic delivers over TLS to both; verify delivers to the
# CA one and defers (4.7.5) at the self-signed one. Exim's reception log line
# (X=<cipher>) confirms TLS.
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
CLIENT=${1:?usage: exim.sh relay|postfix}
case_begin "exim-$CLIENT"
need postfix swaks
[ "$CLIENT" = relay ] && need_relay
ensure_pki
exim_fetch
log "Exim $(exim_version)"

KINDS="exim-ca exim-selfsigned"
if [ "$CLIENT" = relay ]; then MODES="opportunistic verify"; else MODES="may verify"; fi
expected() {
    case "$1:$2" in
    exim-selfsigned:verify) echo "defer:4.7.5" ;;
    *) echo tls ;;
    esac
}

domains=""
for k in $KINDS; do for m in $MODES; do domains="$domains $k-$m.test"; done; done
declare -A PORT
PORT[exim-ca]=$(free_port)
PORT[exim-selfsigned]=$(free_port)
EXIM_DOMAINS="$domains" exim_new exim-ca "${PORT[exim-ca]}" nexthop
EXIM_DOMAINS="$domains" exim_new exim-selfsigned "${PORT[exim-selfsigned]}" selfsigned
exim_start exim-ca "${PORT[exim-ca]}"
exim_start exim-selfsigned "${PORT[exim-selfsigned]}"
ok "two Exims listening"

CPORT=$(free_port)
if [ "$CLIENT" = postfix ]; then
    PF_MASTER_EXTRA=""
    for m in $MODES; do PF_MASTER_EXTRA+="smtp-$m unix - - n - - smtp -o smtp_tls_security_level=$m"$'\n'; done
    : >"$WORK/transport"
    for k in $KINDS; do for m in $MODES; do
        echo "$k-$m.test smtp-$m:[localhost]:${PORT[$k]}" >>"$WORK/transport"
    done; done
    PF_MASTER_EXTRA="$PF_MASTER_EXTRA" pf_new client "$CPORT" \
        "transport_maps = texthash:$WORK/transport" "relay_domains = $domains" \
        "smtp_host_lookup = native" "smtp_tls_CAfile = $PKI/ca.pem"
    pf_start_all client "$CPORT"
else
    R_ROUTES="" R_DOMAIN_MODES=""
    for k in $KINDS; do for m in $MODES; do
        R_ROUTES+=" $k-$m.test=127.0.0.1:${PORT[$k]}"
        R_DOMAIN_MODES+=" $k-$m.test=$m"
    done; done
    R_TRUST="$PKI/ca.pem"
    relay_new relay "$CPORT"
    relay_start relay "$CPORT"
fi

for k in $KINDS; do for m in $MODES; do
    swaks_run "$WORK/submit-$k-$m.out" --server 127.0.0.1 --port "$CPORT" \
        --from sender@client.test --to "u@$k-$m.test" ||
        fail "the $CLIENT refused u@$k-$m.test"
done; done

client_deferred() {
    if [ "$CLIENT" = postfix ]; then
        local st
        st=$(pf_status client "$1")
        case "$st" in deferred*) echo "$st" ;; esac
    else
        local st
        st=$(relay_status relay "$1")
        case "$st" in deferred* | bounced*) echo "$st" ;; esac
    fi
}
settled() {
    local k m
    for k in $KINDS; do for m in $MODES; do
        case "$(expected "$k" "$m")" in
        tls) [ "$(exim_tls_of "$k" "u@$k-$m.test")" != absent ] || return 1 ;;
        *) [ -n "$(client_deferred "u@$k-$m.test")" ] || return 1 ;;
        esac
    done; done
}
for ((i = 0; i < 120; i++)); do settled && break; sleep 0.5; done
sleep 1

failures=0
for k in $KINDS; do for m in $MODES; do
    rcpt="u@$k-$m.test"
    e=$(expected "$k" "$m")
    got=$(exim_tls_of "$k" "$rcpt")
    row=ok observed=$got
    case "$e" in
    tls) [ "$got" = tls ] || row=MISMATCH ;;
    defer:*)
        d=$(client_deferred "$rcpt")
        if [ "$got" != absent ] || [ -z "$d" ]; then
            row=MISMATCH
        elif [ "$CLIENT" = relay ] && ! grep -q "${e#defer:}" <<<"$d"; then
            row=MISMATCH observed="deferred without ${e#defer:}: $d"
        else
            observed=$e
        fi
        ;;
    esac
    [ "$row" = ok ] || failures=$((failures + 1))
    printf '  %-16s %-14s %-12s %-12s %s\n' "$k" "$m" "$e" "$observed" "$row" >&2
done; done
[ "$failures" -eq 0 ] || fail "$failures outcome(s) differ from DESIGN.md section 3"
# Exim delivered what it received into its Maildir.
for k in $KINDS; do for m in $MODES; do
    [ "$(expected "$k" "$m")" = tls ] || continue
    for ((i = 0; i < 100; i++)); do
        grep -lq "^Envelope-to: u@$k-$m.test" "$WORK/$k/mail/new"/* 2>/dev/null && break
        sleep 0.1
    done
    grep -lq "^Envelope-to: u@$k-$m.test" "$WORK/$k/mail/new"/* 2>/dev/null ||
        fail "Exim $k received but did not deliver u@$k-$m.test into its Maildir"
done; done
ok "Exim delivered every received message into its Maildir"
ok "Exim next hops: every outcome matches DESIGN.md section 3 (TLS confirmed by Exim's X= field)"
case_end
