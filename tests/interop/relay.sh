# shellcheck shell=bash
# Running postern-relay for a case: configuration, start, queue inspection.
# Sourced by lib.sh. The configuration keys are those of docs/configuration.md
# and docs/policy.md.

# Settings read by relay_new (set them before calling it; each has a default):
#   R_SERVER_TLS      inbound TLS mode: none | offer | require             (offer)
#   R_CLIENT_CERTS    client-certificate request: none | ask | require     (none)
#   R_CLIENT_CA       PEM file of client-certificate roots                 (none)
#   R_OUTBOUND        default outbound mode                                (opportunistic)
#   R_TRUST           PEM file of trust anchors for verify                 (none: system roots)
#   R_CERTS           "default" (the generated Default Cert) or "ca" (RSA + ECDSA from the test CA)
#   R_ACCEPTED        accepted domains, space separated                    (dest.test)
#   R_ROUTES          "domain=host:port" words, space separated
#   R_DOMAIN_MODES    "domain=mode" words: per-domain outbound overrides
R_SERVER_TLS=offer
R_CLIENT_CERTS=none
R_CLIENT_CA=
R_OUTBOUND=opportunistic
R_TRUST=
R_CERTS=default
R_ACCEPTED="dest.test"
R_ROUTES=""
R_DOMAIN_MODES=""

toml_list() {
    local first=1 w
    printf '['
    for w in "$@"; do
        [ $first = 1 ] || printf ', '
        printf '"%s"' "$w"
        first=0
    done
    printf ']'
}

# relay_tls_toml: the [tls] table for the current R_* settings.
relay_tls_toml() {
    local w
    printf '\n[tls.inbound]\ntls = "%s"\nclient_certificates = "%s"\n' "$R_SERVER_TLS" "$R_CLIENT_CERTS"
    if [ -n "$R_CLIENT_CA" ]; then printf 'client_ca = "%s"\n' "$R_CLIENT_CA"; fi
    if [ "$R_CERTS" = ca ]; then
        printf '\n[[tls.certificates]]\ncertificate = "%s"\nkey = "%s"\n' "$PKI/relay-chain.pem" "$PKI/relay.key"
        printf '\n[[tls.certificates]]\ncertificate = "%s"\nkey = "%s"\n' "$PKI/relay-ec-chain.pem" "$PKI/relay-ec.key"
    fi
    printf '\n[tls.outbound]\ntls = "%s"\n' "$R_OUTBOUND"
    if [ -n "$R_TRUST" ]; then printf 'trust_anchors = "%s"\n' "$R_TRUST"; fi
    for w in $R_DOMAIN_MODES; do
        printf '\n[tls.outbound.domains."%s"]\ntls = "%s"\n' "${w%%=*}" "${w#*=}"
    done
}

# relay_new NAME PORT: write $WORK/NAME/relay.toml for the current R_* settings
# and validate it with `check-config`.
relay_new() {
    local name=$1 port=$2 d="$WORK/$1" w
    mkdir -p "$d/state"
    {
        printf 'hostname = "relay.test"\n'
        printf 'listen = ["127.0.0.1:%s"]\n' "$port"
        printf 'state_dir = "%s"\n' "$d/state"
        printf 'accepted_domains = %s\n' "$(toml_list $R_ACCEPTED)"
        printf 'authorised_networks = ["127.0.0.0/8"]\n'
        printf 'log = "info"\n'
        printf '\n[queue]\nmin_backoff = "2s"\nmax_backoff = "4s"\n'
        printf '\n[timeouts]\nconnect = "5s"\ngreeting = "10s"\nmail = "10s"\ntls_handshake = "10s"\n'
        printf '\n[routes]\n'
        for w in $R_ROUTES; do printf '"%s" = "%s"\n' "${w%%=*}" "${w#*=}"; done
        relay_tls_toml
    } >"$d/relay.toml"
    "$RELAY_BIN" --config "$d/relay.toml" check-config >"$d/check-config.out" 2>&1 || {
        cat "$d/relay.toml" "$d/check-config.out" >&2
        fail "postern-relay rejected the generated configuration for $name"
    }
}

# relay_start NAME PORT: run the relay configured by relay_new; stopped on exit.
relay_start() {
    local name=$1 port=$2 d="$WORK/$1" pid
    "$RELAY_BIN" --config "$d/relay.toml" >"$d/relay.log" 2>&1 &
    pid=$!
    echo "$pid" >"$d/relay.pid"
    on_exit "kill $pid; sleep 0.2; kill -9 $pid"
    if ! wait_port "$port" 30; then
        tail -n 20 "$d/relay.log" >&2
        fail "postern-relay $name is not listening on 127.0.0.1:$port"
    fi
}

relay_log() { echo "$WORK/$1/relay.log"; }

# relay_queue NAME RCPT: the JSON of every queued message that has RCPT, one
# per line (empty when none is queued for RCPT).
relay_queue() {
    "$RELAY_BIN" --config "$WORK/$1/relay.toml" queue list --json 2>/dev/null | python3 -c '
import json, sys
rcpt = sys.argv[1].lower()
text = sys.stdin.read().strip()
if not text:
    sys.exit(0)
try:
    data = json.loads(text)
except ValueError:
    data = [json.loads(l) for l in text.splitlines() if l.strip()]
if isinstance(data, dict):
    data = data.get("messages", [data])
for m in data:
    s = json.dumps(m)
    if rcpt in s.lower():
        print(s)
' "$2"
}
