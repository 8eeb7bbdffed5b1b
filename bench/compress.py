#!/usr/bin/env python3
"""Benchmark: compression on a capped link. It builds three network namespaces on one
bridge (sender, relay, receiver; 198.18.0.0/24), caps every link at 100 Mbit/s both ways
with tc tbf, and sends two payloads with and without `--no-compress`, taking turns:
  * a compressible corpus it builds itself: a copy of this system's C headers
    (/usr/include) and its uncompressed documentation (/usr/share/doc, .gz files left out);
  * 1 GiB of random data.
For each it prints the wall time (the sender's code to the receiver's files verified and in
place) and the bytes on the wire (the sender's interface counter), and the ratios of
compressed to uncompressed. Figures only; it asserts nothing.

Usage (root): python3 bench/compress.py [--random-mib 1024] [--rate 100mbit] [--rounds 1]
Uses the release binaries (cargo build --release). Traffic stays inside the namespaces it
creates; they, the relay and every convey it started are removed afterwards.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from swarm import CONVEY, RELAY, Net, start_relay, start_sender, stop_all  # noqa: E402
from transfer import write_random  # noqa: E402


def build_corpus(dest):
    """Copy /usr/include and the uncompressed files of /usr/share/doc under `dest`."""
    shutil.copytree("/usr/include", os.path.join(dest, "include"), symlinks=False,
                    ignore_dangling_symlinks=True, dirs_exist_ok=True)
    doc = os.path.join(dest, "doc")
    for root, _, files in os.walk("/usr/share/doc"):
        for f in files:
            src = os.path.join(root, f)
            if f.endswith(".gz") or not os.path.isfile(src) or os.path.islink(src):
                continue
            rel = os.path.relpath(src, "/usr/share/doc")
            os.makedirs(os.path.join(doc, os.path.dirname(rel)), exist_ok=True)
            shutil.copyfile(src, os.path.join(doc, rel))


def tree_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def run_once(payload, compress, rate, work):
    net = Net(3, rate)
    procs = []
    try:
        env = dict(os.environ, CONVEY_LAN="off", HOME=work)
        env.pop("CONVEY_RELAY", None)
        relay_addr = start_relay(net, env, procs)
        before = net.tx_bytes(0)
        flags = [] if compress else ["--no-compress"]
        sender, code = start_sender(net, env, procs, relay_addr, [*flags, payload])
        started = time.time()
        out = os.path.join(work, "out")
        os.makedirs(out, exist_ok=True)
        receiver = subprocess.Popen(
            ["ip", "netns", "exec", net.hosts[2], CONVEY, "receive", "--relay", relay_addr,
             "--yes", "--json", "--out", out, code],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        procs.append(receiver)
        try:
            rc = receiver.wait(timeout=900)
        except subprocess.TimeoutExpired:
            raise SystemExit("the receiver did not finish in 900 s")
        secs = time.time() - started
        if rc != 0:
            raise SystemExit(f"the receiver exited with {rc}")
        sender.wait(timeout=60)
        got = tree_bytes(os.path.join(out, os.path.basename(payload)))
        if got != tree_bytes(payload):
            raise SystemExit(f"received {got} bytes of {tree_bytes(payload)}")
        return secs, net.tx_bytes(0) - before
    finally:
        stop_all(procs, net)
        shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--random-mib", type=int, default=1024)
    ap.add_argument("--rate", default="100mbit")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/compress.py needs root (network namespaces and tc)")
    for b in (CONVEY, RELAY):
        if not os.path.exists(b):
            raise SystemExit(f"{b} is missing: run cargo build --release first")
    work = tempfile.mkdtemp(prefix="convey-compress-bench-")
    try:
        corpus = os.path.join(work, "corpus")
        build_corpus(corpus)
        noise = os.path.join(work, "random.bin")
        write_random(noise, args.random_mib << 20)
        print(f"every link {args.rate} both ways; medians of {args.rounds} round(s), taking turns")
        print(f"{'payload':>22} {'MiB':>6} {'zstd s':>7} {'raw s':>7} {'time x':>7} "
              f"{'zstd wire MiB':>14} {'raw wire MiB':>13} {'bytes x':>8}")
        for name, payload in [("headers + docs", corpus), ("random", noise)]:
            runs = {True: [], False: []}
            for _ in range(args.rounds):
                for compress in (True, False):
                    runs[compress].append(run_once(payload, compress, args.rate, work))
            (zt, zb), (rt, rb) = [
                (statistics.median(r[0] for r in runs[c]), statistics.median(r[1] for r in runs[c]))
                for c in (True, False)]
            print(f"{name:>22} {tree_bytes(payload) / 2**20:>6.0f} {zt:>7.1f} {rt:>7.1f} {zt / rt:>7.3f} "
                  f"{zb / 2**20:>14.1f} {rb / 2**20:>13.1f} {zb / rb:>8.3f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
