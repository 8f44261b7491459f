#!/usr/bin/env bash
# Interoperability and security tests of postern-relay against real peers:
# Postfix, Exim, swaks, openssl s_client and testssl.sh, all on 127.0.0.1.
#
#   tests/interop/run.sh [PATTERN...]
#
# Runs every case (or those whose name contains one of the PATTERNs), each
# under a time limit, prints a summary table and exits non-zero if any case
# failed. Installs missing tools with apt-get when it can. Under CI=true a
# missing tool or a skipped case is a failure.
#
# Environment:
#   CI=true            missing tools and skips are failures
#   CARGO_TARGET_DIR   where the relay is built (default: <repo>/target)
#   RELAY_BIN          use this relay binary instead of building one
#   INTEROP_KEEP=1     keep every case's work directory (logs, configs, mail)
#   INTEROP_TMP        where work directories go (default: /tmp)
#   INTEROP_BUDGET     seconds the whole run may take, build included (default 840):
#                      each case's limit is cut to what is left, and cases that
#                      no longer fit fail without running
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export INTEROP_DIR="$HERE"
START=$(date +%s)

# Case name, time limit in seconds, command (relative to tests/interop).
# control-* cases exercise only the peers: they prove that the peer
# configurations, the expectations and the log checks work, independently
# of the relay.
CASES=(
    "control-swaks-postfix        60  cases/control-swaks-postfix.sh"
    "control-openssl-postfix      60  cases/relay-openssl.sh postfix"
    "control-injection            30  cases/control-injection.sh"
    "control-postfix-matrix       90  cases/nexthop-matrix.sh postfix"
    "control-smuggling-postfix    60  cases/smuggling.sh postfix"
    "control-exim                 90  cases/exim.sh postfix"
    "relay-swaks                  60  cases/relay-swaks.sh"
    "relay-openssl                60  cases/relay-openssl.sh relay"
    "relay-postfix-matrix         90  cases/nexthop-matrix.sh relay"
    "relay-postfix-client         60  cases/relay-postfix-client.sh"
    "relay-smuggling              60  cases/smuggling.sh relay"
    "relay-smuggling-reject       60  cases/smuggling.sh relay-reject"
    "relay-exim                   90  cases/exim.sh relay"
    "relay-testssl               300  cases/relay-testssl.sh relay"
)
# Not in the default run (about 3 minutes): "control-testssl-postfix" runs
# testssl against Postfix to show its findings are read; select it by name.
EXTRA_CASES=(
    "control-testssl-postfix     420  cases/relay-testssl.sh postfix"
)

say() { printf '==> %s\n' "$*"; }

# ------------------------------------------------------------ tools
install_missing() {
    local missing=() pkgs=() t
    declare -A pkg_of=([postfix]=postfix [swaks]=swaks [openssl]=openssl [testssl]=testssl.sh
        [python3]=python3 [timeout]=coreutils [unshare]=util-linux [dpkg]=dpkg)
    for t in postfix swaks openssl testssl python3 timeout unshare; do
        command -v "$t" >/dev/null 2>&1 || {
            missing+=("$t")
            pkgs+=("${pkg_of[$t]}")
        }
    done
    # swaks only recommends the Perl TLS modules; without them it cannot STARTTLS.
    if ! perl -MNet::SSLeay -MIO::Socket::SSL -e1 >/dev/null 2>&1; then
        missing+=("perl-tls")
        pkgs+=(libnet-ssleay-perl libio-socket-ssl-perl)
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${pkgs[*]} (missing: ${missing[*]})"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        # Postfix without a system configuration: the tests run their own instances.
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections 2>/dev/null || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}" ||
            { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${pkgs[@]}"; }
    fi
    for t in "${missing[@]}"; do
        if [ "$t" = perl-tls ]; then
            perl -MNet::SSLeay -MIO::Socket::SSL -e1 >/dev/null 2>&1 && continue
        else
            command -v "$t" >/dev/null 2>&1 && continue
        fi
        if [ "${CI:-}" = true ]; then
            say "FAIL: required tool $t is missing and could not be installed"
            exit 1
        fi
        say "warning: $t is missing; the cases that need it will be skipped"
    done
}

# ------------------------------------------------------------ relay build
build_relay() {
    if [ -n "${RELAY_BIN:-}" ]; then
        [ -x "$RELAY_BIN" ] || { say "RELAY_BIN=$RELAY_BIN is not executable"; return 1; }
        return 0
    fi
    say "cargo build --release -p postern-relay"
    if (cd "$ROOT" && cargo build --release -p postern-relay); then
        RELAY_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/postern-relay"
        case "$RELAY_BIN" in /*) ;; *) RELAY_BIN="$ROOT/$RELAY_BIN" ;; esac
        return 0
    fi
    RELAY_BIN=""
    return 1
}

# ------------------------------------------------------------ main
selected() {
    local name=$1 p
    [ ${#PATTERNS[@]} -eq 0 ] && return 0
    for p in "${PATTERNS[@]}"; do [[ "$name" == *"$p"* ]] && return 0; done
    return 1
}
PATTERNS=("$@")
for c in "${EXTRA_CASES[@]}"; do
    read -r name _ _ <<<"$c"
    for p in "${PATTERNS[@]}"; do [ "$p" = "$name" ] && CASES+=("$c"); done
done

if [ "$(id -u)" != 0 ]; then
    say "FAIL: the interop suite needs root (Postfix's master process; Exim in a private mount namespace)"
    exit 1
fi
install_missing

RUN_DIR="$(mktemp -d "${INTEROP_TMP:-/tmp}/postern-interop-run.XXXXXX")"
chmod 755 "$RUN_DIR"
trap 'rm -rf "$RUN_DIR/pki"' EXIT
mkdir -p "$RUN_DIR/logs"

declare -a ROWS=()
failed=0

need_relay=0
for c in "${CASES[@]}"; do
    read -r name _ _ <<<"$c"
    if selected "$name" && [[ "$name" == relay-* ]]; then need_relay=1; fi
done
if [ "$need_relay" = 1 ]; then
    t0=$(date +%s)
    if build_relay; then
        ROWS+=("$(printf '%-28s %-5s %5ss' build-relay PASS $(($(date +%s) - t0)))")
    else
        ROWS+=("$(printf '%-28s %-5s %5ss  %s' build-relay FAIL $(($(date +%s) - t0)) "cargo build failed")")
        failed=$((failed + 1))
    fi
fi
export RELAY_BIN="${RELAY_BIN:-}"

# One PKI for the whole run (RSA key generation is the slow part).
(
    . "$HERE/lib.sh"
    make_pki "$RUN_DIR/pki"
) || {
    say "FAIL: could not create the test PKI"
    exit 1
}
export PKI="$RUN_DIR/pki"

for c in "${CASES[@]}"; do
    read -r name limit cmd <<<"$c"
    selected "$name" || continue
    left=$((${INTEROP_BUDGET:-840} - ($(date +%s) - START)))
    if [ "$left" -lt 15 ]; then
        ROWS+=("$(printf '%-28s %-5s %5ss  %s' "$name" FAIL 0 "not run: suite time budget exhausted")")
        failed=$((failed + 1))
        continue
    fi
    [ "$limit" -le "$left" ] || limit=$left
    say "case $name (limit ${limit}s)"
    t0=$(date +%s)
    # shellcheck disable=SC2086
    timeout -k 10 "$limit" bash "$HERE"/$cmd >"$RUN_DIR/logs/$name.log" 2>&1
    rc=$?
    dt=$(($(date +%s) - t0))
    detail=""
    case $rc in
    0) result=PASS ;;
    77)
        result=SKIP
        detail=$(grep -m1 '^SKIP:' "$RUN_DIR/logs/$name.log" | cut -c7-)
        if [ "${CI:-}" = true ]; then
            result=FAIL
            failed=$((failed + 1))
        fi
        ;;
    124 | 137)
        result=FAIL
        detail="timed out after ${limit}s"
        failed=$((failed + 1))
        ;;
    *)
        result=FAIL
        detail=$(grep -m1 '^FAIL:' "$RUN_DIR/logs/$name.log" | cut -c7-)
        failed=$((failed + 1))
        ;;
    esac
    grep -E '^  ok  |^  [a-z-]+ +[a-z]+ +(plain|tls|defer|refused)' "$RUN_DIR/logs/$name.log" || true
    if [ "$result" = FAIL ]; then
        say "$name failed; its log:"
        tail -n 60 "$RUN_DIR/logs/$name.log"
    fi
    say "$name: $result (${dt}s)"
    ROWS+=("$(printf '%-28s %-5s %5ss  %s' "$name" "$result" "$dt" "${detail:0:100}")")
done

printf '\n%-28s %-5s %6s  %s\n' CASE RESULT TIME DETAIL
printf '%s\n' "${ROWS[@]}"
printf '\ntotal %ss; logs in %s (removed when every case passed, unless INTEROP_KEEP is set)\n' \
    "$(($(date +%s) - START))" "$RUN_DIR/logs"
if [ "$failed" -gt 0 ]; then
    say "$failed failure(s)"
    exit 1
fi
[ -n "${INTEROP_KEEP:-}" ] || rm -rf "$RUN_DIR"
say "ok"
