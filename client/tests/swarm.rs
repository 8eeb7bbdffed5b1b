//! One code, many receivers, between real `convey` processes on namespace hosts this test
//! creates: a switch namespace with a bridge, a sender host, a relay host and four receiver
//! hosts on 198.18.0.0/24, every host's link capped at 100 Mbit/s both ways with `tc tbf`
//! (on the host's end and on the bridge's end of its veth). The sender's bytes out are read
//! from its interface counters. Needs root, `ip` and `tc`; it fails loudly when it cannot
//! set up, it never skips.

mod common;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{BIN, Bridge, NamespaceRelay, wait_with_timeout, write_random};
use convey_tests::sha256_file as sha;

/// Host indexes on the bridge: `hosts[i]` has 198.18.0.{i+1}.
const SENDER: usize = 0;
const RELAY: usize = 1;
const RECEIVERS: [usize; 4] = [2, 3, 4, 5];
/// Each link's rate, both ways.
const RATE: &str = "100mbit";

/// The hosts on their capped bridge, and the relay on its host.
struct Switch {
    // Declared first: the relay stops before its namespace goes.
    relay: NamespaceRelay,
    net: Bridge,
}

impl Switch {
    fn new(count: usize) -> Self {
        let net = Bridge::new("cvw", count);
        net.cap_links(RATE);
        Self {
            relay: NamespaceRelay::start(&net.hosts[RELAY]),
            net,
        }
    }

    fn relay_addr(&self) -> String {
        format!("198.18.0.{}:{}", RELAY + 1, self.relay.port)
    }

    /// `convey ARGS` on host `i`, with its own HOME and the relay host's relay.
    fn convey(&self, i: usize, home: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.net.hosts[i], BIN])
            .env("HOME", home)
            .env("CONVEY_LAN", "off")
            .env("CONVEY_RELAY", self.relay_addr())
            .env_remove("CONVEY_CONFIG")
            .env_remove("CONVEY_CODE")
            .env_remove("XDG_CONFIG_HOME");
        c
    }
}

/// Start `convey send --receivers 4 FILE` on the sender host; returns it and its code.
fn start_sender(net: &Switch, home: &Path, file: &Path) -> (Child, String) {
    let mut child = net
        .convey(SENDER, home)
        .args(["send", "--receivers", "4", "--json"])
        .arg(file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn convey send");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let start = Instant::now();
    let code = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the sender printed no code"
        );
        let mut l = String::new();
        assert!(
            reader.read_line(&mut l).expect("read") > 0,
            "the sender exited early"
        );
        let v: serde_json::Value = serde_json::from_str(&l).expect("JSON event");
        if v["event"] == "code" {
            break v["code"].as_str().expect("code").to_owned();
        }
    };
    std::thread::spawn(move || for _ in reader.lines() {});
    (child, code)
}

/// Start a receiver on host `i` into `out`; its JSON events go to a file read by `seen`.
fn start_receiver(net: &Switch, i: usize, home: &Path, out: &Path, code: &str, log: &Path) -> Child {
    std::fs::create_dir_all(out).expect("mkdir out");
    net.convey(i, home)
        .args(["receive", "--yes", "--json", "--seed-for", "60s", "--out"])
        .arg(out)
        .arg(code)
        .stdout(std::fs::File::create(log).expect("log"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn convey receive")
}

fn seen(log: &Path, event: &str) -> bool {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| v["event"] == event)
}

const SIZE: usize = 128 << 20;

/// Four receivers on one code, 100 Mbit/s links: all four get the file byte-identical, and
/// the sender uploads at most twice the content (the receivers serve each other the rest).
#[test]
fn four_receivers_swarm_and_the_sender_uploads_at_most_twice_the_content() {
    let net = Switch::new(6);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("swarm.bin");
    write_random(&file, SIZE);
    let want = sha(&file);
    let before = net.net.tx_bytes(SENDER);
    let (mut sender, code) = start_sender(&net, dir.path(), &file);
    let mut receivers: Vec<(Child, std::path::PathBuf)> = RECEIVERS
        .iter()
        .map(|&i| {
            let out = dir.path().join(format!("out{i}"));
            let log = dir.path().join(format!("log{i}"));
            (start_receiver(&net, i, dir.path(), &out, &code, &log), out)
        })
        .collect();
    for (child, out) in &mut receivers {
        let status = wait_with_timeout(child, Duration::from_secs(240));
        assert!(status.success(), "receiver failed: {status}");
        assert_eq!(sha(&out.join("swarm.bin")), want, "byte-identical");
    }
    let status = wait_with_timeout(&mut sender, Duration::from_secs(30));
    assert!(status.success(), "sender: {status}");
    let sent = net.net.tx_bytes(SENDER) - before;
    eprintln!(
        "swarm: the sender sent {sent} bytes for {SIZE} bytes of content ({:.2}x)",
        sent as f64 / SIZE as f64
    );
    assert!(
        sent <= 2 * SIZE as u64,
        "the sender uploaded {sent} bytes, more than twice the {SIZE}-byte content"
    );
}

/// The sender is killed right after the first receiver completes; the other three still
/// finish, from each other.
#[test]
fn the_sender_stops_after_the_first_receiver_and_the_others_still_finish() {
    let net = Switch::new(6);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("swarm.bin");
    write_random(&file, SIZE);
    let want = sha(&file);
    let (mut sender, code) = start_sender(&net, dir.path(), &file);
    let mut receivers: Vec<(Child, std::path::PathBuf, std::path::PathBuf)> = RECEIVERS
        .iter()
        .map(|&i| {
            let out = dir.path().join(format!("out{i}"));
            let log = dir.path().join(format!("log{i}"));
            (start_receiver(&net, i, dir.path(), &out, &code, &log), out, log)
        })
        .collect();
    let start = Instant::now();
    while !receivers.iter().any(|(_, _, log)| seen(log, "seeding")) {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "no receiver completed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = sender.kill();
    let _ = sender.wait();
    for (child, out, _) in &mut receivers {
        let status = wait_with_timeout(child, Duration::from_secs(240));
        assert!(
            status.success(),
            "receiver failed after the sender left: {status}"
        );
        assert_eq!(sha(&out.join("swarm.bin")), want, "byte-identical");
    }
}
