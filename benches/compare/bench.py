#!/usr/bin/env python3
"""Side-by-side SMTP benchmark: postern-relay against a private Postfix instance.

Both servers listen on loopback, use the same certificate files, sync their queue to disk and relay to the
same sink (postern-loadgen's discard sink). postern-loadgen drives both, in alternating A/B order. Per run it
records the generator's messages/s and the server's CPU time (user + system of the whole process tree, from
a cpuacct cgroup, else from /proc) divided by the messages delivered, after the server's queue has drained.
Memory per idle connection is the growth of the server tree's proportional set size (PSS; RSS too) with N
idle sessions, divided by N.

Run through run.sh, which builds the binaries and raises the file-descriptor limit. Standard library only.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CGROOT = "/sys/fs/cgroup/cpuacct"

# name -> (description, loadgen send options, needs STARTTLS)
SCENARIOS = {
    "plain": ("plaintext, 1 msg/conn", [], False),
    "rsa": ("STARTTLS full handshake, RSA-4096, 1 msg/conn", ["--starttls", "--server-key", "rsa"], True),
    "ecdsa": ("STARTTLS full handshake, ECDSA P-256, 1 msg/conn", ["--starttls", "--server-key", "ecdsa"], True),
    "resumed": ("STARTTLS resumed sessions, RSA-4096, 1 msg/conn", ["--starttls", "--server-key", "rsa", "--resume"], True),
    "10-per-conn": ("STARTTLS full handshake, RSA-4096, 10 msg/conn", ["--starttls", "--server-key", "rsa", "-p", "10"], True),
}
# inbound mode -> (description, client presents a certificate)
MODES = {
    "offer": ("server offers STARTTLS", False),
    "require": ("server requires STARTTLS", False),
    "require-ccert": ("server requires STARTTLS and a client certificate", True),
}
OUTBOUND = {"opportunistic": "outbound opportunistic", "verify": "outbound verify"}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------- CPU and memory of a process tree


class Meter:
    """CPU time (ns) and memory of one server's process tree: a cpuacct cgroup when possible, else the tree
    of processes under a root pid (utime + stime + cutime + cstime of each member: a dead child's time is in
    its parent's cutime)."""

    def __init__(self, name):
        self.cgroup = None
        self.root_pid = None
        path = os.path.join(CGROOT, "postern-bench-%d-%s" % (os.getpid(), name))
        try:
            os.mkdir(path)
            self.cgroup = path
        except OSError as e:
            log("cgroup unavailable (%s); using /proc process trees" % e)

    def enter_cmd(self, cmd):
        """The command, wrapped so that it starts inside the cgroup."""
        if not self.cgroup:
            return cmd
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', self.cgroup] + cmd

    def pids(self):
        if self.cgroup:
            with open(os.path.join(self.cgroup, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        if self.root_pid is None:
            return []
        children = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                    children.setdefault(ppid, []).append(int(d))
                except (OSError, IndexError, ValueError):
                    pass
        out, todo = [], [self.root_pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo.extend(children.get(p, []))
        return out

    def cpu_ns(self):
        if self.cgroup:
            with open(os.path.join(self.cgroup, "cpuacct.usage")) as f:
                return int(f.read())
        hz = os.sysconf("SC_CLK_TCK")
        total = 0
        for p in self.pids():
            try:
                with open("/proc/%d/stat" % p) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
            except (OSError, IndexError, ValueError):
                pass
        return total * 1_000_000_000 // hz

    def cpu_split_ns(self):
        """(user, system) CPU time in ns, or None where only the total is known."""
        if not self.cgroup:
            return None
        out = []
        for f in ("cpuacct.usage_user", "cpuacct.usage_sys"):
            try:
                with open(os.path.join(self.cgroup, f)) as fh:
                    out.append(int(fh.read()))
            except (OSError, ValueError):
                return None
        return tuple(out)

    def memory_kib(self):
        """(PSS, RSS) summed over the tree, KiB."""
        pss = rss = 0
        for p in self.pids():
            try:
                with open("/proc/%d/smaps_rollup" % p) as f:
                    for line in f:
                        if line.startswith("Pss:"):
                            pss += int(line.split()[1])
                        elif line.startswith("Rss:"):
                            rss += int(line.split()[1])
            except OSError:
                pass
        return pss, rss

    def close(self):
        if self.cgroup:
            try:
                os.rmdir(self.cgroup)
            except OSError:
                pass


def taskset(cpus):
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


# ---------------------------------------------------------------- servers


def count_files(top):
    n = 0
    for _, _, files in os.walk(top):
        n += len(files)
    return n


class Postfix:
    name = "postfix"

    def __init__(self, a, work, certs):
        self.a, self.dir, self.certs = a, os.path.join(work, "postfix"), certs
        self.port = a.postfix_port
        self.meter = Meter("postfix")
        self.running = False

    def configure(self, mode, outbound):
        d, c = self.dir, self.certs
        for sub in ("queue", "data"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        shutil.chown(os.path.join(d, "data"), "postfix", "postfix")
        level = "may" if mode == "offer" else "encrypt"
        main = [
            "compatibility_level = 3.6",
            "queue_directory = %s/queue" % d,
            "data_directory = %s/data" % d,
            "maillog_file = %s/maillog" % d,
            "maillog_file_prefixes = %s" % d,
            "myhostname = postfix-bench.localhost",
            "mydestination =",
            "alias_maps =",
            "alias_database =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            "relayhost = [127.0.0.1]:%d" % self.a.sink_port,
            "smtp_dns_support_level = disabled",
            "biff = no",
            # One client (the generator) opens every connection: lift the per-client limits.
            "smtpd_client_connection_count_limit = 0",
            "default_process_limit = %d" % (max(self.a.idle_postfix, self.a.connections) + 200),
            "smtpd_tls_chain_files = %s/rsa.key, %s/rsa.crt, %s/ecdsa.key, %s/ecdsa.crt" % (c, c, c, c),
            "smtpd_tls_security_level = %s" % level,
            "smtpd_tls_session_cache_database = btree:${data_directory}/smtpd_scache",
            "smtpd_tls_loglevel = 0",
            "smtp_tls_session_cache_database = btree:${data_directory}/smtp_scache",
            "smtp_tls_security_level = may",
            "smtp_tls_CAfile = %s/ca.crt" % c,
        ]
        if mode == "require-ccert":
            main += ["smtpd_tls_ask_ccert = yes", "smtpd_tls_req_ccert = yes", "smtpd_tls_CAfile = %s/ca.crt" % c]
        if outbound == "verify":
            with open(os.path.join(d, "tls_policy"), "w") as f:
                f.write("[127.0.0.1]:%d verify match=sink.localhost\n" % self.a.sink_port)
            main.append("smtp_tls_policy_maps = texthash:%s/tls_policy" % d)
        with open(os.path.join(d, "main.cf"), "w") as f:
            f.write("\n".join(main) + "\n")
        services = [
            "127.0.0.1:%d inet n - n - - smtpd" % self.port,
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "proxywrite unix - - n - 1 proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        with open(os.path.join(d, "master.cf"), "w") as f:
            f.write("\n".join(services) + "\n")

    def start(self):
        run(["postfix", "-c", self.dir, "set-permissions"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cmd = self.meter.enter_cmd(taskset(self.a.server_cpus) + ["postfix", "-c", self.dir, "start"])
        run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pidfile = os.path.join(self.dir, "queue", "pid", "master.pid")
        for _ in range(100):
            if os.path.exists(pidfile):
                with open(pidfile) as f:
                    self.meter.root_pid = int(f.read().strip())
                break
            time.sleep(0.1)
        wait_port(self.port)
        self.running = True

    def stop(self):
        if self.running:
            subprocess.run(["postfix", "-c", self.dir, "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.running = False
            time.sleep(1)

    def queued(self):
        q = os.path.join(self.dir, "queue")
        return sum(count_files(os.path.join(q, s)) for s in ("maildrop", "incoming", "active", "deferred"))

    def deferred(self):
        return count_files(os.path.join(self.dir, "queue", "deferred"))


class Relay:
    """postern-relay; `name` "relay" is the binary under test, "relay-old" the `--relay-old` baseline."""

    def __init__(self, a, work, certs, name="relay"):
        self.name, self.binary = name, a.relay if name == "relay" else a.relay_old
        self.a, self.dir, self.certs = a, os.path.join(work, name), certs
        self.port = a.relay_port if name == "relay" else a.relay_old_port
        self.meter = Meter(name)
        self.proc = None
        self.config = os.path.join(self.dir, "relay.toml")

    def configure(self, mode, outbound):
        d, c = self.dir, self.certs
        os.makedirs(d, exist_ok=True)
        inbound_tls = "offer" if mode == "offer" else "require"
        ccert = "require" if mode == "require-ccert" else "none"
        cfg = [
            'hostname = "relay-bench.localhost"',
            'listen = ["127.0.0.1:%d"]' % self.port,
            'state_dir = "%s/state"' % d,
            'accepted_domains = []',
            'authorised_networks = ["127.0.0.0/8"]',
            'log = "warn"',
            "max_connections = %d" % (max(self.a.idle, self.a.connections) + 200),
            "",
            "[certificates]",
            'ca_bundle = "%s/ca.crt"' % c,
            'client_cert_roots = "%s/ca.crt"' % c,
            "",
            "[routes]",
            '"*" = "127.0.0.1:%d"' % self.a.sink_port,
            "",
            "[tls.inbound]",
            'tls = "%s"' % inbound_tls,
            'client_certificates = "%s"' % ccert,
            "",
            "[tls.outbound]",
            'tls = "%s"' % ("verify" if outbound == "verify" else "opportunistic"),
        ]
        if outbound == "verify":
            cfg += ['certificate_match = ["sink.localhost"]', 'trust_anchors = "%s/ca.crt"' % c]
        # Top-level keys go before the first table: `--relay-extra` / `--relay-old-extra` lines are put
        # there (the bench runs as root: the relay under test is allowed to stay root).
        extra = self.a.relay_extra if self.name == "relay" else self.a.relay_old_extra
        top = (["allow_root = true"] if self.name == "relay" else []) + [l for l in extra.split("\n") if l]
        cfg = cfg[:2] + top + cfg[2:]
        with open(self.config, "w") as f:
            f.write("\n".join(cfg) + "\n")
        # The same certificate files as Postfix, imported into the relay's certificate table.
        for name in ("rsa", "ecdsa"):
            subprocess.run(
                [self.binary, "--config", self.config, "cert", "import", "--name", name,
                 "--cert", "%s/%s.crt" % (c, name), "--key", "%s/%s.key" % (c, name)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )

    def start(self):
        cmd = self.meter.enter_cmd(taskset(self.a.server_cpus) + [self.binary, "--config", self.config])
        self.log = open(os.path.join(self.dir, "relay.log"), "ab")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, cwd=self.dir)
        self.meter.root_pid = self.proc.pid
        wait_port(self.port)

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self.log.close()

    def queued(self):
        return count_files(os.path.join(self.dir, "state", "spool", "queue")) + count_files(
            os.path.join(self.dir, "state", "spool", "tmp"))

    def deferred(self):
        return 0


def wait_port(port, timeout=30):
    import socket

    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listens on 127.0.0.1:%d" % port)


# ---------------------------------------------------------------- runs


def loadgen_send(a, server, extra, messages, json_out=True):
    cmd = taskset(a.client_cpus) + [
        a.loadgen, "send", "--target", "127.0.0.1:%d" % server.port,
        "--connections", str(a.connections), "--messages", str(messages),
        "--size", str(a.size), "--duration", "%ds" % a.duration, "--json",
    ] + extra
    if a.client_threads:
        cmd += ["--threads", str(a.client_threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=a.duration + 30).stdout
    return json.loads(out)


def drain(server, timeout):
    """Wait until the server's queue is empty; returns the seconds waited, or None on timeout."""
    start = time.time()
    while time.time() - start < timeout:
        if server.queued() == 0:
            return time.time() - start
        time.sleep(0.05)
    return None


def one_run(a, server, extra, messages):
    cpu0, split0 = server.meter.cpu_ns(), server.meter.cpu_split_ns()
    rep = loadgen_send(a, server, extra, messages)
    waited = drain(server, a.drain_timeout)
    cpu1, split1 = server.meter.cpu_ns(), server.meter.cpu_split_ns()
    ok = rep["messages_delivered"]
    user_sys = None
    if ok and split0 and split1:
        user_sys = [(split1[i] - split0[i]) / 1000 / ok for i in (0, 1)]
    return {
        "cpu_user_sys_us_per_msg": user_sys,
        "messages_per_s": rep["messages_per_s"],
        "cpu_us_per_msg": (cpu1 - cpu0) / 1000 / ok if ok else None,
        "delivered": ok,
        "failed": rep["messages_failed"],
        "not_sent": rep["messages_not_sent"],
        "errors": rep["errors"],
        "tls_full": rep["tls_full"],
        "tls_resumed": rep["tls_resumed"],
        "p50_us": rep["message_latency_us"]["p50"],
        "p99_us": rep["message_latency_us"]["p99"],
        "setup_p50_us": rep["setup_latency_us"]["p50"],
        "drain_s": waited,
    }


def idle_memory(a, server, n, tls):
    before = server.meter.memory_kib()
    cmd = taskset(a.client_cpus) + [
        a.loadgen, "idle", "--target", "127.0.0.1:%d" % server.port, "--connections", str(n),
        "--hold", "%ds" % a.idle_hold, "--duration", "%ds" % (a.idle_hold + 300), "--json",
    ] + (["--starttls", "--server-key", "ecdsa"] if tls else [])
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready = None
    for line in p.stderr:
        if line.startswith("idle-ready"):
            ready = int(line.split()[1])
            break
    time.sleep(2)
    during = server.meter.memory_kib()
    out, _ = p.communicate(timeout=a.idle_hold + 360)
    rep = json.loads(out) if out.strip() else {}
    if not ready:
        return {"sessions": 0, "errors": rep.get("errors")}
    return {
        "sessions": ready,
        "pss_kib_per_conn": (during[0] - before[0]) / ready,
        "rss_kib_per_conn": (during[1] - before[1]) / ready,
        "errors": rep.get("errors"),
    }


def stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def fmt(s, digits=0):
    if not s:
        return "—"
    f = "%%.%df" % digits
    return "%s (%s–%s)" % (f % s["median"], f % s["min"], f % s["max"])


def ratio(a, b):
    if not a or not b or not b["median"]:
        return "—"
    return "%.2f" % (a["median"] / b["median"])


# ---------------------------------------------------------------- main


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loadgen", required=True)
    p.add_argument("--relay", default="")
    p.add_argument("--relay-old", default="",
                   help="a second postern-relay binary (e.g. the previous release), server name relay-old")
    p.add_argument("--servers", default="relay,postfix",
                   help="comma list of relay, relay-old, postfix; the first is A (ours)")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--outbound", default=",".join(OUTBOUND))
    p.add_argument("--scenarios", default=",".join(SCENARIOS))
    p.add_argument("--outbound-verify-scenarios", default="plain,rsa",
                   help="scenarios run with outbound verify (all modes' other scenarios use opportunistic)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--messages", type=int, default=2000, help="messages per run (hard cap)")
    p.add_argument("--duration", type=int, default=60, help="seconds per run (hard cap)")
    p.add_argument("--warmup", type=int, default=200, help="messages sent before the runs of a scenario")
    p.add_argument("--connections", type=int, default=20)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--idle", type=int, default=10000, help="idle sessions for the memory measurement (0: skip)")
    p.add_argument("--idle-postfix", type=int, default=1000,
                   help="idle sessions for Postfix (one smtpd process each)")
    p.add_argument("--idle-hold", type=int, default=10)
    p.add_argument("--drain-timeout", type=int, default=120)
    p.add_argument("--server-cpus", default="0")
    p.add_argument("--client-cpus", default="1")
    p.add_argument("--client-threads", type=int, default=0)
    p.add_argument("--postfix-port", type=int, default=12625)
    p.add_argument("--relay-port", type=int, default=12525)
    p.add_argument("--relay-old-port", type=int, default=12526)
    p.add_argument("--relay-extra", default="",
                   help="configuration lines added to relay's file (\\n-separated; dotted keys for tables)")
    p.add_argument("--relay-old-extra", default="",
                   help="the same for relay-old (e.g. 'allow_root = true' when it is a recent build)")
    p.add_argument("--sink-port", type=int, default=12626)
    p.add_argument("--workdir", default="")
    p.add_argument("--out", default="", help="write the markdown summary here too")
    a = p.parse_args()

    work = a.workdir or tempfile.mkdtemp(prefix="postern-bench-")
    os.makedirs(work, exist_ok=True)
    certs = os.path.join(work, "certs")
    run([os.path.join(HERE, "certs.sh"), certs])
    log("work directory:", work)

    names = [s for s in a.servers.split(",") if s]
    servers = []
    for n in names:
        if n == "relay":
            if not a.relay or not os.path.exists(a.relay):
                log("postern-relay not built: skipping it")
                continue
            servers.append(Relay(a, work, certs))
        elif n == "relay-old":
            if not a.relay_old or not os.path.exists(a.relay_old):
                log("--relay-old not given or missing: skipping it")
                continue
            servers.append(Relay(a, work, certs, "relay-old"))
        elif n == "postfix":
            servers.append(Postfix(a, work, certs))
    sink_log = open(os.path.join(work, "sink.log"), "ab")
    sink = subprocess.Popen(
        taskset(a.client_cpus) + [a.loadgen, "sink", "--listen", "127.0.0.1:%d" % a.sink_port,
                                  "--cert", certs + "/sink.crt", "--key", certs + "/sink.key",
                                  "--hostname", "sink.localhost", "--duration", "6h"],
        stdout=sink_log, stderr=sink_log)
    results = []
    resf = open(os.path.join(work, "results.jsonl"), "a")
    ccert = ["--client-cert", certs + "/client.crt", "--client-key", certs + "/client.key"]
    try:
        wait_port(a.sink_port)
        plan = []
        for mode in a.modes.split(","):
            for outbound in a.outbound.split(","):
                for sc in a.scenarios.split(","):
                    if mode != "offer" and not SCENARIOS[sc][2]:
                        continue  # plaintext is refused under require
                    if outbound == "verify" and sc not in a.outbound_verify_scenarios.split(","):
                        continue
                    plan.append((mode, outbound, sc))
        by_config = {}
        for mode, outbound, sc in plan:
            by_config.setdefault((mode, outbound), []).append(sc)
        for (mode, outbound), scs in by_config.items():
            for s in servers:
                s.configure(mode, outbound)
                s.start()
            try:
                for sc in scs:
                    extra = list(SCENARIOS[sc][1]) + (ccert if MODES[mode][1] else [])
                    for s in servers:
                        if a.warmup:
                            one_run(a, s, extra, a.warmup)
                    for i in range(a.runs):
                        order = servers if i % 2 == 0 else list(reversed(servers))
                        for s in order:
                            r = one_run(a, s, extra, a.messages)
                            r.update({"server": s.name, "mode": mode, "outbound": outbound, "scenario": sc, "run": i})
                            resf.write(json.dumps(r) + "\n")
                            resf.flush()
                            results.append(r)
                            log("%-8s %-13s %-13s %-11s run %d: %7.1f msg/s, %s us/msg CPU, %d ok, %d failed %s" % (
                                s.name, mode, outbound, sc, i, r["messages_per_s"],
                                "%.0f" % r["cpu_us_per_msg"] if r["cpu_us_per_msg"] else "-",
                                r["delivered"], r["failed"], r["errors"] or ""))
            finally:
                for s in servers:
                    s.stop()
        idle = {}
        if a.idle:
            for s in servers:
                s.configure("offer", "opportunistic")
                s.start()
                try:
                    n = a.idle_postfix if s.name == "postfix" else a.idle
                    idle[s.name] = idle_memory(a, s, n, tls=False)
                    log("%s idle: %s" % (s.name, idle[s.name]))
                    resf.write(json.dumps({"server": s.name, "idle": idle[s.name]}) + "\n")
                finally:
                    s.stop()
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)
        for s in servers:
            s.stop()
            s.meter.close()
    md = summary(a, servers, results, idle)
    print(md)
    with open(os.path.join(work, "summary.md"), "w") as f:
        f.write(md)
    if a.out:
        with open(a.out, "w") as f:
            f.write(md)


def summary(a, servers, results, idle):
    names = [s.name for s in servers]
    ours = "relay" if "relay" in names else None
    theirs = "postfix" if "postfix" in names else "relay-old" if "relay-old" in names else None
    label = "Postfix" if theirs == "postfix" else "old"
    lines = []
    hdr = "| mode | outbound | scenario |"
    sep = "|---|---|---|"
    for n in names:
        hdr += " %s msg/s | %s CPU µs/msg |" % (n, n)
        sep += "---:|---:|"
    if ours and theirs:
        hdr += " msg/s ours÷%s | CPU/msg ours÷%s |" % (label, label)
        sep += "---:|---:|"
    lines += [hdr, sep]
    keys = []
    for r in results:
        k = (r["mode"], r["outbound"], r["scenario"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        row = "| %s | %s | %s |" % k
        st = {}
        for n in names:
            rs = [r for r in results if (r["mode"], r["outbound"], r["scenario"]) == k and r["server"] == n]
            st[n] = (stats([r["messages_per_s"] for r in rs]), stats([r["cpu_us_per_msg"] for r in rs]))
            bad = sum(r["failed"] + r["not_sent"] for r in rs)
            row += " %s%s | %s |" % (fmt(st[n][0]), " ⚠%d failed" % bad if bad else "", fmt(st[n][1]))
        if ours and theirs:
            row += " %s | %s |" % (ratio(st[ours][0], st[theirs][0]), ratio(st[ours][1], st[theirs][1]))
        lines.append(row)
    lines.append("")
    lines.append("Cells: median (min–max) of %d runs; %d messages of %d bytes per run, %d concurrent connections." % (
        a.runs, a.messages, a.size, a.connections))
    if idle:
        lines.append("")
        lines.append("| server | idle sessions | PSS KiB per idle connection | RSS KiB per idle connection |")
        lines.append("|---|---:|---:|---:|")
        for n, r in idle.items():
            if r.get("sessions"):
                lines.append("| %s | %d | %.1f | %.1f |" % (n, r["sessions"], r["pss_kib_per_conn"], r["rss_kib_per_conn"]))
            else:
                lines.append("| %s | 0 | — | — |" % n)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
