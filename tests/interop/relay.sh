# shellcheck shell=bash
# Running postern-relay for a case: configuration, start, queue inspection.
# Sourced by lib.sh. The configuration keys are those of docs/configuration.md
# and docs/policy.md.

# Settings read by relay_new (set them before calling it; each has a default):
#   R_SERVER_TLS      inbound TLS mode: none | offer | require             (offer)
#   R_CLIENT_CERTS    client-certificate request: none | ask | require     (none)
#   R_CLIENT_CA       PEM file of client-certificate roots                 (none)
#   R_AGENTS          SHA-256 fingerprints of trusted agents (may relay)   (none)
#   R_NETWORKS        authorised networks, space separated                 (127.0.0.0/8)
#   R_OUTBOUND        default outbound mode                                (opportunistic)
#   R_TRUST           PEM file of CAs trusted for verify (ca_bundle)       (none: system roots)
#   R_CERTS           "default" (the generated Default Cert only) or "ca" (RSA + ECDSA
#                     certificates from the test CA imported with `cert import`)
#   R_RSA_BITS        RSA size of the generated Default Cert               (2048; the product
#                     default 4096 is kept where the certificate itself is under test)
#   R_ACCEPTED        accepted domains, space separated                    (dest.test)
#   R_ROUTES          "domain=host:port" words, space separated
#   R_DOMAIN_MODES    "domain=mode" words: per-domain outbound overrides
#   R_EXTRA           extra top-level TOML lines
R_SERVER_TLS=offer
R_CLIENT_CERTS=none
R_CLIENT_CA=
R_AGENTS=
R_NETWORKS="127.0.0.0/8"
R_OUTBOUND=opportunistic
R_TRUST=
R_CERTS=default
R_RSA_BITS=2048
R_ACCEPTED="dest.test"
R_ROUTES=""
R_DOMAIN_MODES=""
R_EXTRA=""

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

# relay_tls_toml: the [tls] table (postern-policy's format) for the current R_* settings.
relay_tls_toml() {
    local w
    printf '\n[tls.inbound]\ntls = "%s"\nclient_certificates = "%s"\n' "$R_SERVER_TLS" "$R_CLIENT_CERTS"
    for w in $R_AGENTS; do
        printf '\n[[tls.inbound.trusted_agents]]\nfingerprint = "sha256:%s"\n' "$w"
    done
    printf '\n[tls.outbound]\ntls = "%s"\n' "$R_OUTBOUND"
    for w in $R_DOMAIN_MODES; do
        printf '\n[tls.outbound.domains."%s"]\ntls = "%s"\n' "${w%%=*}" "${w#*=}"
    done
}

# relay_new NAME PORT: write $WORK/NAME/relay.toml for the current R_* settings,
# validate it with `check-config`, and import the test CA's certificates if asked.
relay_new() {
    local name=$1 port=$2 d="$WORK/$1" w
    mkdir -p "$d/state"
    {
        printf 'hostname = "relay.test"\n'
        printf 'listen = ["127.0.0.1:%s"]\n' "$port"
        printf 'state_dir = "%s"\n' "$d/state"
        # shellcheck disable=SC2086
        printf 'accepted_domains = %s\n' "$(toml_list $R_ACCEPTED)"
        # shellcheck disable=SC2086
        printf 'authorised_networks = %s\n' "$(toml_list $R_NETWORKS)"
        printf 'log = "info"\n'
        if [ -n "$R_EXTRA" ]; then printf '%s\n' "$R_EXTRA"; fi
        printf '\n[certificates]\ndefault_rsa_bits = %s\nreload_interval = "1s"\n' "$R_RSA_BITS"
        if [ -n "$R_TRUST" ]; then printf 'ca_bundle = "%s"\n' "$R_TRUST"; fi
        if [ -n "$R_CLIENT_CA" ]; then printf 'client_cert_roots = "%s"\n' "$R_CLIENT_CA"; fi
        printf '\n[queue]\nmin_backoff = "2s"\nmax_backoff = "4s"\nscan_interval = "1s"\n'
        printf '\n[timeouts]\nconnect = "5s"\ntls_handshake = "10s"\nclient_reply = "10s"\n'
        printf '\n[routes]\n'
        for w in $R_ROUTES; do printf '"%s" = "%s"\n' "${w%%=*}" "${w#*=}"; done
        relay_tls_toml
    } >"$d/relay.toml"
    "$RELAY_BIN" --config "$d/relay.toml" check-config >"$d/check-config.out" 2>&1 || {
        cat "$d/relay.toml" "$d/check-config.out" >&2
        fail "postern-relay rejected the generated configuration for $name"
    }
    if [ "$R_CERTS" = ca ]; then
        "$RELAY_BIN" --config "$d/relay.toml" cert import --name test-ca-rsa \
            --cert "$PKI/relay-chain.pem" --key "$PKI/relay.key" >>"$d/cert-import.out" 2>&1 &&
            "$RELAY_BIN" --config "$d/relay.toml" cert import --name test-ca-ecdsa \
                --cert "$PKI/relay-ec-chain.pem" --key "$PKI/relay-ec.key" >>"$d/cert-import.out" 2>&1 || {
            cat "$d/cert-import.out" >&2
            fail "postern-relay cert import failed"
        }
    fi
}

# relay_start NAME PORT: run the relay configured by relay_new; stopped on exit.
relay_start() {
    local name=$1 port=$2 d="$WORK/$1" pid
    NO_COLOR=1 "$RELAY_BIN" --config "$d/relay.toml" >"$d/relay.log" 2>&1 &
    pid=$!
    echo "$pid" >"$d/relay.pid"
    on_exit "kill $pid; sleep 0.2; kill -9 $pid"
    if ! wait_port "$port" 30; then
        tail -n 20 "$d/relay.log" >&2
        fail "postern-relay $name is not listening on 127.0.0.1:$port"
    fi
}

relay_log() { echo "$WORK/$1/relay.log"; }

# relay_status NAME RCPT: the last delivery status the relay logged for RCPT,
# with its enhanced status code ("sent dsn=2.0.0", "deferred dsn=4.7.4 (STARTTLS
# not offered)", "bounced dsn=5.1.1 (host X said: 550 ...)"); empty when none yet.
relay_status() {
    grep -F "to=<$2>," "$(relay_log "$1")" 2>/dev/null | grep -F "status=" | tail -n 1 |
        sed -E 's/.* dsn=([^,]*), status=([a-z]+)(.*)/\2 dsn=\1\3/' || true
}

# relay_queue NAME RCPT: the JSON of every queued message that has RCPT, one
# per line (empty when none is queued for RCPT). With RELAY_QUEUE_CACHE set to
# a file, reads the queue from that file (see relay_queue_snapshot).
relay_queue() {
    {
        if [ -n "${RELAY_QUEUE_CACHE:-}" ]; then
            cat "$RELAY_QUEUE_CACHE"
        else
            "$RELAY_BIN" --config "$WORK/$1/relay.toml" queue list --json 2>/dev/null
        fi
    } | python3 -c '
import json, sys
rcpt = sys.argv[1].lower()
text = sys.stdin.read().strip()
if not text:
    sys.exit(0)
data = json.loads(text)
if isinstance(data, dict):
    data = data.get("messages", [])
for m in data:
    for r in m.get("recipients", []):
        if r.get("address", "").lower().endswith(rcpt):
            print(json.dumps({"address": r["address"], "state": r.get("state"),
                              "last_failure": r.get("last_failure") or m.get("last_failure")}))
' "$2"
}

# relay_queue_snapshot NAME FILE: save the queue listing once for many relay_queue calls.
relay_queue_snapshot() {
    "$RELAY_BIN" --config "$WORK/$1/relay.toml" queue list --json >"$2" 2>/dev/null || : >"$2"
}
