#!/usr/bin/env python3
"""Bounded load benchmark of the relay on loopback (a benchmark, not a test; prints figures).

1. Tracker: wrk drives 10,000 simulated peers announcing over 100 swarms for 20 s
   (bench/announce.lua) against convey-relay (--open-tracker) and against Debian's
   opentracker (whitelisted for the same 100 hashes) in the same run, taking turns for
   --rounds rounds each so that drift in the machine's speed hits both alike. Reports
   announces per second, p99 latency, server CPU per announce and server RSS, per round
   and the medians.
2. Rendezvous: 5,000 concurrent sessions each allocate a code and wait; reports the relay's
   RSS with all 5,000 waiting and how long opening them took.

Needs wrk and opentracker (apt-get install wrk opentracker). Builds the release relay.
Usage: python3 bench/relay_load.py [--seconds 20] [--rounds 3] [--sessions 5000] [--connections 64]
"""

import argparse
import asyncio
import base64
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid, key="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait_port(port, proc, what):
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


def swarm_hash(i):
    # The same bytes bench/announce.lua uses: byte j = (i*131 + j*17 + 7) mod 256.
    return bytes((i * 131 + j * 17 + 7) % 256 for j in range(1, 21))


def check_announce(port):
    """One announce by hand: the server must answer with peers, not a failure."""
    h = "".join(f"%{b:02X}" for b in swarm_hash(1))
    q = f"/announce?info_hash={h}&peer_id=-BENCH0-abcdefghijkl&port=9&left=0&compact=1"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {q} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    if b"failure reason" in reply or b"peers" not in reply:
        sys.exit(f"announce refused on port {port}: {reply[-200:]!r}")


def run_wrk(port, seconds, connections):
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", os.path.join(ROOT, "bench", "announce.lua"), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests": requests, "rps": rps, "p99_ms": float(p99.group(1)) * scale,
        "non2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "none",
    }


def measure(name, proc, port, seconds, connections):
    wait_port(port, proc, name)
    check_announce(port)
    cpu0 = cpu_seconds(proc.pid)
    r = run_wrk(port, seconds, connections)
    cpu = cpu_seconds(proc.pid) - cpu0
    r.update(name=name, cpu_us=cpu / max(r["requests"], 1) * 1e6, rss=rss_mib(proc.pid, "VmHWM"))
    return r


async def rendezvous_session(port, opened, hold):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (f"GET /v1/rendezvous HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
         f"Sec-WebSocket-Protocol: convey-v1\r\n\r\n").encode())
    payload = b'{"type":"allocate"}'
    writer.write(bytes([0x81, 0x80 | len(payload), 0, 0, 0, 0]) + payload)
    await writer.drain()
    seen = b""
    while b'"claimed"' not in seen:
        chunk = await reader.read(4096)
        if not chunk:
            raise RuntimeError(f"relay closed a session: {seen[-200:]!r}")
        seen += chunk
    opened.append(1)
    await hold.wait()
    writer.close()


async def rendezvous_load(port, sessions):
    opened, hold = [], asyncio.Event()
    began = time.time()
    tasks = []
    for i in range(sessions):
        tasks.append(asyncio.create_task(rendezvous_session(port, opened, hold)))
        if i % 200 == 199:
            await asyncio.sleep(0)  # let the handshakes progress
    while len(opened) < sessions:
        if any(t.done() and t.exception() for t in tasks):
            raise next(t.exception() for t in tasks if t.done() and t.exception())
        if time.time() - began > 120:
            raise RuntimeError(f"only {len(opened)} of {sessions} sessions opened in 120 s")
        await asyncio.sleep(0.05)
    took = time.time() - began
    return took, hold, tasks


def tracker_round_relay(relay_bin, args):
    port = free_port()
    relay = subprocess.Popen(
        [relay_bin, "--listen", f"127.0.0.1:{port}", "--stun-listen", "off", "--open-tracker",
         "--rate-per-minute", "0"],
        stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    try:
        return measure("convey-relay", relay, port, args.seconds, args.connections)
    finally:
        relay.terminate()
        relay.wait(timeout=30)


def tracker_round_opentracker(root, args):
    port = free_port()
    ot = subprocess.Popen(
        ["opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(port),
         "-d", root, "-w", "/whitelist.txt"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)  # the whitelist loads in a background thread
        return measure("opentracker", ot, port, args.seconds, args.connections)
    finally:
        ot.terminate()
        ot.wait(timeout=30)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=5000)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    for tool in ("wrk", "opentracker"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed: apt-get install {tool}")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.sessions + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "convey-relay"], cwd=ROOT, check=True)
    relay_bin = os.path.join(target, "release", "convey-relay")

    # The two servers take turns, `--rounds` times each, so drift in the machine's speed
    # (a shared VM) hits both alike; the medians are compared.
    rounds = {"convey-relay": [], "opentracker": []}
    with tempfile.TemporaryDirectory() as root:
        os.chmod(root, 0o755)
        with open(os.path.join(root, "whitelist.txt"), "w") as f:
            for i in range(1, 101):
                f.write(swarm_hash(i).hex() + "\n")
        for _ in range(args.rounds):
            rounds["convey-relay"].append(tracker_round_relay(relay_bin, args))
            rounds["opentracker"].append(tracker_round_opentracker(root, args))

    print(f"tracker: 10,000 peers over 100 swarms, {args.seconds} s a round, {args.rounds} rounds "
          f"each taking turns, wrk 1 thread {args.connections} connections, loopback, "
          f"{os.cpu_count()} cores")
    header = (f"{'server':<14}{'announces/s':>13}{'p99 ms':>9}{'CPU us/announce':>17}"
              f"{'peak RSS MiB':>14}{'non-2xx':>9}  socket errors")
    print(header)
    for name, rs in rounds.items():
        for r in rs:
            print(f"  {r['name']:<12}{r['rps']:>13,.0f}{r['p99_ms']:>9.2f}{r['cpu_us']:>17.1f}"
                  f"{r['rss']:>14.1f}{r['non2xx']:>9}  {r['socket_errors']}")
    print("median of the rounds:")
    for name, rs in rounds.items():
        med = lambda key: statistics.median(r[key] for r in rs)
        print(f"{name:<14}{med('rps'):>13,.0f}{med('p99_ms'):>9.2f}{med('cpu_us'):>17.1f}"
              f"{max(r['rss'] for r in rs):>14.1f}{sum(r['non2xx'] for r in rs):>9}")

    port = free_port()
    relay = subprocess.Popen(
        [relay_bin, "--listen", f"127.0.0.1:{port}", "--stun-listen", "off",
         "--rate-per-minute", "0", "--max-nameplates", str(args.sessions + 100)],
        stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    try:
        wait_port(port, relay, "convey-relay")
        idle_rss = rss_mib(relay.pid)
        loop = asyncio.new_event_loop()
        took, hold, tasks = loop.run_until_complete(rendezvous_load(port, args.sessions))
        time.sleep(1)
        rss = rss_mib(relay.pid)
        hold.set()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()
        print(f"rendezvous: {args.sessions} sessions waiting on their codes: relay RSS {rss:.1f} MiB "
              f"(idle {idle_rss:.1f} MiB, {(rss - idle_rss) * 1024 / args.sessions:.1f} KiB a session); "
              f"opened in {took:.1f} s")
    finally:
        relay.terminate()
        relay.wait(timeout=30)


if __name__ == "__main__":
    main()
