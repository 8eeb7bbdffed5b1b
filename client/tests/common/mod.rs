//! Helpers shared by the black-box tests of the `convey` binary: an isolated home folder per
//! test, a real relay on loopback, deterministic random files, bounded waits.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use convey_relay::{Config, Server};

pub const BIN: &str = env!("CARGO_BIN_EXE_convey");

/// A relay on a free loopback port.
pub async fn relay() -> Server {
    Server::spawn(Config::with_listen(SocketAddr::from(([127, 0, 0, 1], 0))))
        .await
        .expect("relay")
}

/// `convey` that never looks on or advertises to the machine's real LAN: tests send
/// traffic only to loopback and to namespaces they create (`lan.rs` turns it on there).
pub fn bin() -> Command {
    let mut c = Command::new(BIN);
    c.env("CONVEY_LAN", "off");
    c
}

/// `convey` with its own HOME (config, state) and relay, so tests never share state.
pub fn convey(home: &Path, relay: &Server) -> Command {
    convey_via(home, &relay.local_addr().to_string())
}

/// `convey` with its own HOME and the relay at `relay` (`host:port`).
pub fn convey_via(home: &Path, relay: &str) -> Command {
    let mut c = bin();
    c.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("CONVEY_CONFIG")
        .env_remove("CONVEY_CODE")
        .env("CONVEY_RELAY", relay);
    c
}

/// Fill `path` with `size` deterministic pseudo-random bytes (xorshift), streaming.
pub fn write_random(path: &Path, size: usize) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create source"));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ size as u64;
    let mut buf = vec![0u8; 1 << 16];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len());
        for b in &mut buf[..n] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        out.write_all(&buf[..n]).expect("write source");
        left -= n;
    }
    out.flush().expect("flush source");
}

pub fn wait_with_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Spawn with stdout piped and stderr kept in a file; read lines until `Code: ` appears.
pub fn spawn_with_code(mut cmd: Command, err_file: &Path) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(err_file).expect("stderr file"))
        .spawn()
        .expect("spawn convey send");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut code = None;
    let start = Instant::now();
    while code.is_none() {
        assert!(start.elapsed() < Duration::from_secs(20), "no code printed");
        let mut l = String::new();
        if reader.read_line(&mut l).expect("read sender output") == 0 {
            panic!(
                "sender exited early: {}",
                std::fs::read_to_string(err_file).unwrap_or_default()
            );
        }
        code = l.trim_end().strip_prefix("Code: ").map(str::to_owned);
    }
    std::thread::spawn(move || for _ in reader.lines() {});
    (child, code.expect("code"))
}

/// Peak resident memory of a running process, in bytes (VmHWM), if it is still alive.
pub fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Every entry under `root`: relative path, kind, permission bits, size, content digest.
pub fn tree_listing(root: &Path) -> Vec<(PathBuf, char, u32, u64, String)> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.expect("walk");
        let m = e.path().symlink_metadata().expect("metadata");
        let rel = e.path().strip_prefix(root).expect("under root").to_owned();
        let mode = m.permissions().mode() & 0o777;
        if m.is_dir() {
            out.push((rel, 'd', mode, 0, String::new()));
        } else {
            let mut h = Sha256::new();
            let mut f = std::fs::File::open(e.path()).expect("open");
            std::io::copy(&mut f, &mut h).expect("hash");
            out.push((rel, 'f', mode, m.len(), hex::encode(h.finalize())));
        }
    }
    out
}

/// Parse JSON event lines from `reader` until `stop` says so (or the stream ends); returns
/// every event read.
pub fn json_events(
    reader: &mut impl BufRead,
    mut stop: impl FnMut(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let v: serde_json::Value = serde_json::from_str(&line).expect("every event line is JSON");
        let done = stop(&v);
        seen.push(v);
        if done {
            break;
        }
    }
    seen
}

/// Start `convey receive --yes --json --out OUT CODE`; returns it and its event stream.
pub fn json_receiver(
    home: &std::path::Path,
    relay: &convey_relay::Server,
    out: &std::path::Path,
    code: &str,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut receiver = convey(home, relay)
        .args(["receive", "--yes", "--json", "--out"])
        .arg(out)
        .arg(code)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("receive");
    let events = BufReader::new(receiver.stdout.take().expect("stdout"));
    (receiver, events)
}

/// `convey send --code CODE ARGS` and a `--json` receiver of CODE into `out`, both run to
/// success (bounded); the receiver's events up to its `done`.
pub fn send_and_receive(
    home: &Path,
    relay: &Server,
    args: &[&std::ffi::OsStr],
    out: &Path,
    code: &str,
) -> Vec<serde_json::Value> {
    let mut send = convey(home, relay);
    send.args(["send", "--code", code]).args(args);
    let (mut sender, _) = spawn_with_code(send, &home.join(format!("send-{code}.err")));
    let (mut receiver, mut events) = json_receiver(home, relay, out, code);
    let seen = json_events(&mut events, |v| v["event"] == "done");
    let limit = Duration::from_secs(120);
    assert!(wait_with_timeout(&mut receiver, limit).success(), "{seen:?}");
    assert!(wait_with_timeout(&mut sender, limit).success());
    seen
}

/// Field `field` (a number) of the first `event` event in `seen`.
pub fn event_number(seen: &[serde_json::Value], event: &str, field: &str) -> u64 {
    seen.iter()
        .find(|v| v["event"] == event)
        .and_then(|v| v[field].as_u64())
        .unwrap_or_else(|| panic!("a {event} event with {field}: {seen:?}"))
}

/// Run a set-up command (`ip`, `nft`) of a network-namespace test: it fails loudly,
/// never skips, when it cannot.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {args:?} ({e}); these tests need root with iproute2 and nftables")
        });
    assert!(
        out.status.success(),
        "{args:?} failed: {}; these tests need root with iproute2 and nftables",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The real relay, in-process, on a thread that entered network namespace `ns`; stopped
/// (and its thread joined) on drop.
pub struct NamespaceRelay {
    pub port: u16,
    stop: Option<(std::thread::JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
}

impl NamespaceRelay {
    pub fn start(ns: &str) -> Self {
        Self::start_on(ns, SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The relay listening on `listen` inside `ns`.
    pub fn start_on(ns: &str, listen: SocketAddr) -> Self {
        Self::start_with(ns, listen, None)
    }

    /// The relay listening on `listen` inside `ns`, keeping its state in the Redis at
    /// `redis_url` if given.
    pub fn start_with(ns: &str, listen: SocketAddr, redis_url: Option<String>) -> Self {
        let ns = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("open netns");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the relay's namespace");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut config = Config::with_listen(listen);
                config.redis_url = redis_url;
                let server = Server::spawn(config).await.expect("relay in its namespace");
                ready_tx.send(server.local_addr().port()).expect("report port");
                let _ = stop_rx.await;
                server.shutdown().await;
            });
        });
        let port = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("relay started");
        Self {
            port,
            stop: Some((thread, stop_tx)),
        }
    }
}

impl Drop for NamespaceRelay {
    fn drop(&mut self) {
        if let Some((thread, stop)) = self.stop.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

static NEXT_BRIDGE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A switch namespace with a bridge, and `count` host namespaces on it: `hosts[i]` has
/// 198.18.0.{i+1}/24 on its interface `nics[i]`. Every namespace goes on drop.
pub struct Bridge {
    pub switch: String,
    pub hosts: Vec<String>,
    pub nics: Vec<String>,
    /// The bridge's end of each host's veth, inside `switch`.
    ports: Vec<String>,
}

impl Bridge {
    /// Names start with `tag` (two or three letters), so each test file's are its own.
    pub fn new(tag: &str, count: usize) -> Self {
        let id = format!(
            "{}{}",
            std::process::id() % 10_000,
            NEXT_BRIDGE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let switch = format!("{tag}s{id}");
        let hosts: Vec<String> = (0..count).map(|i| format!("{tag}{i}{id}")).collect();
        for ns in std::iter::once(&switch).chain(&hosts) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&["ip", "-n", &switch, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &switch, "link", "set", "br0", "up"]);
        let (mut nics, mut ports) = (Vec::new(), Vec::new());
        for (i, host) in hosts.iter().enumerate() {
            let (port, nic) = (format!("p{i}{id}"), format!("e{i}{id}"));
            run(&["ip", "link", "add", &port, "type", "veth", "peer", "name", &nic]);
            run(&["ip", "link", "set", &port, "netns", &switch]);
            run(&["ip", "link", "set", &nic, "netns", host]);
            run(&["ip", "-n", &switch, "link", "set", &port, "master", "br0"]);
            run(&["ip", "-n", &switch, "link", "set", &port, "up"]);
            let addr = format!("198.18.0.{}/24", i + 1);
            run(&["ip", "-n", host, "addr", "add", &addr, "dev", &nic]);
            run(&["ip", "-n", host, "link", "set", &nic, "up"]);
            nics.push(nic);
            ports.push(port);
        }
        Self {
            switch,
            hosts,
            nics,
            ports,
        }
    }

    /// Cap every host's link at `rate` both ways: tbf shapes what leaves an interface, so
    /// both ends of each veth get one.
    pub fn cap_links(&self, rate: &str) {
        for ((host, nic), port) in self.hosts.iter().zip(&self.nics).zip(&self.ports) {
            for (ns, dev) in [(host, nic), (&self.switch, port)] {
                run(&[
                    "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                    "burst", "256kb", "latency", "100ms",
                ]);
            }
        }
    }

    /// Bytes host `i` has sent on its link.
    pub fn tx_bytes(&self, i: usize) -> u64 {
        let stat = format!("/sys/class/net/{}/statistics/tx_bytes", self.nics[i]);
        let out = Command::new("ip")
            .args(["netns", "exec", &self.hosts[i], "cat", &stat])
            .output()
            .expect("read tx_bytes");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a byte count")
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
