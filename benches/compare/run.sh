#!/usr/bin/env bash
# Relay vs Postfix, side by side. Builds postern-loadgen (and postern-relay when it builds), raises the
# file-descriptor limit for the idle-connection measurement, then runs bench.py; its options pass through
# (bench.py --help). Needs root (private Postfix instance, cgroups), the Debian postfix package, openssl and
# taskset. Everything stays on loopback and under a temporary directory; /etc/postfix and port 25 are not
# touched.
#
#   benches/compare/run.sh                      # the full matrix, 5 A/B runs each
#   benches/compare/run.sh --servers postfix    # Postfix alone
#   benches/compare/run.sh --servers relay,relay-old --relay-old OLD/postern-relay   # new binary vs old
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
[ "$(id -u)" = 0 ] || { echo "run.sh: needs root (private Postfix instance)" >&2; exit 1; }
command -v postfix >/dev/null || { echo "run.sh: install the postfix package" >&2; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release -q -p postern-loadgen
relay=""
if cargo build --release -q -p postern-relay 2>/dev/null; then
  relay="$target/release/postern-relay"
fi
exec python3 "$here/bench.py" --loadgen "$target/release/postern-loadgen" --relay "$relay" "$@"
