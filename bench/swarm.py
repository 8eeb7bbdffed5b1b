#!/usr/bin/env python3
"""Benchmark: one code, N receivers. For N = 1, 2, 4, 8 it builds network namespaces on one
bridge (a sender host, a relay host, N receiver hosts; 198.18.0.0/24), caps every host's
link at 100 Mbit/s both ways with tc tbf (on both ends of each veth), sends one random file
with `convey send --receivers N`, and prints the time until every receiver has its files
verified and in place, the sender's bytes out (its interface counters), and both as ratios
to N = 1. Figures only; it asserts nothing.

Usage (root): python3 bench/swarm.py [--size-mib 256] [--counts 1,2,4,8] [--rate 100mbit]
                                     [--transport auto] [--out-dir /dev/shm] [--trace]
`--transport` goes to the sender and every receiver (`relay` puts every byte through the
relay's tunnel). To compare two builds, run it once per build with CARGO_TARGET_DIR set.
The receivers write to tmpfs by default: on this one machine they would all share one disk.
Uses the release binaries (cargo build --release). Traffic stays inside the namespaces it
creates; they, the relay and every convey it started are removed afterwards.
"""
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transfer import write_random  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
CONVEY = os.path.join(TARGET, "release", "convey")
RELAY = os.path.join(TARGET, "release", "convey-relay")


def sh(*args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {r.stderr.strip()} (this benchmark needs root, iproute2 and tc)")
    return r.stdout


class Net:
    """A bridge in a switch namespace and `count` hosts on it; host i has 198.18.0.{i+1}."""

    def __init__(self, count, rate):
        tag = f"{os.getpid() % 10000}"
        self.switch = f"cvbs{tag}"
        self.hosts = [f"cvb{i}x{tag}" for i in range(count)]
        self.nics = []
        for ns in [self.switch] + self.hosts:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")
        for i, host in enumerate(self.hosts):
            port, nic = f"bq{i}x{tag}", f"bw{i}x{tag}"
            sh("ip", "link", "add", port, "type", "veth", "peer", "name", nic)
            sh("ip", "link", "set", port, "netns", self.switch)
            sh("ip", "link", "set", nic, "netns", host)
            sh("ip", "-n", self.switch, "link", "set", port, "master", "br0")
            sh("ip", "-n", self.switch, "link", "set", port, "up")
            sh("ip", "-n", host, "addr", "add", f"198.18.0.{i + 1}/24", "dev", nic)
            sh("ip", "-n", host, "link", "set", nic, "up")
            for ns, dev in [(host, nic), (self.switch, port)]:
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                   "rate", rate, "burst", "256kb", "latency", "100ms")
            self.nics.append(nic)

    def tx_bytes(self, i):
        out = sh("ip", "netns", "exec", self.hosts[i], "cat", f"/sys/class/net/{self.nics[i]}/statistics/tx_bytes")
        return int(out.strip())

    def rx_bytes(self, i):
        out = sh("ip", "netns", "exec", self.hosts[i], "cat", f"/sys/class/net/{self.nics[i]}/statistics/rx_bytes")
        return int(out.strip())

    def close(self):
        for ns in self.hosts + [self.switch]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def stop_all(procs, net):
    """Kill every process started (by PID), then remove the namespaces."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    net.close()


def start_relay(net, env, procs):
    """The relay on host 1 (198.18.0.2:7951), once host 0 can reach it; its address."""
    procs.append(subprocess.Popen(
        ["ip", "netns", "exec", net.hosts[1], RELAY, "--listen", "0.0.0.0:7951"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
    deadline = time.time() + 10
    while subprocess.run(["ip", "netns", "exec", net.hosts[0], "bash", "-c",
                          "exec 3<>/dev/tcp/198.18.0.2/7951"], capture_output=True).returncode != 0:
        if time.time() > deadline:
            raise SystemExit("the relay did not start")
        time.sleep(0.1)
    return "198.18.0.2:7951"


def start_sender(net, env, procs, relay_addr, args):
    """`convey send --json ARGS` on host 0; the process and the code it printed (the rest
    of its output is drained in the background)."""
    sender = subprocess.Popen(
        ["ip", "netns", "exec", net.hosts[0], CONVEY, "send", "--relay", relay_addr, "--json", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    procs.append(sender)
    code = None
    for line in sender.stdout:
        ev = json.loads(line)
        if ev.get("event") == "code":
            code = ev["code"]
            break
    if code is None:
        raise SystemExit("the sender printed no code")
    threading.Thread(target=lambda: [None for _ in sender.stdout], daemon=True).start()
    return sender, code


def run_once(n, size, rate, work, outs, transport, trace=False):
    net = Net(2 + n, rate)
    procs = []
    try:
        env = dict(os.environ, CONVEY_LAN="off", HOME=work)
        env.pop("CONVEY_RELAY", None)
        relay_addr = start_relay(net, env, procs)
        payload = os.path.join(work, "payload.bin")
        before = net.tx_bytes(0)
        sender, code = start_sender(net, env, procs, relay_addr, ["--receivers", str(n), "--transport", transport, payload])
        started = time.time()
        finished = {}
        peers_bytes = {}
        progress = {}

        def watch(i, proc):
            for line in proc.stdout:
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("event") == "progress":
                    progress[i] = ev.get("bytes", 0)
                if ev.get("event") == "sources":
                    peers_bytes[i] = ev.get("from_receivers", 0)
                if ev.get("event") in ("seeding", "done") and i not in finished:
                    finished[i] = time.time() - started

        watchers = []
        for i in range(n):
            out = os.path.join(outs, f"out{i}")
            os.makedirs(out, exist_ok=True)
            p = subprocess.Popen(
                ["ip", "netns", "exec", net.hosts[2 + i], CONVEY, "receive", "--relay", relay_addr,
                 "--yes", "--json", "--transport", transport, "--out", out, code],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
            procs.append(p)
            t = threading.Thread(target=watch, args=(i, p), daemon=True)
            t.start()
            watchers.append(t)
        limit = time.time() + 900
        next_trace = time.time() + 1
        while len(finished) < n:
            if trace and time.time() >= next_trace:
                next_trace += 1
                row = [net.tx_bytes(0) >> 20] + [net.rx_bytes(2 + i) >> 20 for i in range(n)]
                print(f"  t={time.time() - started:5.1f} sender out {row[0]:>5} MiB, receivers in "
                      + " ".join(f"{r:>4}" for r in row[1:]) + ", verified "
                      + " ".join(f"{progress.get(i, 0) / 2**20:>5.1f}" for i in range(n)), flush=True)
            if time.time() > limit:
                raise SystemExit(f"N={n}: only {len(finished)} receivers finished in 900 s")
            if sender.poll() is not None and len(finished) < n:
                time.sleep(1)
                if len(finished) < n:
                    raise SystemExit(f"N={n}: the sender exited with {sender.returncode} early")
            time.sleep(0.05)
        if trace:
            print("  done at " + " ".join(f"{finished[i]:.1f}" for i in range(n)), flush=True)
        sender.wait(timeout=60)
        sent = net.tx_bytes(0) - before
        return max(finished.values()), sent, sum(peers_bytes.values())
    finally:
        stop_all(procs, net)
        for i in range(n):
            shutil.rmtree(os.path.join(outs, f"out{i}"), ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--counts", default="1,2,4,8")
    ap.add_argument("--rate", default="100mbit")
    ap.add_argument("--out-dir", default="/dev/shm",
                    help="where the receivers write (default: tmpfs; all receivers share this machine's "
                         "disk, which receivers on machines of their own do not)")
    ap.add_argument("--transport", default="auto", choices=["auto", "direct", "webrtc", "relay"])
    ap.add_argument("--trace", action="store_true", help="print every host's bytes once a second")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/swarm.py needs root (network namespaces and tc)")
    for b in (CONVEY, RELAY):
        if not os.path.exists(b):
            raise SystemExit(f"{b} is missing: run cargo build --release first")
    size = args.size_mib << 20
    work = tempfile.mkdtemp(prefix="convey-swarm-bench-")
    outs = tempfile.mkdtemp(prefix="convey-swarm-out-", dir=args.out_dir)
    try:
        write_random(os.path.join(work, "payload.bin"), size)
        base = None
        print(f"{args.size_mib} MiB, every link {args.rate} both ways, --transport {args.transport}, {CONVEY}")
        print(f"{'N':>3} {'all done s':>11} {'x N=1':>7} {'sender out MiB':>15} {'x content':>10} {'from peers MiB':>15} {'CPU s':>8}")
        for n in [int(c) for c in args.counts.split(",")]:
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            secs, sent, from_peers = run_once(n, size, args.rate, work, outs, args.transport, args.trace)
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            # Every process the run started was waited for: relay, sender and receivers.
            cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
            if base is None:
                base = secs
            print(f"{n:>3} {secs:>11.1f} {secs / base:>7.2f} {sent / 2**20:>15.0f} {sent / size:>10.2f} {from_peers / 2**20:>15.0f} {cpu:>8.1f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(outs, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
