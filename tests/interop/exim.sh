# shellcheck shell=bash
# Exim as a peer. Sourced by lib.sh.
#
# exim4-daemon-light conflicts with postfix as a Debian package, so Exim is
# unpacked (apt-get download + dpkg -x) into a private directory and run from
# there with a private configuration. Its binary has the user Debian-exim
# compiled in; that user is supplied inside a private mount namespace
# (unshare -m) whose /etc/passwd and /etc/group are bind-mounted copies with
# the extra entry, so the host's files are never changed.

# The unpacked Exim must be readable by Debian-exim (it re-executes itself after
# dropping privileges), so it lives under /tmp rather than a private home.
EXIM_CACHE="${INTEROP_CACHE:-${INTEROP_TMP:-/tmp}/postern-interop-cache}/exim"
EXIM_UID=65534 # the Debian-exim user inside the namespace (nobody's uid)
EXIM_PKGS="exim4-daemon-light exim4-base exim4-config libidn12"

# exim_fetch: make $EXIM_CACHE/root hold an unpacked Exim.
exim_fetch() {
    need dpkg unshare apt-get
    if ! unshare -m true 2>/dev/null; then
        local why="Exim needs a private mount namespace (unshare -m): run as root with CAP_SYS_ADMIN"
        if [ "${CI:-}" = true ]; then fail "$why"; fi
        skip "$why"
    fi
    local bin="$EXIM_CACHE/root/usr/sbin/exim4" f
    if [ ! -x "$bin" ]; then
        mkdir -p "$EXIM_CACHE/debs"
        chmod 755 "$EXIM_CACHE/.." "$EXIM_CACHE"
        # shellcheck disable=SC2086
        if ! (cd "$EXIM_CACHE/debs" && apt-get download $EXIM_PKGS) >"$EXIM_CACHE/download.log" 2>&1; then
            apt-get update -q >/dev/null 2>&1 || true
            # shellcheck disable=SC2086
            (cd "$EXIM_CACHE/debs" && apt-get download $EXIM_PKGS) >"$EXIM_CACHE/download.log" 2>&1 || {
                cat "$EXIM_CACHE/download.log" >&2
                if [ "${CI:-}" = true ]; then fail "cannot download the Exim packages"; fi
                skip "cannot download the Exim packages"
            }
        fi
        for f in "$EXIM_CACHE"/debs/*.deb; do dpkg -x "$f" "$EXIM_CACHE/root"; done
    fi
    [ -x "$bin" ] || fail "no exim4 binary in $EXIM_CACHE/root"
}

exim_bin() { echo "$EXIM_CACHE/root/usr/sbin/exim4"; }

# exim_ns CMD...: run CMD with Debian-exim known, in a private mount namespace.
# It execs: call it in a subshell (command substitution or background job),
# whose process then becomes CMD itself.
exim_ns() {
    local ns="$WORK/exim-ns"
    if [ ! -f "$ns/passwd" ]; then
        mkdir -p "$ns"
        cp /etc/passwd "$ns/passwd"
        cp /etc/group "$ns/group"
        echo "Debian-exim:x:$EXIM_UID:$EXIM_UID::/nonexistent:/usr/sbin/nologin" >>"$ns/passwd"
        echo "Debian-exim:x:$EXIM_UID:" >>"$ns/group"
        # Exim cleans its environment when it re-executes itself, so
        # LD_LIBRARY_PATH cannot carry the private libidn: a loader cache that
        # also lists the private library directory does.
        { echo "$EXIM_CACHE/root/usr/lib/$(uname -m)-linux-gnu"; cat /etc/ld.so.conf; } >"$ns/ld.so.conf"
        (cd /etc && ldconfig -X -C "$ns/ld.so.cache" -f "$ns/ld.so.conf") ||
            fail "cannot build a loader cache for Exim"
    fi
    # shellcheck disable=SC2016
    exec unshare -m sh -c 'mount --bind "$0/passwd" /etc/passwd && mount --bind "$0/group" /etc/group &&
        mount --bind "$0/ld.so.cache" /etc/ld.so.cache && exec "$@"' "$ns" "$@"
}

exim_version() { (exim_ns "$(exim_bin)" -C /dev/null -bV) 2>/dev/null | sed -n 's/^Exim version \([^ ]*\).*/\1/p'; }

# exim_new NAME PORT CERT: an Exim next hop on 127.0.0.1:PORT offering STARTTLS
# with $PKI/CERT-chain.pem, accepting dest.test and the domains in
# $EXIM_DOMAINS, delivering into the Maildir $WORK/NAME/mail.
exim_new() {
    local name=$1 port=$2 cert=$3 d="$WORK/$1" domains
    mkdir -p "$d/spool" "$d/log" "$d/mail"
    cp "$PKI/$cert-chain.pem" "$PKI/$cert.key" "$d/"
    chown -R "$EXIM_UID:$EXIM_UID" "$d"
    domains=$(echo dest.test ${EXIM_DOMAINS:-} | sed 's/ \+/ : /g')
    cat >"$d/exim.conf" <<EOF
primary_hostname = $name.test
spool_directory = $d/spool
log_file_path = $d/log/%slog
pid_file_path = $d/exim.pid
daemon_smtp_ports = $port
local_interfaces = 127.0.0.1
# Exim re-executes itself for deliveries and queue runs: from the private copy.
exim_path = $(exim_bin)
keep_environment =
domainlist local_domains = $domains
acl_smtp_rcpt = acl_check_rcpt
tls_advertise_hosts = *
tls_certificate = $d/$cert-chain.pem
tls_privatekey = $d/$cert.key
log_selector = +tls_cipher +tls_peerdn +received_recipients +smtp_connection
host_lookup =
rfc1413_hosts =

begin acl
acl_check_rcpt:
  accept domains = +local_domains
  deny message = relay not permitted

begin routers
deliver:
  driver = accept
  domains = +local_domains
  transport = maildir

begin transports
maildir:
  driver = appendfile
  directory = $d/mail
  maildir_format
  create_directory
  user = Debian-exim
  envelope_to_add

begin retry
*  *  F,1h,1m
EOF
}

exim_start() {
    local name=$1 port=$2 d="$WORK/$1" pid
    exim_ns "$(exim_bin)" -C "$d/exim.conf" -bdf -q2s >"$d/exim.out" 2>&1 &
    pid=$!
    on_exit "pkill -TERM -P $pid; kill $pid; sleep 0.2; kill -9 $pid"
    wait_port "$port" 20 || {
        cat "$d/exim.out" "$d"/log/* >&2 2>/dev/null
        fail "exim $name is not listening on 127.0.0.1:$port"
    }
}

exim_log() { echo "$WORK/$1/log/mainlog"; }

# exim_tls_of NAME RCPT: "tls", "plain" or "absent", from Exim's reception log line
# (an X=<cipher> field means the message came over TLS).
exim_tls_of() {
    local line
    line=$(grep -F " <= " "$(exim_log "$1")" 2>/dev/null | grep -F "for $2" | tail -n 1 || true)
    if [ -z "$line" ]; then
        echo absent
    elif grep -q ' X=TLS' <<<"$line"; then
        echo tls
    else
        echo plain
    fi
}
