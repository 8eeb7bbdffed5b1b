#!/usr/bin/env python3
"""Benchmark: send one random file on loopback with the release binaries and print
wall time, MB/s, time until the code is printed, peak RSS, CPU seconds and extra disk
written by each side.

Usage: python3 bench/transfer.py [--size-mib 1024] [--runs 1] [--typing-delay 5]
                                [--transport auto|direct|webrtc|relay]
With --transport, both sides are forced onto that path; the relay's CPU seconds during the
run are printed too (it carries the bytes on the relay path).
Everything stays on 127.0.0.1 and in a temporary folder that is removed afterwards.
"""
import argparse, json, os, re, shutil, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))


def write_random(path, size):
    """`size` random bytes at `path`, on disk before the runs (a receiver's final flush
    must not pay for writing the source)."""
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        os.fsync(f.fileno())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_bytes(pid):
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Watch:
    """Samples a process's write_bytes until it exits (the last sample is kept)."""

    def __init__(self, proc):
        self.proc, self.last = proc, 0
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def alive(self):
        # Not Popen.poll(): that would reap the child and lose its rusage for wait4().
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def run(self):
        while self.alive():
            v = write_bytes(self.proc.pid)
            if v is not None:
                self.last = v
            time.sleep(0.02)


def reap(proc, limit):
    deadline = time.time() + limit
    while time.time() < deadline:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return ru
        time.sleep(0.01)
    proc.kill()
    raise SystemExit(f"process {proc.args} did not finish in {limit}s")


def cpu_split(pid):
    """(user, system) CPU seconds of `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid):
    return sum(cpu_split(pid))


def run_once(size, work, relay_addr, typing_delay, transport):
    src = os.path.join(work, "payload.bin")
    out = os.path.join(work, "out")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    convey = os.path.join(TARGET, "release", "convey")
    t_send = time.time()
    sender = subprocess.Popen([convey, "send", "--transport", transport, "--relay", relay_addr, src],
                              stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, cwd=work)
    sw = Watch(sender)
    line = sender.stdout.readline()
    t_code = time.time()
    m = re.match(r"Code: (\S+)", line)
    if not m:
        raise SystemExit(f"sender printed {line!r}")
    threading.Thread(target=lambda: sender.stdout.read(), daemon=True).start()
    time.sleep(typing_delay)  # the person on the other side typing the code
    t_recv = time.time()
    receiver = subprocess.Popen([convey, "receive", "--yes", "--json", "--transport", transport,
                                 "--relay", relay_addr, "--out", out, m.group(1)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work)
    rw = Watch(receiver)
    rru = reap(receiver, 600)
    t_done = time.time()
    rout = receiver.stdout.read()
    if receiver.returncode != 0:
        raise SystemExit(f"receive failed: {receiver.stderr.read()}")
    sru = reap(sender, 60)
    if sender.returncode != 0:
        raise SystemExit("send failed")
    if os.path.getsize(os.path.join(out, "payload.bin")) != size:
        raise SystemExit("size mismatch")
    done = [e for e in map(json.loads, rout.splitlines()) if e.get("event") == "done"]
    return {
        "code_ms": (t_code - t_send) * 1000,
        "wall_s": t_done - t_recv,
        "transfer_s": done[0]["seconds"] if done else float("nan"),
        "send_rss_mib": sru.ru_maxrss / 1024,
        "recv_rss_mib": rru.ru_maxrss / 1024,
        "send_cpu_s": sru.ru_utime + sru.ru_stime,
        "recv_cpu_s": rru.ru_utime + rru.ru_stime,
        "send_extra_disk": sw.last,
        "recv_extra_disk": max(0, rw.last - size),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--transport", default="auto", choices=["auto", "direct", "webrtc", "relay"])
    ap.add_argument("--typing-delay", type=float, default=0.0,
                    help="seconds between the code appearing and the receiver starting")
    a = ap.parse_args()
    if not a.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "convey", "-p", "convey-relay"],
                       cwd=ROOT, check=True)
    size = a.size_mib << 20
    work = tempfile.mkdtemp(prefix="convey-bench-")
    relay = None
    try:
        write_random(os.path.join(work, "payload.bin"), size)
        port = free_port()
        relay = subprocess.Popen([os.path.join(TARGET, "release", "convey-relay"), "--listen", f"127.0.0.1:{port}",
                                  "--stun-listen", "127.0.0.1:0"],
                                 stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        rru_before = None
        for i in range(a.runs):
            relay_cpu = cpu_split(relay.pid)
            r = run_once(size, work, f"127.0.0.1:{port}", a.typing_delay, a.transport)
            relay_user, relay_sys = (b - a for a, b in zip(relay_cpu, cpu_split(relay.pid)))
            relay_cpu = relay_user + relay_sys
            mb = size / 1e6
            print(f"run {i + 1}: {a.size_mib} MiB on loopback over {a.transport}, receiver started {a.typing_delay:g} s after the code")
            print(f"  code printed after      {r['code_ms']:8.1f} ms   (target < 200 ms)")
            print(f"  receiver wall time      {r['wall_s']:8.2f} s    {mb / r['wall_s']:7.0f} MB/s  (receiver start -> verified file)")
            print(f"  transfer phase          {r['transfer_s']:8.2f} s    {mb / r['transfer_s']:7.0f} MB/s  (offer accepted -> verified file; target >= 500 MB/s)")
            print(f"  peak RSS  sender {r['send_rss_mib']:6.1f} MiB   receiver {r['recv_rss_mib']:6.1f} MiB   (target < 100 MiB)")
            print(f"  CPU       sender {r['send_cpu_s']:6.2f} s     receiver {r['recv_cpu_s']:6.2f} s     relay {relay_cpu:6.2f} s (user {relay_user:.2f}, system {relay_sys:.2f})")
            print(f"  extra disk written: sender {r['send_extra_disk']} B, receiver {r['recv_extra_disk']} B beyond the file (target sender 0)")
    finally:
        if relay:
            relay.terminate()
            relay.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
