#!/usr/bin/env python3
"""Greet pause cost (docs/benchmarks.md): postern-relay with greet_pause 0, 100ms on every connection
(greet_pass_ttl 0) and 100ms with the default pass cache (greet_pass_ttl 1d), relaying to postern-loadgen's sink
and driven by postern-loadgen send (plaintext, and STARTTLS with ECDSA), 1 message per connection, 4096 bytes.
Runs alternate between the settings (A/B/C then C/B/A). Loopback only.

    cargo build --release -p postern-relay -p postern-loadgen
    RUNS=3 CONNS=20 MESSAGES=500 benches/greet-pause/run.py

Environment: T (directory of the binaries, default target/release), RUNS, CONNS, MESSAGES."""
import json, os, shutil, signal, subprocess, sys, tempfile, time, socket

T = os.environ.get("T", "target/release")
RELAY, LOADGEN = os.path.abspath(T + "/postern-relay"), os.path.abspath(T + "/postern-loadgen")
WORK = tempfile.mkdtemp(prefix="greet-pause-")
SINK_PORT, RELAY_PORT = 12726, 12725
RUNS = int(os.environ.get("RUNS", "3"))
MESSAGES = int(os.environ.get("MESSAGES", "500"))
CONNS = int(os.environ.get("CONNS", "20"))
SETTINGS = {
    "pause 0 (off)": ('"0"', '"1d"'),
    "pause 100ms, every connection (greet_pass_ttl 0)": ('"100ms"', '"0"'),
    "pause 100ms, default (greet_pass_ttl 1d)": ('"100ms"', '"1d"'),
}
SCEN = {"plain": [], "ecdsa": ["--starttls", "--server-key", "ecdsa"]}

def wait_port(p):
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", p), 0.2).close(); return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("port %d never opened" % p)

def relay(pause, ttl):
    d = WORK + "/relay"
    # A fresh spool each time; the certificates are kept.
    shutil.rmtree(d + "/state/spool", ignore_errors=True)
    os.makedirs(d, exist_ok=True)
    cfg = "\n".join([
        'hostname = "relay-bench.localhost"', 'listen = ["127.0.0.1:%d"]' % RELAY_PORT,
        'state_dir = "%s/state"' % d, 'accepted_domains = []', 'authorised_networks = ["127.0.0.0/8"]',
        'log = "warn"', 'max_connections = 300', '', '[routes]', '"*" = "127.0.0.1:%d"' % SINK_PORT, '',
        '[timeouts]', 'greet_pause = %s' % pause, 'greet_pass_ttl = %s' % ttl, ''])
    open(d + "/relay.toml", "w").write(cfg)
    p = subprocess.Popen([RELAY, "--config", d + "/relay.toml"], stdout=open(d + "/log", "ab"), stderr=subprocess.STDOUT, cwd=d)
    wait_port(RELAY_PORT)
    return p

def send(extra, n):
    out = subprocess.run([LOADGEN, "send", "--target", "127.0.0.1:%d" % RELAY_PORT, "--connections", str(CONNS),
                          "--messages", str(n), "--size", "4096", "--duration", "60s", "--json"] + extra,
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return json.loads(out)

os.makedirs(WORK, exist_ok=True)
sink = subprocess.Popen([LOADGEN, "sink", "--listen", "127.0.0.1:%d" % SINK_PORT, "--duration", "2h"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wait_port(SINK_PORT)
res = {}
try:
    for r in range(RUNS):
        order = list(SETTINGS.items()) if r % 2 == 0 else list(reversed(SETTINGS.items()))
        for name, (pause, ttl) in order:
            p = relay(pause, ttl)
            try:
                for scen, extra in SCEN.items():
                    send(extra, 50)  # warm-up (and, with the pass cache, the first pass)
                    rep = send(extra, MESSAGES)
                    res.setdefault((name, scen), []).append(
                        (rep["messages_per_s"], rep["message_latency_us"]["p50"], rep["setup_latency_us"]["p50"],
                         rep["setup_latency_us"]["p99"], rep["messages_delivered"], rep["errors"]))
                    print(name, scen, res[(name, scen)][-1], "load", os.getloadavg()[0], file=sys.stderr, flush=True)
            finally:
                p.send_signal(signal.SIGTERM); p.wait(timeout=30)
finally:
    sink.send_signal(signal.SIGTERM); sink.wait(timeout=10)
shutil.rmtree(WORK, ignore_errors=True)
print("| scenario | relay setting | msg/s median (min–max) | setup p50 ms | setup p99 ms | delivered |")
print("|---|---|---:|---:|---:|---:|")
def med(v):
    v = sorted(v); return v[len(v)//2]
for (name, scen), rows in res.items():
    mps = [r[0] for r in rows]; setup = [r[2] for r in rows]; setup99 = [r[3] for r in rows]
    print("| %s | %s | %.0f (%.0f–%.0f) | %.1f | %.1f | %s |" % (scen, name, med(mps), min(mps), max(mps),
          med(setup)/1000, med(setup99)/1000, sum(r[4] for r in rows)))
