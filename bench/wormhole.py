#!/usr/bin/env python3
"""Benchmark: convey against magic-wormhole, in the same run, taking turns.

It installs magic-wormhole, its mailbox server and its transit relay from PyPI into a
virtualenv (/var/tmp/convey-bench-wormhole, reused), then re-runs itself inside a network
namespace it creates with only a loopback interface (root needed), so every server is on
127.0.0.1 and nothing leaves the machine. There it runs, for each size and each round:
convey (sender, then its receiver as soon as the code is printed: a waiting receiver), and
magic-wormhole the same way (with a pre-agreed code, direct transit), alternating.

For each run it prints the receiver's total time (receiver start -> files in place, exit),
the first-byte time (receiver start -> the first received bytes on disk, polled every 5 ms
from the allocated blocks under the output folder), the rate after the first byte, and the
CPU seconds of each side. Files are received into a tmpfs folder, so the disk is not what is
measured (convey flushes what it received before it says done; magic-wormhole does not).
Then the medians and the ratios convey / magic-wormhole. At the first-byte-only sizes
(--first-byte-gib, default 8) both are stopped once the first bytes arrived.

Usage (root): python3 bench/wormhole.py [--size-mib 1024] [--rounds 3] [--first-byte-gib 8]
Uses the release binaries in $CARGO_TARGET_DIR (cargo build --release). Figures only.
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from transfer import TARGET, reap, write_random  # noqa: E402

VENV = "/var/tmp/convey-bench-wormhole"
PACKAGES = ["magic-wormhole", "magic-wormhole-mailbox-server", "magic-wormhole-transit-relay"]
NS = "convey-bench-wh"
CONVEY = os.path.join(TARGET, "release", "convey")
RELAY = os.path.join(TARGET, "release", "convey-relay")


def venv():
    """The virtualenv with magic-wormhole and its servers, created on first use."""
    py = os.path.join(VENV, "bin", "python")
    if not os.path.exists(os.path.join(VENV, "bin", "wormhole")):
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return os.path.join(VENV, "bin")


def allocated(path):
    """Bytes allocated under `path` (st_blocks), hidden staging folders included."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


class FirstByte:
    """Polls `out` until something is allocated there; records when."""

    def __init__(self, out):
        self.out, self.at, self.stop = out, None, False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop and self.at is None:
            if allocated(self.out) > 0:
                self.at = time.time()
            time.sleep(0.005)


def wait_port(port, limit=10):
    import socket
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port}")


def kill(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def run_tool(tool, src, out, bins, first_byte_only):
    """One transfer with `tool`; returns its figures."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    env = dict(os.environ, CONVEY_LAN="off", HOME=os.path.dirname(out))
    if tool == "convey":
        code = "7-pilot-planet-canyon"
        send = [CONVEY, "send", "--relay", "127.0.0.1:4790", "--code", code, src]
        recv = [CONVEY, "receive", "--yes", "--relay", "127.0.0.1:4790", "--out", out, code]
    else:
        code = "7-pilot-planet"
        common = [os.path.join(bins, "wormhole"), "--relay-url", "ws://127.0.0.1:4000/v1",
                  "--transit-helper", "tcp:127.0.0.1:4001"]
        send = common + ["send", "--code", code, src]
        recv = common + ["receive", "--accept-file", "--output-file",
                         os.path.join(out, os.path.basename(src)), code]
    sender = subprocess.Popen(send, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    # Start the receiver once the code is out: a waiting receiver (or a CI job).
    for line in sender.stdout:
        if code in line:
            break
    threading.Thread(target=sender.stdout.read, daemon=True).start()
    t0 = time.time()
    receiver = subprocess.Popen(recv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    fb = FirstByte(out)
    if first_byte_only:
        deadline = time.time() + 120
        while fb.at is None and time.time() < deadline:
            time.sleep(0.01)
        kill(receiver)
        kill(sender)
        return {"first_s": (fb.at or float("nan")) - t0}
    rru = reap(receiver, 900)
    t1 = time.time()
    fb.stop = True
    sru = reap(sender, 120)
    if receiver.returncode != 0 or sender.returncode != 0:
        raise SystemExit(f"{tool}: sender exit {sender.returncode}, receiver exit {receiver.returncode}")
    got = os.path.join(out, os.path.basename(src))
    if os.path.getsize(got) != os.path.getsize(src):
        raise SystemExit(f"{tool}: size mismatch")
    first = (fb.at or t1) - t0
    size = os.path.getsize(src)
    return {
        "total_s": t1 - t0,
        "first_s": first,
        "rate_mbs": size / 1e6 / max(1e-9, (t1 - t0) - first),
        "send_cpu_s": sru.ru_utime + sru.ru_stime,
        "recv_cpu_s": rru.ru_utime + rru.ru_stime,
    }


def servers(bins, work):
    """The convey relay and magic-wormhole's mailbox and transit relay, on 127.0.0.1."""
    procs = [
        subprocess.Popen([RELAY, "--listen", "127.0.0.1:4790", "--stun-listen", "127.0.0.1:3478"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([os.path.join(bins, "twist"), "wormhole-mailbox", "--port", "tcp:4000:interface=127.0.0.1",
                          "--channel-db", os.path.join(work, "channel.db"), "--usage-db", os.path.join(work, "usage.db")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work),
        subprocess.Popen([os.path.join(bins, "twist"), "transitrelay", "--port", "tcp:4001:interface=127.0.0.1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=work),
    ]
    for port in (4790, 4000, 4001):
        wait_port(port)
    return procs


def inner(a):
    bins = venv()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = tempfile.mkdtemp(prefix="convey-bench-wh-")
    shm = tempfile.mkdtemp(prefix="convey-bench-wh-", dir="/dev/shm")
    procs = []
    try:
        procs = servers(bins, work)
        src = os.path.join(work, "payload.bin")
        write_random(src, a.size_mib << 20)
        out = os.path.join(shm, "out")
        results = {"convey": [], "magic-wormhole": []}
        for r in range(a.rounds):
            order = ["convey", "magic-wormhole"] if r % 2 == 0 else ["magic-wormhole", "convey"]
            for tool in order:
                res = run_tool(tool, src, out, bins, False)
                results[tool].append(res)
                print(f"round {r + 1} {tool:15} total {res['total_s']:6.2f} s  first byte {res['first_s']:5.2f} s"
                      f"  {res['rate_mbs']:5.0f} MB/s after it  CPU sender {res['send_cpu_s']:5.2f} s"
                      f"  receiver {res['recv_cpu_s']:5.2f} s", flush=True)
        med = {t: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for t, rs in results.items()}
        c, w = med["convey"], med["magic-wormhole"]
        gib = (a.size_mib << 20) / (1 << 30)
        print(f"\n{a.size_mib} MiB, receiver waiting, medians of {a.rounds}:")
        print(f"  {'':15} {'total s':>8} {'first byte s':>13} {'MB/s after':>11} {'sender CPU s':>13} {'receiver CPU s':>15}")
        for t, m in (("convey", c), ("magic-wormhole", w)):
            print(f"  {t:15} {m['total_s']:8.2f} {m['first_s']:13.2f} {m['rate_mbs']:11.0f} {m['send_cpu_s']:13.2f} {m['recv_cpu_s']:15.2f}")
        print(f"  convey / magic-wormhole: total {c['total_s'] / w['total_s']:.2f}x (target <= 0.8x),"
              f" first byte {c['first_s'] / w['first_s']:.2f}x,"
              f" sender CPU {c['send_cpu_s'] / gib:.2f} s/GiB and receiver {c['recv_cpu_s'] / gib:.2f} s/GiB (targets <= 4.5)")
        os.remove(src)
        if a.first_byte_gib:
            big = os.path.join(work, "big.bin")
            write_random(big, a.first_byte_gib << 30)
            firsts = {"convey": [], "magic-wormhole": []}
            for r in range(a.rounds):
                for tool in (["convey", "magic-wormhole"] if r % 2 == 0 else ["magic-wormhole", "convey"]):
                    firsts[tool].append(run_tool(tool, big, out, bins, True)["first_s"])
            fc, fw = (statistics.median(firsts[t]) for t in ("convey", "magic-wormhole"))
            print(f"\n{a.first_byte_gib} GiB, first byte only, medians of {a.rounds}: convey {fc:.2f} s,"
                  f" magic-wormhole {fw:.2f} s (convey at {a.size_mib} MiB: {c['first_s']:.2f} s)")
    finally:
        for p in procs:
            kill(p)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(shm, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--first-byte-gib", type=int, default=8)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inner:
        return inner(a)
    if os.geteuid() != 0:
        raise SystemExit("bench/wormhole.py needs root: it builds a loopback-only network namespace")
    for b in (CONVEY, RELAY):
        if not os.path.exists(b):
            raise SystemExit(f"{b} is missing: cargo build --release first (CARGO_TARGET_DIR={TARGET})")
    venv()
    subprocess.run(["ip", "netns", "del", NS], stderr=subprocess.DEVNULL)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        args = [sys.executable, os.path.abspath(__file__), "--inner", "--size-mib", str(a.size_mib),
                "--rounds", str(a.rounds), "--first-byte-gib", str(a.first_byte_gib)]
        return subprocess.run(["ip", "netns", "exec", NS, *args]).returncode
    finally:
        subprocess.run(["ip", "netns", "del", NS])


if __name__ == "__main__":
    sys.exit(main())
