//! One code, many receivers, between real `convey` processes on namespace hosts this test
//! creates: a switch namespace with a bridge, a sender host, a relay host and four receiver
//! hosts on 198.18.0.0/24, every host's link capped at 100 Mbit/s both ways with `tc tbf`
//! (on the host's end and on the bridge's end of its veth). The sender's bytes out are read
//! from its interface counters. Needs root, `ip`, `tc` and `nft`; it fails loudly when it
//! cannot set up, it never skips.

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

/// Start `convey send --receivers N FILE` on the sender host; returns it and its code. Its
/// JSON events go on to `log`, for [`seen`] and [`events`].
fn start_sender(net: &Switch, home: &Path, file: &Path, receivers: usize, log: &Path) -> (Child, String) {
    let mut child = net
        .convey(SENDER, home)
        .args(["send", "--receivers", &receivers.to_string(), "--json"])
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
            let code = v["code"].as_str().expect("code").to_owned();
            // A page can be one of the receivers: the link is printed for several too.
            let page = v["page"].as_str().unwrap_or_default();
            assert!(page.ends_with(&format!("/#{code}")), "no page link: {v}");
            break code;
        }
    };
    let mut log = std::fs::File::create(log).expect("sender log");
    std::thread::spawn(move || {
        use std::io::Write;
        for line in reader.lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
        }
    });
    (child, code)
}

/// A receiver started by [`start_receivers`]: the process, its output folder, its log.
type Started = (Child, std::path::PathBuf, std::path::PathBuf);

/// Start a receiver on each of `hosts`, into `dir/out{i}` with its events in `dir/log{i}`,
/// on the relay `relay` (else the switch's own).
fn start_receivers(
    net: &Switch,
    hosts: &[usize],
    dir: &Path,
    code: &str,
    relay: Option<&str>,
) -> Vec<Started> {
    hosts
        .iter()
        .map(|&i| {
            let out = dir.join(format!("out{i}"));
            let log = dir.join(format!("log{i}"));
            let mut child = net.convey(i, dir);
            if let Some(relay) = relay {
                child.env("CONVEY_RELAY", relay);
            }
            (receiver_command(child, &out, code, &log), out, log)
        })
        .collect()
}

/// Start a receiver on host `i` into `out`; its JSON events go to a file read by `seen`.
fn start_receiver(net: &Switch, i: usize, home: &Path, out: &Path, code: &str, log: &Path) -> Child {
    receiver_command(net.convey(i, home), out, code, log)
}

/// Run `convey receive` through `convey` (a command on a namespace host).
fn receiver_command(mut convey: Command, out: &Path, code: &str, log: &Path) -> Child {
    std::fs::create_dir_all(out).expect("mkdir out");
    convey
        .args(["receive", "--yes", "--json", "--seed-for", "60s", "--out"])
        .arg(out)
        .arg(code)
        .stdout(std::fs::File::create(log).expect("log"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn convey receive")
}

/// The JSON events written to `log` so far.
fn events(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect()
}

fn seen(log: &Path, event: &str) -> bool {
    events(log).iter().any(|v| v["event"] == event)
}

/// Wait (at most `limit`) until `log` holds an event for which `what` holds.
fn wait_for(log: &Path, limit: Duration, doing: &str, what: impl Fn(&serde_json::Value) -> bool) {
    let start = Instant::now();
    while !events(log).iter().any(&what) {
        assert!(start.elapsed() < limit, "waited {limit:?} for {doing}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A receiver's `sources` event: (ciphertext bytes from the sender, from other receivers).
fn sources(log: &Path) -> (u64, u64) {
    let all = events(log);
    let v = all
        .iter()
        .find(|v| v["event"] == "sources")
        .unwrap_or_else(|| panic!("no sources event in {all:?}"));
    (
        v["from_sender"].as_u64().expect("from_sender"),
        v["from_receivers"].as_u64().expect("from_receivers"),
    )
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
    let (mut sender, code) = start_sender(&net, dir.path(), &file, 4, &dir.path().join("sender.log"));
    let mut receivers = start_receivers(&net, &RECEIVERS, dir.path(), &code, None);
    for (child, out, _) in &mut receivers {
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
    let (mut sender, code) = start_sender(&net, dir.path(), &file, 4, &dir.path().join("sender.log"));
    let mut receivers = start_receivers(&net, &RECEIVERS, dir.path(), &code, None);
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

/// Two receivers complete and seed; a third gets the offer, and then the sender is killed
/// (before the latecomer could fetch much from it): the latecomer completes from the two.
#[test]
fn a_latecomer_completes_from_two_finished_receivers_after_the_sender_stopped() {
    let net = Switch::new(5);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("swarm.bin");
    write_random(&file, SIZE);
    let want = sha(&file);
    let (mut sender, code) = start_sender(&net, dir.path(), &file, 3, &dir.path().join("sender.log"));
    let mut firsts = start_receivers(&net, &[2, 3], dir.path(), &code, None);
    for (_, out, log) in &firsts {
        wait_for(log, Duration::from_secs(240), "a first receiver to seed", |v| {
            v["event"] == "seeding"
        });
        assert_eq!(sha(&out.join("swarm.bin")), want, "byte-identical");
    }
    let (out, log) = (dir.path().join("out4"), dir.path().join("log4"));
    let mut late = start_receiver(&net, 4, dir.path(), &out, &code, &log);
    wait_for(&log, Duration::from_secs(60), "the latecomer's offer", |v| {
        v["event"] == "offer"
    });
    let _ = sender.kill();
    let _ = sender.wait();
    let status = wait_with_timeout(&mut late, Duration::from_secs(240));
    assert!(status.success(), "the latecomer failed: {status}");
    assert_eq!(sha(&out.join("swarm.bin")), want, "byte-identical");
    let (from_sender, from_receivers) = sources(&log);
    eprintln!("latecomer: {from_sender} bytes from the sender, {from_receivers} from receivers");
    assert!(
        from_receivers >= SIZE as u64 * 7 / 8 && from_sender < SIZE as u64 / 8,
        "the latecomer fetched from the receivers, not the stopped sender: \
         sender {from_sender}, receivers {from_receivers}"
    );
    for (child, ..) in &mut firsts {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// While two receivers transfer, three receivers with wrong words each fail (exit 3) and
/// the sender is told of each try; then the code takes nobody new, even with the right
/// words, and the admitted receivers complete. The sender ends with exit 3: the code closed
/// before all the receivers it wanted had come.
#[test]
fn three_wrong_codes_close_the_code_and_the_admitted_receivers_finish() {
    let net = Switch::new(6);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("swarm.bin");
    write_random(&file, SIZE);
    let want = sha(&file);
    let sender_log = dir.path().join("sender.log");
    let (mut sender, code) = start_sender(&net, dir.path(), &file, 3, &sender_log);
    let mut admitted = start_receivers(&net, &[2, 3], dir.path(), &code, None);
    let accepted = |v: &serde_json::Value| v["event"] == "receiver" && v["state"] == "accepted";
    wait_for(&sender_log, Duration::from_secs(60), "two acceptances", |_| {
        events(&sender_log).iter().filter(|v| accepted(v)).count() >= 2
    });
    let nameplate = code.split('-').next().expect("nameplate");
    let wrong = format!("{nameplate}-abandon-ability-able");
    for i in 0..3 {
        let out = dir.path().join(format!("wrong{i}"));
        let log = dir.path().join(format!("wrong{i}.log"));
        let mut guess = start_receiver(&net, 4, dir.path(), &out, &wrong, &log);
        let status = wait_with_timeout(&mut guess, Duration::from_secs(60));
        assert_eq!(status.code(), Some(3), "try {i}: a wrong code exits 3");
        assert!(
            std::fs::read_dir(&out).expect("out").next().is_none(),
            "try {i}: nothing written"
        );
    }
    wait_for(&sender_log, Duration::from_secs(30), "the code closing", |v| {
        v["event"] == "closed"
    });
    let tries: Vec<u64> = events(&sender_log)
        .iter()
        .filter(|v| v["event"] == "receiver" && v["state"] == "wrong-code")
        .filter_map(|v| v["tries"].as_u64())
        .collect();
    assert_eq!(tries, [1, 2, 3], "the sender is told of each try");
    let out = dir.path().join("closed");
    let mut refused = start_receiver(&net, 5, dir.path(), &out, &code, &dir.path().join("closed.log"));
    let status = wait_with_timeout(&mut refused, Duration::from_secs(60));
    assert!(
        !status.success(),
        "a closed code takes nobody new, even with the right words"
    );
    for (child, out, _) in &mut admitted {
        let status = wait_with_timeout(child, Duration::from_secs(240));
        assert!(status.success(), "an admitted receiver failed: {status}");
        assert_eq!(sha(&out.join("swarm.bin")), want, "byte-identical");
    }
    let status = wait_with_timeout(&mut sender, Duration::from_secs(60));
    assert_eq!(
        status.code(),
        Some(3),
        "the code closed before the third receiver came"
    );
}

/// Four receivers, one of which may reach only the relay's TCP port (nft drops everything
/// else it sends, and every connection to it): it completes through the relay's tunnel
/// while the other three swarm.
#[test]
fn a_receiver_that_reaches_only_the_relay_port_completes_while_the_others_swarm() {
    let net = Switch::new(6);
    let walled = RECEIVERS[3];
    let rules = format!(
        "table inet convey_wall {{
            chain out {{ type filter hook output priority 0; policy drop;
                oif lo accept
                ct state established,related accept
                ip daddr 198.18.0.{} tcp dport {} accept
            }}
            chain inp {{ type filter hook input priority 0; policy drop;
                iif lo accept
                ct state established,related accept
            }}
        }}",
        RELAY + 1,
        net.relay.port
    );
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &net.net.hosts[walled], "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn nft (this test needs root and nftables)");
    {
        use std::io::Write;
        nft.stdin
            .take()
            .expect("stdin")
            .write_all(rules.as_bytes())
            .expect("write rules");
    }
    assert!(
        wait_with_timeout(&mut nft, Duration::from_secs(10)).success(),
        "nft refused the firewall (this test needs root and nftables)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("swarm.bin");
    write_random(&file, SIZE / 2);
    let want = sha(&file);
    let sender_log = dir.path().join("sender.log");
    let (mut sender, code) = start_sender(&net, dir.path(), &file, 4, &sender_log);
    let mut receivers = start_receivers(&net, &RECEIVERS, dir.path(), &code, None);
    for (child, out, _) in &mut receivers {
        let status = wait_with_timeout(child, Duration::from_secs(240));
        assert!(status.success(), "receiver failed: {status}");
        assert_eq!(sha(&out.join("swarm.bin")), want, "byte-identical");
    }
    let walled_log = &receivers[3].2;
    assert!(
        events(walled_log)
            .iter()
            .any(|v| v["event"] == "transport" && v["path"] == "relay"),
        "the walled receiver came through the tunnel: {:?}",
        events(walled_log)
    );
    let swarmed: u64 = receivers[..3].iter().map(|(_, _, log)| sources(log).1).sum();
    assert!(swarmed > 0, "the other three served each other");
    let status = wait_with_timeout(&mut sender, Duration::from_secs(60));
    assert!(status.success(), "sender: {status}");
}

/// Overwrite `path` in place (same inode, so a process serving it reads the new bytes)
/// with every byte inverted.
fn forge_in_place(path: &Path) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open to forge");
    let mut buf = vec![0u8; 1 << 16];
    let mut at = 0;
    loop {
        let n = f.read_at(&mut buf, at).expect("read to forge");
        if n == 0 {
            break;
        }
        for b in &mut buf[..n] {
            *b = !*b;
        }
        f.write_all_at(&buf[..n], at).expect("forge");
        at += n as u64;
    }
    f.sync_all().expect("sync the forgery");
}

/// A receiver whose copy went bad while it seeds (overwritten in place, as a hostile
/// co-receiver, who holds the content key, could do) serves blocks that pass the AEAD check
/// but fail their piece hash. The second receiver drops it, takes those pieces from the
/// sender (which must stop holding back, although the forger reports every piece) and
/// installs only the real bytes. The forger is the only other receiver, so the bytes
/// counted as coming from receivers show that forged pieces really arrived.
#[test]
fn a_receiver_serving_forged_pieces_is_dropped_and_the_other_completes() {
    let net = Switch::new(4);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("swarm.bin");
    let size = SIZE / 2;
    write_random(&file, size);
    let want = sha(&file);
    let (mut sender, code) = start_sender(&net, dir.path(), &file, 2, &dir.path().join("sender.log"));
    let (out_a, log_a) = (dir.path().join("forger"), dir.path().join("forger.log"));
    let mut forger = start_receiver(&net, 2, dir.path(), &out_a, &code, &log_a);
    wait_for(
        &log_a,
        Duration::from_secs(240),
        "the first receiver to seed",
        |v| v["event"] == "seeding",
    );
    let installed = out_a.join("swarm.bin");
    forge_in_place(&installed);
    assert_ne!(sha(&installed), want, "forged");
    let (out, log) = (dir.path().join("honest"), dir.path().join("honest.log"));
    let mut honest = start_receiver(&net, 3, dir.path(), &out, &code, &log);
    let status = wait_with_timeout(&mut honest, Duration::from_secs(240));
    assert!(status.success(), "the receiver beside a forger failed: {status}");
    assert_eq!(sha(&out.join("swarm.bin")), want, "only the real bytes installed");
    let (from_sender, from_receivers) = sources(&log);
    eprintln!("beside a forger: {from_sender} bytes from the sender, {from_receivers} from it");
    assert!(
        from_receivers > 0,
        "the forger served the other receiver (sender {from_sender}, receivers {from_receivers})"
    );
    assert!(
        from_sender >= size as u64,
        "the sender made up for every forged piece: {from_sender}"
    );
    let status = wait_with_timeout(&mut sender, Duration::from_secs(60));
    assert!(status.success(), "sender: {status}");
    let _ = forger.kill();
    let _ = forger.wait();
}

/// Debian's redis-server on a namespace host, listening on that host's bridge address;
/// killed (by PID) on drop.
struct NamespaceRedis {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl NamespaceRedis {
    fn start(ns: &str, ip: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "redis-server",
                "--bind",
                ip,
                "--port",
                "6379",
            ])
            .args([
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is required (apt-get install redis-server; .ci/run installs it)");
        let mut redis = Self {
            child,
            url: format!("redis://{ip}:6379/0"),
            _dir: dir,
        };
        let began = Instant::now();
        while !Command::new("ip")
            .args(["netns", "exec", ns, "redis-cli", "-h", ip, "ping"])
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"PONG"))
        {
            assert!(
                redis.child.try_wait().expect("redis-server").is_none(),
                "redis-server exited"
            );
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }
}

impl Drop for NamespaceRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two relay instances on two hosts share one Redis: the sender and two receivers use the
/// first, the other two receivers the second. All four complete, and the sender with them.
#[test]
fn host_and_guests_on_two_relay_instances_sharing_redis() {
    // Host 6 runs the second instance.
    let net = Bridge::new("cvr", 7);
    net.cap_links(RATE);
    let redis = NamespaceRedis::start(&net.hosts[RELAY], "198.18.0.2");
    let first = NamespaceRelay::start_with(
        &net.hosts[RELAY],
        "0.0.0.0:0".parse().expect("addr"),
        Some(redis.url.clone()),
    );
    let second = NamespaceRelay::start_with(
        &net.hosts[6],
        "0.0.0.0:0".parse().expect("addr"),
        Some(redis.url.clone()),
    );
    let net = Switch { relay: first, net };
    let second_addr = format!("198.18.0.7:{}", second.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("swarm.bin");
    write_random(&file, SIZE / 2);
    let want = sha(&file);
    let (mut sender, code) = start_sender(&net, dir.path(), &file, 4, &dir.path().join("sender.log"));
    // The sender and the first two receivers use the first instance, the others the second.
    let (on_first, on_second) = RECEIVERS.split_at(2);
    let mut receivers = start_receivers(&net, on_first, dir.path(), &code, None);
    receivers.extend(start_receivers(
        &net,
        on_second,
        dir.path(),
        &code,
        Some(&second_addr),
    ));
    for (child, out, _) in &mut receivers {
        let status = wait_with_timeout(child, Duration::from_secs(240));
        assert!(status.success(), "receiver failed: {status}");
        assert_eq!(sha(&out.join("swarm.bin")), want, "byte-identical");
    }
    let status = wait_with_timeout(&mut sender, Duration::from_secs(60));
    assert!(status.success(), "sender: {status}");
    // The relays stop, then Redis, then the namespaces go.
    drop(second);
    let Switch { relay, net } = net;
    drop(relay);
    drop(redis);
    drop(net);
}
