//! One code, many receivers, between real `convey` processes on namespace hosts this test
//! creates: a switch namespace with a bridge, a sender host, a relay host and four receiver
//! hosts on 198.18.0.0/24, every host's link capped at 100 Mbit/s both ways with `tc tbf`
//! (on the host's end and on the bridge's end of its veth). The sender's bytes out are read
//! from its interface counters. Needs root, `ip` and `tc`; it fails loudly when it cannot
//! set up, it never skips.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use common::{BIN, run, wait_with_timeout, write_random};
use convey_relay::{Config, Server};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Host indexes on the bridge: `hosts[i]` has 198.18.0.{i+1}.
const SENDER: usize = 0;
const RELAY: usize = 1;
const RECEIVERS: [usize; 4] = [2, 3, 4, 5];
/// Each link's rate, both ways.
const RATE: &str = "100mbit";

struct Switch {
    switch: String,
    hosts: Vec<String>,
    nics: Vec<String>,
    relay: Option<(std::thread::JoinHandle<()>, tokio::sync::oneshot::Sender<()>)>,
    relay_port: u16,
}

impl Switch {
    fn new(count: usize) -> Self {
        let id = format!(
            "{}{}",
            std::process::id() % 10_000,
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("cvws{id}");
        let hosts: Vec<String> = (0..count).map(|i| format!("cvw{i}{id}")).collect();
        for ns in std::iter::once(&switch).chain(&hosts) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        run(&["ip", "-n", &switch, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &switch, "link", "set", "br0", "up"]);
        let mut nics = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let (port, nic) = (format!("q{i}{id}"), format!("w{i}{id}"));
            run(&["ip", "link", "add", &port, "type", "veth", "peer", "name", &nic]);
            run(&["ip", "link", "set", &port, "netns", &switch]);
            run(&["ip", "link", "set", &nic, "netns", host]);
            run(&["ip", "-n", &switch, "link", "set", &port, "master", "br0"]);
            run(&["ip", "-n", &switch, "link", "set", &port, "up"]);
            let addr = format!("198.18.0.{}/24", i + 1);
            run(&["ip", "-n", host, "addr", "add", &addr, "dev", &nic]);
            run(&["ip", "-n", host, "link", "set", &nic, "up"]);
            // tbf shapes what leaves an interface: cap both ends of the veth.
            for (ns, dev) in [(host.as_str(), nic.as_str()), (switch.as_str(), port.as_str())] {
                run(&[
                    "ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", RATE,
                    "burst", "256kb", "latency", "100ms",
                ]);
            }
            nics.push(nic);
        }
        let mut me = Self {
            switch,
            hosts,
            nics,
            relay: None,
            relay_port: 0,
        };
        me.start_relay();
        me
    }

    /// The real relay, in-process, on a thread inside the relay host's namespace.
    fn start_relay(&mut self) {
        let ns = std::fs::File::open(format!("/var/run/netns/{}", self.hosts[RELAY])).expect("open netns");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the relay namespace");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let server = Server::spawn(Config::with_listen(SocketAddr::from(([0, 0, 0, 0], 0))))
                    .await
                    .expect("relay in its namespace");
                ready_tx.send(server.local_addr().port()).expect("report port");
                let _ = stop_rx.await;
                server.shutdown().await;
            });
        });
        self.relay_port = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("relay started");
        self.relay = Some((thread, stop_tx));
    }

    fn relay_addr(&self) -> String {
        format!("198.18.0.{}:{}", RELAY + 1, self.relay_port)
    }

    /// `convey ARGS` on host `i`, with its own HOME and the relay host's relay.
    fn convey(&self, i: usize, home: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.hosts[i], BIN])
            .env("HOME", home)
            .env("CONVEY_LAN", "off")
            .env("CONVEY_RELAY", self.relay_addr())
            .env_remove("CONVEY_CONFIG")
            .env_remove("CONVEY_CODE")
            .env_remove("XDG_CONFIG_HOME");
        c
    }

    /// Bytes host `i` has sent on its link.
    fn tx_bytes(&self, i: usize) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.hosts[i],
                "cat",
                &format!("/sys/class/net/{}/statistics/tx_bytes", self.nics[i]),
            ])
            .output()
            .expect("read tx_bytes");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a byte count")
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if let Some((thread, stop)) = self.relay.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
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

fn sha(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).expect("open"), &mut h).expect("hash");
    hex::encode(h.finalize())
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
    let before = net.tx_bytes(SENDER);
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
    let sent = net.tx_bytes(SENDER) - before;
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
