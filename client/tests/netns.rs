//! Transfers across real network trouble, in network namespaces this test creates: a sender
//! host and a receiver host joined through a router namespace that also runs the relay.
//! Firewall rules (nftables) go only inside the test's own namespaces. Needs root, `ip` and
//! `nft`; it fails loudly when it cannot set up, it never skips.

mod common;

use std::{
    io::BufReader,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use common::{BIN, NamespaceRelay, json_events, run, wait_with_timeout, write_random};

static NEXT_NET: AtomicU32 = AtomicU32::new(0);

/// Three namespaces: `a` (sender), `b` (receiver), `r` (router and relay).
struct Net {
    a: String,
    b: String,
    r: String,
    /// Subnet prefix: a is {p}.1.2, b is {p}.2.2, r is {p}.1.1 and {p}.2.1.
    p: String,
    relay: Option<NamespaceRelay>,
}

impl Net {
    fn new() -> Self {
        Self::build(false)
    }

    /// The same three hosts with only IPv6 addresses (the benchmarking range 2001:2::/48,
    /// RFC 5180) besides loopback, and the relay on `[::]`.
    fn new_v6() -> Self {
        Self::build(true)
    }

    fn build(v6: bool) -> Self {
        let n = NEXT_NET.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{n}", std::process::id() % 10_000);
        // The benchmarking ranges (RFC 2544, 198.18.0.0/15; RFC 5180, 2001:2::/48), the only
        // ones tests may use. Each `Net` is its own set of namespaces, so they may all use the
        // same subnets.
        let p = if v6 { "2001:2:0" } else { "198.18" }.to_owned();
        let (a, b, r) = (format!("cva{id}"), format!("cvb{id}"), format!("cvr{id}"));
        for ns in [&a, &b, &r] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let addr = |side: &str, host: u8| {
            if v6 {
                format!("{p}:{side}::{host}")
            } else {
                format!("{p}.{side}.{host}")
            }
        };
        let prefix = if v6 { "/64" } else { "/24" };
        for (host, side) in [(&a, "1"), (&b, "2")] {
            let (outer, inner) = (format!("r{side}{id}"), format!("h{side}{id}"));
            run(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            run(&["ip", "link", "set", &outer, "netns", &r]);
            run(&["ip", "link", "set", &inner, "netns", host]);
            for (ns, dev, n) in [(&r, &outer, 1), (host, &inner, 2)] {
                let mut args = vec![
                    "ip".to_owned(),
                    "-n".into(),
                    ns.to_string(),
                    "addr".into(),
                    "add".into(),
                    format!("{}{prefix}", addr(side, n)),
                    "dev".into(),
                    dev.to_string(),
                ];
                if v6 {
                    // Usable at once, without duplicate address detection's wait.
                    args.push("nodad".into());
                }
                run(&args.iter().map(String::as_str).collect::<Vec<_>>());
            }
            run(&["ip", "-n", &r, "link", "set", &outer, "up"]);
            run(&["ip", "-n", host, "link", "set", &inner, "up"]);
            run(&["ip", "-n", host, "route", "add", "default", "via", &addr(side, 1)]);
        }
        let forwarding = if v6 {
            "net.ipv6.conf.all.forwarding=1"
        } else {
            "net.ipv4.ip_forward=1"
        };
        run(&["ip", "netns", "exec", &r, "sysctl", "-q", "-w", forwarding]);
        let listen = if v6 {
            std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            std::net::SocketAddr::from(([0, 0, 0, 0], 0))
        };
        let relay = Some(NamespaceRelay::start_on(&r, listen));
        Self { a, b, r, p, relay }
    }

    /// Is this the IPv6-only network?
    fn v6(&self) -> bool {
        self.p.contains(':')
    }

    /// The relay as seen from host `side` (1: sender, 2: receiver).
    fn relay_from(&self, side: u8) -> String {
        let port = self.relay.as_ref().map_or(0, |r| r.port);
        if self.v6() {
            format!("[{}:{side}::1]:{port}", self.p)
        } else {
            format!("{}.{side}.1:{port}", self.p)
        }
    }

    /// Drop every packet between the two hosts (TCP and UDP), inside their namespaces; both
    /// still reach the router, and so the relay's HTTP port.
    fn block_direct(&self) {
        self.block_between("");
    }

    /// Drop TCP between the two hosts both ways (UDP still passes).
    fn block_direct_tcp(&self) {
        self.block_between("tcp");
    }

    /// Drop packets between the hosts, all of them or only protocol `proto`.
    fn block_between(&self, proto: &str) {
        let nft = |ns: &str, rule: &str| {
            let mut args = vec!["ip", "netns", "exec", ns, "nft"];
            args.extend(rule.split_whitespace());
            run(&args);
        };
        let only = if proto.is_empty() {
            String::new()
        } else {
            format!("meta l4proto {proto}")
        };
        for (ns, other) in [(&self.a, "2"), (&self.b, "1")] {
            let (family, subnet) = if self.v6() {
                ("ip6", format!("{}:{other}::/64", self.p))
            } else {
                ("ip", format!("{}.{other}.0/24", self.p))
            };
            nft(ns, "add table inet convey_test");
            for (chain, hook, dir) in [("in", "input", "saddr"), ("out", "output", "daddr")] {
                nft(
                    ns,
                    &format!("add chain inet convey_test {chain} {{ type filter hook {hook} priority 0 ; }}"),
                );
                nft(
                    ns,
                    &format!("add rule inet convey_test {chain} {family} {dir} {subnet} {only} drop"),
                );
            }
        }
    }

    /// `convey ARGS` inside namespace `ns`, with its own HOME.
    fn convey(&self, ns: &str, home: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, BIN])
            .env("HOME", home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_STATE_HOME")
            .env_remove("CONVEY_RELAY")
            .env_remove("CONVEY_CODE");
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The relay stops before its namespace goes.
        drop(self.relay.take());
        for ns in [&self.a, &self.b, &self.r] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn paths_of(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["event"] == "transport")
        .filter_map(|e| e["path"].as_str().map(str::to_owned))
        .collect()
}

/// Send `size` bytes from host a to host b; `during` runs once the receiver has a quarter.
fn transfer(net: &Net, size: usize, limit: Option<&str>, during: impl FnOnce()) -> Vec<serde_json::Value> {
    transfer_on(net, "auto", size, limit, during)
}

/// A transfer with both sides on `transport`; returns the receiver's events.
fn transfer_on(
    net: &Net,
    transport: &str,
    size: usize,
    limit: Option<&str>,
    during: impl FnOnce(),
) -> Vec<serde_json::Value> {
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("payload.bin");
    write_random(&src, size);
    let out = home.path().join("out");
    let mut send = net.convey(&net.a, home.path());
    send.args([
        "send",
        "--code",
        "70-pilot-planet",
        "--relay",
        &net.relay_from(1),
        "--transport",
        transport,
    ]);
    if let Some(rate) = limit {
        send.args(["--limit-rate", rate]);
    }
    send.arg(&src);
    let (mut sender, _) = common::spawn_with_code(send, &home.path().join("send.err"));
    let mut receiver = net
        .convey(&net.b, home.path())
        .args([
            "receive",
            "--yes",
            "--json",
            "--relay",
            &net.relay_from(2),
            "--transport",
            transport,
            "--out",
        ])
        .arg(&out)
        .arg("70-pilot-planet")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("receive");
    let mut reader = BufReader::new(receiver.stdout.take().expect("stdout"));
    let quarter = (size / 4) as u64;
    let mut seen = json_events(&mut reader, |v| {
        v["event"] == "progress" && v["bytes"].as_u64().unwrap_or(0) >= quarter || v["event"] == "done"
    });
    during();
    seen.extend(json_events(&mut reader, |v| {
        v["event"] == "done" || v["event"] == "error"
    }));
    let status = wait_with_timeout(&mut receiver, Duration::from_secs(150));
    let sent = wait_with_timeout(&mut sender, Duration::from_secs(30));
    assert!(status.success(), "receiver failed: {seen:?}");
    assert!(
        sent.success(),
        "sender failed: {}",
        std::fs::read_to_string(home.path().join("send.err")).unwrap_or_default()
    );
    assert_eq!(
        std::fs::read(out.join("payload.bin")).expect("received"),
        std::fs::read(&src).expect("source"),
        "byte-identical"
    );
    seen
}

#[test]
fn direct_tcp_blocked_both_ways_goes_over_webrtc() {
    let net = Net::new();
    net.block_direct_tcp();
    let seen = transfer(&net, 16 << 20, None, || {});
    assert_eq!(paths_of(&seen), ["webrtc"], "{seen:?}");
}

#[test]
fn only_the_relay_port_reachable_goes_through_the_websocket_tunnel() {
    let net = Net::new();
    net.block_direct();
    let seen = transfer(&net, 16 << 20, None, || {});
    assert_eq!(paths_of(&seen), ["relay"], "{seen:?}");
}

#[test]
fn a_direct_path_cut_mid_transfer_finishes_over_the_relay() {
    let net = Net::new();
    let seen = transfer(&net, 32 << 20, Some("4M"), || net.block_direct());
    let paths = paths_of(&seen);
    assert_eq!(paths.first().map(String::as_str), Some("direct"), "{seen:?}");
    assert_eq!(paths.last().map(String::as_str), Some("relay"), "{seen:?}");
}

/// Hosts with only IPv6 addresses (and loopback as usual), the relay on the router: every
/// path works, each forced in turn, and `auto` picks direct.
#[test]
fn ipv6_only_hosts_send_on_every_path() {
    let net = Net::new_v6();
    for transport in ["direct", "webrtc", "relay", "auto"] {
        let seen = transfer_on(&net, transport, 8 << 20, None, || {});
        let want = if transport == "auto" { "direct" } else { transport };
        assert_eq!(paths_of(&seen), [want], "{transport}: {seen:?}");
    }
}

/// A forced path that cannot connect fails in bounded time with exit 6 and one line that
/// names the path and the step that failed on it, on both sides: WebRTC with every packet
/// between the hosts dropped (ICE), direct with TCP between them dropped.
#[test]
fn a_forced_path_that_cannot_connect_says_which_and_why() {
    for (transport, step) in [("webrtc", "ICE"), ("direct", "direct TCP")] {
        let net = Net::new();
        if transport == "webrtc" {
            net.block_direct();
        } else {
            net.block_direct_tcp();
        }
        let home = tempfile::tempdir().expect("home");
        let src = home.path().join("payload.bin");
        write_random(&src, 1 << 20);
        let mut send = net.convey(&net.a, home.path());
        send.args(["send", "--code", "71-pilot-planet", "--relay", &net.relay_from(1)])
            .args(["--transport", transport])
            .arg(&src);
        let send_err = home.path().join("send.err");
        let (mut sender, _) = common::spawn_with_code(send, &send_err);
        let recv_err = home.path().join("recv.err");
        let mut receiver = net
            .convey(&net.b, home.path())
            .args(["receive", "--yes", "--relay", &net.relay_from(2)])
            .args(["--transport", transport, "--out"])
            .arg(home.path().join("out"))
            .arg("71-pilot-planet")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&recv_err).expect("stderr file"))
            .spawn()
            .expect("receive");
        let r = wait_with_timeout(&mut receiver, Duration::from_secs(120)).code();
        let s = wait_with_timeout(&mut sender, Duration::from_secs(30)).code();
        let (rerr, serr) = (
            std::fs::read_to_string(&recv_err).unwrap_or_default(),
            std::fs::read_to_string(&send_err).unwrap_or_default(),
        );
        assert_eq!(r, Some(6), "{transport}: receiver: {rerr}");
        assert_eq!(s, Some(6), "{transport}: sender: {serr}");
        let line = |err: &str| {
            err.lines()
                .find(|l| l.starts_with("error:"))
                .unwrap_or_default()
                .to_owned()
        };
        for (who, err) in [("receiver", &rerr), ("sender", &serr)] {
            let l = line(err);
            assert!(
                l.contains(&format!("--transport {transport}")) && l.contains(step),
                "{transport}: the {who}'s one line names the path and the failed step: {err}"
            );
        }
        assert!(
            !home.path().join("out/payload.bin").exists(),
            "nothing posing as complete"
        );
    }
}

/// A host whose loopback has only ::1 (an IPv6-only machine): the receiver's path selector
/// and the sender's local ends bind ::1, WebRTC gathers IPv6 candidates, so every path
/// works: the relay tunnel, direct, WebRTC and the default `auto`.
#[test]
fn a_host_whose_loopback_has_only_ipv6_sends_on_every_path() {
    let ns = format!(
        "cv6{}{}",
        std::process::id() % 10_000,
        NEXT_NET.fetch_add(1, Ordering::Relaxed)
    );
    let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    run(&["ip", "netns", "add", &ns]);
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
        }
    }
    let _gone = Gone(ns.clone());
    run(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    run(&["ip", "-n", &ns, "addr", "del", "127.0.0.1/8", "dev", "lo"]);
    let relay = NamespaceRelay::start_on(&ns, "[::1]:0".parse().expect("addr"));
    let relay_addr = format!("[::1]:{}", relay.port);
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("v6.bin");
    write_random(&src, 4 << 20);
    for (i, transport) in ["relay", "direct", "webrtc", "auto"].into_iter().enumerate() {
        let code = format!("{}-pilot-planet", 81 + i);
        let in_ns = |args: &[&str]| {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns, BIN])
                .args(args)
                .env("HOME", home.path())
                .env("CONVEY_LAN", "off")
                .env_remove("XDG_CONFIG_HOME")
                .env_remove("XDG_STATE_HOME")
                .env_remove("CONVEY_RELAY")
                .env_remove("CONVEY_CODE");
            c
        };
        let mut sender = in_ns(&[
            "send",
            "--relay",
            &relay_addr,
            "--transport",
            transport,
            "--code",
            &code,
        ])
        .arg(&src)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("send");
        let out = home.path().join(format!("out-{transport}"));
        let mut receiver = in_ns(&[
            "receive",
            "--relay",
            &relay_addr,
            "--transport",
            transport,
            "--yes",
            "--out",
        ])
        .arg(&out)
        .arg(&code)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("receive");
        let status = wait_with_timeout(&mut receiver, Duration::from_secs(60));
        let mut err = String::new();
        if let Some(mut e) = receiver.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        assert!(status.success(), "{transport} on an IPv6-only loopback: {err}");
        assert!(wait_with_timeout(&mut sender, Duration::from_secs(60)).success());
        assert!(
            std::fs::read(out.join("v6.bin")).expect("received") == std::fs::read(&src).expect("source"),
            "{transport}: byte-identical"
        );
    }
}
