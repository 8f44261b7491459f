# shellcheck shell=bash
# Shared helpers for the interoperability cases. Sourced by every case script.
#
# A case runs in its own work directory ($WORK); everything it starts is
# stopped by the EXIT trap installed by `case_begin`. Nothing here touches the
# system Postfix instance (/etc/postfix is only read, as Postfix's
# meta_directory) or any port outside 127.0.0.1:20000-20999.

set -euo pipefail

INTEROP_DIR="${INTEROP_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
# Exit status a case uses to say "not applicable here" (reported as SKIP).
SKIP=77

# ---------------------------------------------------------------- reporting

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

skip() {
    printf 'SKIP: %s\n' "$*" >&2
    exit "$SKIP"
}

# Number of assertions that held, printed at the end of a case.
CHECKS=0
ok() {
    CHECKS=$((CHECKS + 1))
    printf '  ok  [%s] %s\n' "$(date +%T)" "$*" >&2
}

# ----------------------------------------------------------- case lifecycle

CLEANUPS=()
on_exit() { CLEANUPS+=("$*"); }

run_cleanups() {
    local status=$? i
    for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do
        eval "${CLEANUPS[$i]}" >/dev/null 2>&1 || true
    done
    if [ "$status" -ne 0 ] && [ "$status" -ne "$SKIP" ] && [ -n "${WORK:-}" ]; then
        dump_logs_on_failure || true
    fi
    if { [ "$status" -eq 0 ] || [ "$status" -eq "$SKIP" ]; } && [ -n "${WORK:-}" ] && [ -z "${INTEROP_KEEP:-}" ]; then
        rm -rf "$WORK"
    fi
    exit "$status"
}

# Print the tail of every log of the case, to diagnose a failure from CI output.
dump_logs_on_failure() {
    local f
    for f in "$WORK"/*/maillog "$WORK"/*/relay.log "$WORK"/*/log/mainlog; do
        [ -f "$f" ] || continue
        printf -- '--- %s (last 40 lines)\n' "${f#"$WORK"/}" >&2
        tail -n 40 "$f" >&2
    done
    printf -- '--- work directory kept: %s\n' "$WORK" >&2
}

case_begin() {
    CASE_NAME="$1"
    WORK="$(mktemp -d "${INTEROP_TMP:-/tmp}/postern-interop.${CASE_NAME}.XXXXXX")"
    chmod 755 "$WORK"
    trap run_cleanups EXIT
    trap 'exit 143' TERM INT
    log "case $CASE_NAME in $WORK"
}

case_end() {
    printf 'PASS: %s (%d checks)\n' "$CASE_NAME" "$CHECKS" >&2
    exit 0
}

# ------------------------------------------------------------------- tools

need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || {
            if [ "${CI:-}" = true ]; then fail "required tool missing: $t"; fi
            skip "tool missing: $t"
        }
    done
}

# ------------------------------------------------------------------- ports

port_is_free() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}

# Print a free port in 20000-20999 not handed out before in this case. (Called
# as $(free_port), a subshell: the ports handed out are kept in a file.)
free_port() {
    local p tries=0 used="$WORK/.ports"
    touch "$used"
    while :; do
        p=$((20000 + RANDOM % 1000))
        tries=$((tries + 1))
        [ "$tries" -lt 500 ] || fail "no free port in 20000-20999"
        grep -qx "$p" "$used" && continue
        if port_is_free "$p"; then
            echo "$p" >>"$used"
            echo "$p"
            return 0
        fi
    done
}

# Wait until something listens on 127.0.0.1:PORT.
wait_port() {
    local port=$1 secs=${2:-20} i
    for ((i = 0; i < secs * 10; i++)); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.5).close()" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# wait_for FILE REGEX [SECONDS]: wait until an extended regex matches a line of FILE.
wait_for() {
    local file=$1 re=$2 secs=${3:-20} i
    for ((i = 0; i < secs * 10; i++)); do
        if [ -f "$file" ] && grep -Eq -- "$re" "$file"; then return 0; fi
        sleep 0.1
    done
    return 1
}

# ---------------------------------------------------------------------- PKI

# make_pki DIR: a test CA and the certificates every case may use.
#   ca.pem/ca.key            the test CA (RSA 2048)
#   other-ca.pem             an unrelated CA (for refused client certificates)
#   nexthop.{pem,key}        CA-signed, SAN localhost, 127.0.0.1, nexthop.test and the
#                            destination domains of the verify cases that must succeed
#   wrongname.{pem,key}      CA-signed, SAN wrong.test only
#   selfsigned.{pem,key}     self-signed, SAN localhost, 127.0.0.1
#   relay.{pem,key}          CA-signed RSA, SAN relay.test, localhost, 127.0.0.1
#   relay-ec.{pem,key}       CA-signed ECDSA P-256, same names
#   client.{pem,key}         CA-signed client certificate (clientAuth)
#   client-other.{pem,key}   client certificate from other-ca (untrusted)
# Each *.pem holds the leaf only; *-chain.pem is leaf + CA; *-both.pem is key + chain.
make_pki() {
    local d=$1
    mkdir -p "$d"
    (
        cd "$d"
        exec 2>pki.log
        ca() { # name subject
            openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.pem" -days 365 \
                -subj "/CN=$2" -addext basicConstraints=critical,CA:TRUE \
                -addext keyUsage=critical,keyCertSign,cRLSign
        }
        leaf() { # name ca keyalg san eku
            local name=$1 caname=$2 alg=$3 san=$4 eku=$5
            if [ "$alg" = ec ]; then
                openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$name.key" \
                    -out "$name.csr" -subj "/CN=${san%%,*}" >/dev/null
            else
                openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" \
                    -subj "/CN=${san%%,*}" >/dev/null
            fi
            printf 'subjectAltName=%s\nextendedKeyUsage=%s\nbasicConstraints=CA:FALSE\n' \
                "$(echo "$san" | sed -E 's/(^|,)([0-9.]+)(,|$)/\1IP:\2\3/g; s/(^|,)([a-z][^,]*)/\1DNS:\2/g')" \
                "$eku" >"$name.ext"
            openssl x509 -req -in "$name.csr" -CA "$caname.pem" -CAkey "$caname.key" -CAcreateserial \
                -days 365 -sha256 -extfile "$name.ext" -out "$name.pem"
            cat "$name.pem" "$caname.pem" >"$name-chain.pem"
            cat "$name.key" "$name-chain.pem" >"$name-both.pem"
        }
        ca ca "Postern Interop Test CA"
        ca other-ca "Unrelated Test CA"
        # With a static route to an IP address the relay's verify mode matches the
        # destination domain, so the next hop's certificate names the domains of the
        # cases that expect verify to succeed.
        leaf nexthop ca rsa "localhost,127.0.0.1,nexthop.test,may-ca-verify.test,encrypt-verify.test,exim-ca-verify.test" serverAuth
        leaf wrongname ca rsa "wrong.test" serverAuth
        leaf relay ca rsa "relay.test,localhost,127.0.0.1" serverAuth
        leaf relay-ec ca ec "relay.test,localhost,127.0.0.1" serverAuth
        leaf client ca rsa "client.test" clientAuth
        leaf client-other other-ca rsa "client.test" clientAuth
        openssl req -x509 -newkey rsa:2048 -nodes -keyout selfsigned.key -out selfsigned.pem -days 365 \
            -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1"
        cp selfsigned.pem selfsigned-chain.pem
        chmod 644 ./*.pem ./*.key
    ) || fail "could not create the test PKI (see $d/pki.log)"
}

# PKI: run.sh makes one for the whole run and exports its directory; a case
# run alone makes its own.
ensure_pki() {
    if [ -z "${PKI:-}" ] || [ ! -f "$PKI/ca.pem" ]; then
        PKI="$WORK/pki"
        make_pki "$PKI"
    fi
}

# ------------------------------------------------------------------ Postfix

POSTFIX_UID="$(id -u postfix 2>/dev/null || echo 0)"
POSTFIX_GID="$(id -g postfix 2>/dev/null || echo 0)"

# pf_new NAME PORT [main.cf lines...]: a private Postfix instance under $WORK/NAME
# with smtpd on 127.0.0.1:PORT. Mail for dest.test (and any domain listed in
# PF_DOMAINS) is delivered into the Maildir $WORK/NAME/mail/maildir/new.
# Extra main.cf lines given as arguments override the defaults (last wins).
pf_new() {
    local name=$1 port=$2 d
    shift 2
    d="$WORK/$name"
    mkdir -p "$d/etc" "$d/queue" "$d/data" "$d/mail"
    chown "$POSTFIX_UID:$POSTFIX_GID" "$d/data" "$d/mail"
    cat >"$d/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
mail_owner = postfix
setgid_group = postdrop
myhostname = $name.test
mydomain = test
myorigin = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks reject_unauth_destination
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtputf8_enable = no
virtual_mailbox_domains = dest.test ${PF_DOMAINS:-}
virtual_mailbox_base = $d/mail
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:$POSTFIX_UID
virtual_gid_maps = static:$POSTFIX_GID
maillog_file = $d/maillog
maillog_file_prefixes = $d
smtpd_tls_loglevel = 1
smtp_tls_loglevel = 1
smtpd_tls_received_header = yes
smtpd_tls_security_level = none
smtp_tls_security_level = none
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
smtp_connect_timeout = 5s
smtp_tls_session_cache_database =
smtpd_tls_session_cache_database =
EOF
    local line key
    for line in "$@"; do
        key="${line%%=*}"
        key="${key// /}"
        sed -i "/^$key *=/d" "$d/etc/main.cf"
        printf '%s\n' "$line" >>"$d/etc/main.cf"
    done
    cat >"$d/etc/master.cf" <<EOF
127.0.0.1:$port inet n - n - - smtpd
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -    - proxymap
proxywrite unix - - n -    1 proxymap
smtp      unix  - - n -    - smtp
relay     unix  - - n -    - smtp
showq     unix  n - n -    - showq
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
local     unix  - n n -    - local
virtual   unix  - n n -    - virtual
lmtp      unix  - - n -    - lmtp
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
    if [ -n "${PF_MASTER_EXTRA:-}" ]; then printf '%s\n' "$PF_MASTER_EXTRA" >>"$d/etc/master.cf"; fi
}

# nexthop_new KIND NAME PORT: a Postfix next hop configured per case:
#   notls           no STARTTLS (smtpd_tls_security_level = none)
#   may-selfsigned  STARTTLS offered, self-signed certificate
#   may-ca          STARTTLS offered, certificate from the test CA (names localhost, 127.0.0.1)
#   may-wrongname   STARTTLS offered, certificate from the test CA for wrong.test
#   encrypt         TLS required before MAIL (smtpd_tls_security_level = encrypt), test CA certificate
nexthop_new() {
    local kind=$1 name=$2 port=$3 cert level=may
    case "$kind" in
    notls) pf_new "$name" "$port" "smtpd_tls_security_level = none"; return ;;
    may-selfsigned) cert=selfsigned ;;
    may-ca) cert=nexthop ;;
    may-wrongname) cert=wrongname ;;
    encrypt) cert=nexthop level=encrypt ;;
    *) fail "unknown next hop kind $kind" ;;
    esac
    pf_new "$name" "$port" "smtpd_tls_security_level = $level" \
        "smtpd_tls_cert_file = $PKI/$cert-chain.pem" "smtpd_tls_key_file = $PKI/$cert.key"
}

# pf_start_all NAME PORT [NAME PORT...]: start several instances at once
# (a Postfix start takes about two seconds, mostly its integrity checks).
pf_start_all() {
    local args=("$@") i pids=() name d
    for ((i = 0; i < ${#args[@]}; i += 2)); do
        name=${args[$i]}
        d="$WORK/$name"
        on_exit "postfix -c '$d/etc' stop"
        postfix -c "$d/etc" start >"$d/start.out" 2>&1 &
        pids+=($!)
    done
    for ((i = 0; i < ${#pids[@]}; i++)); do
        wait "${pids[$i]}" || {
            name=${args[$((2 * i))]}
            cat "$WORK/$name/start.out" >&2
            tail -n 5 "$WORK/$name/maillog" >&2 2>/dev/null || true
            fail "postfix $name did not start"
        }
    done
    for ((i = 0; i < ${#args[@]}; i += 2)); do
        wait_port "${args[$((i + 1))]}" 20 || fail "postfix ${args[$i]} is not listening on 127.0.0.1:${args[$((i + 1))]}"
    done
}

# pf_maildir NAME: the directory where delivered messages appear.
pf_maildir() { echo "$WORK/$1/mail/maildir/new"; }

# pf_count NAME: number of messages delivered so far.
pf_count() {
    local m
    m="$(pf_maildir "$1")"
    if [ -d "$m" ]; then find "$m" -type f | wc -l; else echo 0; fi
}

# pf_wait_count NAME N [SECONDS]: wait until N messages were delivered.
pf_wait_count() {
    local name=$1 n=$2 secs=${3:-30} i
    for ((i = 0; i < secs * 10; i++)); do
        [ "$(pf_count "$name")" -ge "$n" ] && return 0
        sleep 0.1
    done
    return 1
}

# pf_grep NAME REGEX: whether the delivered messages contain REGEX.
pf_grep() {
    local m
    m="$(pf_maildir "$1")"
    [ -d "$m" ] && grep -rEq -- "$2" "$m"
}

pf_log() { echo "$WORK/$1/maillog"; }

# pf_status NAME RCPT: the last delivery status Postfix logged for RCPT
# ("sent", "deferred", "bounced") followed by the reason; empty when none yet.
pf_status() {
    grep -E "\]: [0-9A-F]+: to=<$2>,.* status=" "$(pf_log "$1")" 2>/dev/null | tail -n 1 |
        sed -E 's/.* status=([a-z]+) (.*)/\1 \2/' || true
}

# tls_of NAME RCPT: "tls", "plain" or "absent": how Postfix instance NAME received RCPT's mail,
# according to its own log.
tls_of() { python3 "$INTEROP_DIR/smtp_raw.py" tls-of "$(pf_log "$1")" "$2"; }

# ------------------------------------------------------------------ swaks

# swaks_run OUTFILE swaks-arguments...: run swaks, keep its transcript, return its status.
swaks_run() {
    local out=$1
    shift
    local rc=0
    swaks --timeout 15 "$@" >"$out" 2>&1 || rc=$?
    return "$rc"
}

# ------------------------------------------------------------------ relay

# Where run.sh put the relay binary (empty when it could not be built).
RELAY_BIN="${RELAY_BIN:-}"

need_relay() {
    if [ -z "$RELAY_BIN" ] || [ ! -x "$RELAY_BIN" ]; then
        if [ "${CI:-}" = true ]; then fail "postern-relay binary not available"; fi
        skip "postern-relay binary not available (build failed or not built)"
    fi
}

# shellcheck source=relay.sh
. "$INTEROP_DIR/relay.sh"

# shellcheck source=exim.sh
. "$INTEROP_DIR/exim.sh"
