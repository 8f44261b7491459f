#!/usr/bin/env bash
# An offline DNSSEC lab on loopback, for tests/lab.rs (and by hand):
#
#   setup.sh RUN_DIR [NSD_PORT [UNBOUND_PORT]]
#
# In RUN_DIR (which must exist), it generates fresh keys (ldns-keygen), signs
# the zones in zones/ (ldns-signzone, valid from yesterday, so clock skew
# cannot make them not-yet-valid), builds the bogus and expired zones, starts
# nsd on 127.0.0.1:NSD_PORT serving them, and unbound on
# 127.0.0.1:UNBOUND_PORT as a validating resolver with the lab's trust anchor
# (test.). Ports default to free ones picked at random.
#
# It prints KEY=VALUE lines on stdout: RUN_DIR, NSD_PORT, UNBOUND_PORT,
# NSD_PID, UNBOUND_PID, TRUST_ANCHOR, EXTRA_ZONES. The daemons keep running:
# stop them with `kill NSD_PID UNBOUND_PID`. Logs and configuration stay in
# RUN_DIR.
#
# Callers can add zones and resolver settings generated at run time:
#   LAB_EXTRA_ZONES=DIR    each DIR/NAME.zone (NAME a child of test., such as
#                          relay.test; origin NAME.) is signed with a fresh key
#                          (NSEC) and delegated from test. with NS and DS; each
#                          DIR/NAME.unsigned.zone is delegated without DS
#                          (insecure). Names of the lab's own zones are refused.
#                          EXTRA_ZONES lists the names added, space-separated.
#   LAB_UNBOUND_EXTRA=FILE appended to unbound.conf (say, a forward-zone to a
#                          dead port, so that one name fails to resolve).
#   LAB_OWNER_PID=PID      when process PID ends, a watchdog stops the daemons
#                          and removes RUN_DIR (for a lab shared by a whole
#                          test process, which has no teardown).
#
# Zone tree (see zones/):
#   test.              NSEC, the trust anchor; DS for dane, bogus, expired
#   dane.test.         NSEC3: MX, A/AAAA, TLSA, CNAME cases
#   unsig.dane.test.   unsigned, delegated from dane.test without DS
#   plain.test.        unsigned, no DS
#   bogus.test.        signed, then MX/A/TLSA data changed under the RRSIGs
#   expired.test.      RRSIGs valid only in January 2020
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
run=${1:?usage: setup.sh RUN_DIR [NSD_PORT [UNBOUND_PORT]]}
run=$(cd "$run" && pwd)

for tool in ldns-keygen ldns-signzone nsd unbound dig; do
    command -v "$tool" >/dev/null 2>&1 || { echo "setup.sh: $tool not found" >&2; exit 2; }
done

port_is_free() {
    # Nobody listening on it over UDP or TCP.
    ! ss -Hlnu "sport = :$1" | grep -q . && ! ss -Hlnt "sport = :$1" | grep -q .
}
free_port() {
    local p
    for _ in $(seq 50); do
        p=$((20000 + RANDOM % 40000))
        if port_is_free "$p"; then echo "$p"; return; fi
    done
    echo "setup.sh: no free port" >&2
    exit 2
}
nsd_port=${2:-$(free_port)}
unbound_port=${3:-$(free_port)}
[ "$nsd_port" != "$unbound_port" ] || { echo "setup.sh: same port twice" >&2; exit 2; }
extra_dir=
if [ -n "${LAB_EXTRA_ZONES:-}" ]; then
    extra_dir=$(cd "$LAB_EXTRA_ZONES" && pwd)
    [ "$extra_dir" != "$run" ] || { echo "setup.sh: LAB_EXTRA_ZONES must not be RUN_DIR" >&2; exit 2; }
fi
unbound_extra=
if [ -n "${LAB_UNBOUND_EXTRA:-}" ]; then
    [ -r "$LAB_UNBOUND_EXTRA" ] || { echo "setup.sh: cannot read LAB_UNBOUND_EXTRA=$LAB_UNBOUND_EXTRA" >&2; exit 2; }
    unbound_extra=$(cd "$(dirname "$LAB_UNBOUND_EXTRA")" && pwd)/$(basename "$LAB_UNBOUND_EXTRA")
fi

cd "$run"
cp "$here"/zones/*.zone .

# Keys and signatures: fresh on every run (signatures expire).
inception=$(date -u -d '-1 day' +%Y%m%d%H%M%S)
expiration=$(date -u -d '+30 days' +%Y%m%d%H%M%S)
key() { ldns-keygen -a ECDSAP256SHA256 -k "$1"; } # KSK flag, used as a CSK
kd=$(key dane.test.)
kb=$(key bogus.test.)
ke=$(key expired.test.)
kt=$(key test.)
ldns-signzone -n -i "$inception" -e "$expiration" -o dane.test. -f dane.test.signed dane.test.zone "$kd"
ldns-signzone -i "$inception" -e "$expiration" -o bogus.test. -f bogus.test.signed bogus.test.zone "$kb"
# Bogus: change the data, keep the signatures. The whole TLSA hash is
# overwritten (changing one digit can be a no-op).
sed -i -E \
    -e 's/(\sA\s+)127\.0\.0\.1$/\1127.0.0.66/' \
    -e 's/(\sMX\s+)10 /\120 /' \
    -e "s/(\sTLSA\s+3 1 1 )[0-9a-fA-F]+/\1$(printf %064d 0)/" \
    bogus.test.signed
grep -q '127\.0\.0\.66' bogus.test.signed || { echo "setup.sh: bogus A not edited" >&2; exit 1; }
grep -q "$(printf %064d 0)" bogus.test.signed || { echo "setup.sh: bogus TLSA not edited" >&2; exit 1; }
grep -Eq '\sMX\s+20 ' bogus.test.signed || { echo "setup.sh: bogus MX not edited" >&2; exit 1; }
ldns-signzone -i 20200101000000 -e 20200201000000 -o expired.test. -f expired.test.signed expired.test.zone "$ke"
cat "$kd.ds" "$kb.ds" "$ke.ds" >>test.zone

# The caller's zones: NAME.zone signed and delegated with DS, NAME.unsigned.zone
# delegated without. nsd_zones collects "NAME FILE" pairs for nsd.conf.
extra_names=()
extra_signed=()
nsd_zones=()
if [ -n "$extra_dir" ]; then
    for f in "$extra_dir"/*.zone; do
        [ -e "$f" ] || continue
        base=$(basename "$f" .zone)
        name=${base%.unsigned}
        [[ $name =~ ^[a-z0-9-]+\.test$ ]] || { echo "setup.sh: $f: $name is not a child of test." >&2; exit 2; }
        if [ -e "$name.zone" ] || [[ " ${extra_names[*]} " == *" $name "* ]]; then
            echo "setup.sh: $f: zone $name is already in the lab" >&2
            exit 2
        fi
        cp "$f" "$name.zone"
        extra_names+=("$name")
        echo "$name. NS ns.test." >>test.zone
        if [ "$base" = "$name" ]; then
            k=$(key "$name.")
            ldns-signzone -i "$inception" -e "$expiration" -o "$name." -f "$name.signed" "$name.zone" "$k"
            cat "$k.ds" >>test.zone
            nsd_zones+=("$name $name.signed")
            extra_signed+=("$name")
        else
            nsd_zones+=("$name $name.zone")
        fi
    done
fi
ldns-signzone -i "$inception" -e "$expiration" -o test. -f test.signed test.zone "$kt"
# hickory wants the anchor as a DNSKEY (not a DS); unbound takes either.
cp "$kt.key" trust-anchor.dnskey

cat >nsd.conf <<EOF
server:
    ip-address: 127.0.0.1@$nsd_port
    port: $nsd_port
    username: ""
    chroot: ""
    database: ""
    zonesdir: "$run"
    pidfile: "$run/nsd.pid"
    xfrdfile: "$run/xfrd.state"
    zonelistfile: "$run/zone.list"
    logfile: "$run/nsd.log"
    server-count: 1
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: test.
    zonefile: test.signed
zone:
    name: dane.test.
    zonefile: dane.test.signed
zone:
    name: unsig.dane.test.
    zonefile: unsig.dane.test.zone
zone:
    name: plain.test.
    zonefile: plain.test.zone
zone:
    name: bogus.test.
    zonefile: bogus.test.signed
zone:
    name: expired.test.
    zonefile: expired.test.signed
EOF
for z in ${nsd_zones[@]+"${nsd_zones[@]}"}; do
    printf 'zone:\n    name: %s.\n    zonefile: %s\n' "${z% *}" "${z#* }" >>nsd.conf
done

# A validating resolver forwarding test. to nsd, trusting only the lab's
# anchor: no domain-insecure, no permissive mode, and RFC 8914 extended
# errors on (so a SERVFAIL says when it is a validation failure).
cat >unbound.conf <<EOF
server:
    interface: 127.0.0.1@$unbound_port
    port: $unbound_port
    do-ip6: no
    username: ""
    chroot: ""
    directory: "$run"
    pidfile: "$run/unbound.pid"
    use-syslog: no
    logfile: "$run/unbound.log"
    verbosity: 1
    val-log-level: 2
    num-threads: 1
    so-reuseport: no
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    module-config: "validator iterator"
    trust-anchor-file: "$run/trust-anchor.dnskey"
    val-permissive-mode: no
    ede: yes
    # test. is a special-use name (RFC 6761) that unbound answers locally by
    # default; the lab needs it resolved.
    local-zone: "test." nodefault
    cache-max-ttl: 1
    cache-max-negative-ttl: 1
forward-zone:
    name: "test."
    forward-addr: 127.0.0.1@$nsd_port
remote-control:
    control-enable: no
EOF
if [ -n "$unbound_extra" ]; then
    cat "$unbound_extra" >>unbound.conf
fi

nsd -c nsd.conf -d </dev/null >nsd.out 2>&1 &
nsd_pid=$!
# If anything below fails, stop what was started.
trap 'kill $nsd_pid ${unbound_pid:-} 2>/dev/null || true' ERR

wait_for() { # description, command...
    local what=$1
    shift
    for _ in $(seq 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "setup.sh: $what not ready; logs in $run" >&2
    return 1
}
nsd_ready() { [ -n "$(dig +short +tries=1 +time=1 -p "$nsd_port" @127.0.0.1 SOA test.)" ]; }
wait_for nsd nsd_ready

unbound -d -c unbound.conf </dev/null >unbound.out 2>&1 &
unbound_pid=$!
validated() { # name: its SOA comes back from unbound with AD set
    dig +tries=1 +time=1 +dnssec -p "$unbound_port" @127.0.0.1 SOA "$1" | grep -Eq 'flags:[^;]* ad[ ;]'
}
wait_for "unbound (validated answer)" validated dane.test.
for z in ${extra_signed[@]+"${extra_signed[@]}"}; do
    wait_for "unbound (validated answer for $z)" validated "$z."
done

if [ -n "${LAB_OWNER_PID:-}" ]; then
    owner=$LAB_OWNER_PID
    (
        while kill -0 "$owner" 2>/dev/null; do sleep 0.2; done
        kill "$nsd_pid" "$unbound_pid" 2>/dev/null || true
        sleep 0.5
        kill -KILL "$nsd_pid" "$unbound_pid" 2>/dev/null || true
        rm -rf "$run"
    ) </dev/null >/dev/null 2>&1 &
fi

echo "RUN_DIR=$run"
echo "NSD_PORT=$nsd_port"
echo "UNBOUND_PORT=$unbound_port"
echo "NSD_PID=$nsd_pid"
echo "UNBOUND_PID=$unbound_pid"
echo "TRUST_ANCHOR=$run/trust-anchor.dnskey"
echo "EXTRA_ZONES=${extra_names[*]+${extra_names[*]}}"
