//! LAN discovery between real `convey` processes on namespace hosts this test creates: a
//! switch namespace with a bridge, and hosts on it with 198.18.0.0/24 addresses (multicast
//! flows between them as on a real LAN, and nowhere else). Neither side is given a relay:
//! the sender embeds one and advertises it over multicast DNS, the receiver finds it by the
//! code's number. Needs root, `ip` and `nft`; it fails loudly when it cannot set up.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{BIN, Bridge, run, wait_with_timeout, write_random};

/// Hosts on one bridge: `hosts[i]` has 198.18.0.{i+1}.
struct Lan {
    net: Bridge,
}

impl Lan {
    fn new(count: usize) -> Self {
        Self {
            net: Bridge::new("cvl", count),
        }
    }

    /// `convey ARGS` on host `i`, with LAN discovery on and no relay configured.
    fn convey(&self, i: usize, home: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.net.hosts[i], BIN])
            .env("HOME", home)
            .env("CONVEY_LAN", "on")
            .env_remove("CONVEY_RELAY")
            .env_remove("CONVEY_CONFIG")
            .env_remove("CONVEY_CODE")
            .env_remove("XDG_CONFIG_HOME");
        c
    }

    /// Drop multicast DNS into and out of host `i`.
    fn block_mdns(&self, i: usize) {
        let ns = &self.net.hosts[i];
        run(&["ip", "netns", "exec", ns, "nft", "add", "table", "inet", "cvl"]);
        for (chain, hook) in [("in", "input"), ("out", "output")] {
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "nft",
                "add",
                "chain",
                "inet",
                "cvl",
                chain,
                &format!("{{ type filter hook {hook} priority 0; }}"),
            ]);
            run(&[
                "ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "cvl", chain, "udp", "dport",
                "5353", "drop",
            ]);
        }
    }
}

/// A sender started on `lan` host `i` with `file`: the child and its code.
struct Sender {
    child: Child,
    code: String,
    lines: Vec<String>,
}

impl Sender {
    fn start(lan: &Lan, i: usize, home: &Path, file: &Path) -> Self {
        let mut child = lan
            .convey(i, home)
            .arg("send")
            .arg(file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn convey send");
        let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
        let mut lines = Vec::new();
        let start = Instant::now();
        // The code, and the line after it that says what to type.
        while lines.len() < 3 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the sender printed no code"
            );
            let mut l = String::new();
            if reader.read_line(&mut l).expect("read") == 0 {
                break;
            }
            lines.push(l.trim_end().to_owned());
        }
        std::thread::spawn(move || for _ in reader.lines() {});
        let code = lines
            .iter()
            .find_map(|l| l.strip_prefix("Code: "))
            .expect("a code")
            .to_owned();
        Self { child, code, lines }
    }

    fn nameplate(&self) -> &str {
        self.code.split('-').next().expect("number")
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn receive(lan: &Lan, i: usize, home: &Path, out: &Path, code: &str) -> Output {
    let mut child = lan
        .convey(i, home)
        .args(["receive", "--yes", "--out"])
        .arg(out)
        .arg(code)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn convey receive");
    wait_with_timeout(&mut child, Duration::from_secs(60));
    child.wait_with_output().expect("output")
}

/// Neither side configured: the file arrives, and the sender said to type only the code.
#[test]
fn receiver_finds_the_sender_on_the_lan() {
    let lan = Lan::new(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("photo.bin");
    write_random(&file, 3 << 20);
    let mut sender = Sender::start(&lan, 0, dir.path(), &file);
    assert!(
        sender
            .lines
            .iter()
            .any(|l| l.ends_with(&format!("convey receive {}", sender.code))),
        "the line to type is just the code: {:?}",
        sender.lines
    );
    assert!(
        sender.lines.iter().any(|l| l.contains("--relay 198.18.0.1:")),
        "with the --relay form as a fallback: {:?}",
        sender.lines
    );
    let out = dir.path().join("out");
    let got = receive(&lan, 1, dir.path(), &out, &sender.code);
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    assert_eq!(
        std::fs::read(out.join("photo.bin")).expect("arrived"),
        std::fs::read(&file).expect("source")
    );
    wait_with_timeout(&mut sender.child, Duration::from_secs(30));
}

/// Multicast blocked: the receiver says within a few seconds that no sender was found on
/// the local network, and names `--relay`.
#[test]
fn without_multicast_the_receiver_says_to_use_relay() {
    let lan = Lan::new(2);
    lan.block_mdns(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f.bin");
    write_random(&file, 1 << 16);
    let sender = Sender::start(&lan, 0, dir.path(), &file);
    let started = Instant::now();
    let got = receive(&lan, 1, dir.path(), &dir.path().join("out"), &sender.code);
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&got.stderr);
    assert_eq!(got.status.code(), Some(7), "{err}");
    assert!(
        err.contains("found on the local network") && err.contains("--relay"),
        "{err}"
    );
    assert!(took < Duration::from_secs(15), "a few seconds, not {took:?}");
    drop(sender);
}

/// Two senders on the LAN holding the same number (pre-agreed codes, here): the receiver
/// says so and asks for `--relay` instead of trying one of them.
#[test]
fn two_senders_on_one_number_are_not_guessed_between() {
    let lan = Lan::new(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("f.bin");
    write_random(&file, 1 << 16);
    let start = |host, code: &str| {
        let mut child = lan
            .convey(host, dir.path())
            .args(["send", "--code", code])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn convey send");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("code line");
        assert!(first.starts_with("Code: "), "{first}");
        child
    };
    let mut a = start(0, "500-purple-otter");
    let mut c = start(2, "500-acid-canyon");
    let got = receive(&lan, 1, dir.path(), &dir.path().join("out"), "500-purple-otter");
    let err = String::from_utf8_lossy(&got.stderr);
    assert_eq!(got.status.code(), Some(7), "{err}");
    assert!(
        err.contains("2 senders on the local network") && err.contains("--relay"),
        "{err}"
    );
    for s in [&mut a, &mut c] {
        let _ = s.kill();
        let _ = s.wait();
    }
}

/// Two senders on one LAN: each receiver reaches the one that holds its code's number.
#[test]
fn two_senders_each_receiver_finds_its_own() {
    let lan = Lan::new(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let (f1, f2) = (dir.path().join("one.bin"), dir.path().join("two.bin"));
    write_random(&f1, 1 << 20);
    write_random(&f2, (1 << 20) + 7);
    let s1 = Sender::start(&lan, 0, dir.path(), &f1);
    // Random nameplates clash 1 time in 990; start the second sender again if they did.
    let s2 = (0..5)
        .map(|_| Sender::start(&lan, 2, dir.path(), &f2))
        .find(|s| s.nameplate() != s1.nameplate())
        .expect("distinct nameplates");
    for (sender, file, out) in [(&s1, &f1, "out1"), (&s2, &f2, "out2")] {
        let out = dir.path().join(out);
        let got = receive(&lan, 1, dir.path(), &out, &sender.code);
        assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
        let name = file.file_name().expect("name");
        assert_eq!(
            std::fs::read(out.join(name)).expect("arrived"),
            std::fs::read(file).expect("source")
        );
    }
}
