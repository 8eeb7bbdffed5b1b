#!/usr/bin/env python3
"""Bounded soak (a benchmark, not a test; prints figures): many concurrent transfers of
mixed paths through one relay, and one relay restart in the middle.

It starts the release convey-relay on 127.0.0.1, then --transfers pairs at once (each a
pre-agreed code; a third forced onto direct, a third onto WebRTC, a third onto the relay
tunnel), each a --size-mib random file paced with --limit-rate so that every transfer is
still running when, --restart-after seconds in, the relay is killed with SIGKILL and started
again on the same port 2 s later. It prints how many transfers completed byte-identical
(goal: all), per path, how long the whole took, the exit codes of any that failed, and the
relay's peak RSS and CPU seconds (both relay processes, before and after the restart).

Usage: python3 bench/soak.py [--transfers 50] [--size-mib 8] [--rate 1M] [--restart-after 4]
Uses the release binaries in $CARGO_TARGET_DIR (cargo build --release). Everything stays on
127.0.0.1 and in a temporary folder removed afterwards; every process it started is killed
by PID at the end, whatever happened.
"""
import argparse, collections, filecmp, os, signal, socket, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from transfer import TARGET, write_random  # noqa: E402

CONVEY = os.path.join(TARGET, "release", "convey")
RELAY = os.path.join(TARGET, "release", "convey-relay")
TICK = os.sysconf("SC_CLK_TCK")
PATHS = ["direct", "webrtc", "relay"]
WORDS = ["otter", "canyon", "pilot", "planet", "purple", "amber", "violet", "harbor"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RelayWatch:
    """A relay process, and its peak RSS and CPU sampled every 50 ms until it exits."""

    def __init__(self, port):
        addr = f"127.0.0.1:{port}"
        # Every code of the soak comes from 127.0.0.1: no per-address limit on new codes.
        self.proc = subprocess.Popen([RELAY, "--listen", addr, "--stun-listen", addr, "--rate-per-minute", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "RUST_LOG": "warn"})
        self.peak_kib, self.cpu = 0, 0.0
        deadline = time.time() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("soak: the relay never listened")
                time.sleep(0.05)
        self.t = threading.Thread(target=self.sample, daemon=True)
        self.t.start()

    def sample(self):
        while self.proc.poll() is None:
            try:
                with open(f"/proc/{self.proc.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            self.peak_kib = max(self.peak_kib, int(line.split()[1]))
                with open(f"/proc/{self.proc.pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                    self.cpu = (int(fields[11]) + int(fields[12])) / TICK
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.05)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.t.join(timeout=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--transfers", type=int, default=50)
    ap.add_argument("--size-mib", type=int, default=8)
    ap.add_argument("--rate", default="1M")
    ap.add_argument("--restart-after", type=float, default=4.0)
    ap.add_argument("--limit", type=float, default=300.0, help="seconds before stragglers are killed")
    a = ap.parse_args()
    for b in (CONVEY, RELAY):
        if not os.path.exists(b):
            raise SystemExit(f"soak: {b} is missing: cargo build --release")
    port = free_port()
    procs = []
    with tempfile.TemporaryDirectory(prefix="convey-soak-") as tmp:
        src = os.path.join(tmp, "in.bin")
        write_random(src, a.size_mib << 20)
        env = {**os.environ, "CONVEY_LAN": "off", "CONVEY_RELAY": f"127.0.0.1:{port}"}
        relays = [RelayWatch(port)]
        pairs = []
        started = time.time()
        try:
            for i in range(a.transfers):
                path = PATHS[i % len(PATHS)]
                code = f"{i + 2}-{WORDS[i % 8]}-{WORDS[(i // 8) % 8]}-{WORDS[(i * 3 + 1) % 8]}"
                home, out = os.path.join(tmp, f"h{i}"), os.path.join(tmp, f"o{i}")
                os.makedirs(home)
                os.makedirs(out)
                e = {**env, "HOME": home, "CONVEY_CODE": code}
                s = subprocess.Popen([CONVEY, "send", "--transport", path, "--limit-rate", a.rate, src],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=e)
                procs.append(s)
                r = subprocess.Popen([CONVEY, "receive", "--yes", "--transport", path, "--wait", "60s",
                                      "--out", out, code],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, f"r{i}.err"), "w"),
                                     env=e)
                procs.append(r)
                pairs.append((path, s, r, out))
            time.sleep(max(0.0, a.restart_after - (time.time() - started)))
            running = sum(1 for _, s, r, _ in pairs if r.poll() is None)
            relays[0].kill()
            time.sleep(2)
            relays.append(RelayWatch(port))
            deadline = started + a.limit
            for _, s, r, _ in pairs:
                for p in (r, s):
                    try:
                        p.wait(timeout=max(0.1, deadline - time.time()))
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            took = time.time() - started
            done = collections.Counter()
            failed = []
            for i, (path, s, r, out) in enumerate(pairs):
                got = os.path.join(out, "in.bin")
                ok = r.returncode == 0 and s.returncode == 0 and os.path.exists(got) \
                    and filecmp.cmp(src, got, shallow=False)
                if ok:
                    done[path] += 1
                else:
                    with open(os.path.join(tmp, f"r{i}.err")) as f:
                        last = (f.read().strip().splitlines() or [""])[-1][:160]
                    failed.append((i, path, r.returncode, s.returncode, last))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            for rw in relays:
                rw.kill()
    total = sum(done.values())
    print(f"soak: {a.transfers} transfers of {a.size_mib} MiB at {a.rate}/s, relay killed and restarted "
          f"{a.restart_after:.0f} s in ({running} still running then)")
    print(f"completed byte-identical: {total} of {a.transfers} "
          + " ".join(f"{p}={done[p]}/{sum(1 for q, *_ in pairs if q == p)}" for p in PATHS))
    print(f"time until all ended: {took:.1f} s")
    print(f"relay peak RSS: {max(r.peak_kib for r in relays) / 1024:.1f} MiB; "
          f"relay CPU: {sum(r.cpu for r in relays):.2f} s (before the restart {relays[0].cpu:.2f} s)")
    for i, path, rc, sc, last in failed:
        print(f"  failed #{i} on {path}: receiver exit {rc}, sender exit {sc}: {last}")
    return 0 if total == a.transfers else 1


if __name__ == "__main__":
    sys.exit(main())
