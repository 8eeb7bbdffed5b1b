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
    let mut c = bin();
    c.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("CONVEY_CONFIG")
        .env_remove("CONVEY_CODE")
        .env("CONVEY_RELAY", relay.local_addr().to_string());
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
