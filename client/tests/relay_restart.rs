//! A relay that dies mid-transfer, as an operator's restart or a crash does: the real
//! `convey-relay` binary is killed with SIGKILL once bytes are moving and started again on
//! the same port two seconds later. On every path the transfer carries on, both sides
//! pick their session up on the new relay, and both exit 0 with the file byte-identical.
//! Killed and never started again, a direct or WebRTC transfer still completes (what the
//! two sides say goes over the peer route), and a tunnel transfer ends with a message that
//! says so. A proxy that drops only one side's relay connection (as a load balancer or a
//! NAT timing out does) ends nothing either: that side reconnects, the other waits for it on
//! the session's resume slot, and the transfer goes on (over the path between them, or
//! through the relay again on the tunnel). Nor does one that silences a swarm member's
//! tunnel connections (no close, no reset): both ends take the silent tunnel as lost and
//! resume on a new one. A pipe (`send -`) through the tunnel survives a restart too.

mod common;

use std::{
    io::{BufRead, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::{convey_via, spawn_with_code, wait_with_timeout, write_random};
use convey_shared::protocol::tunnel::TUNNEL_PATH;

const LONG: Duration = Duration::from_secs(150);

/// The relay binary, built beside `convey` by `cargo test --workspace`.
fn relay_bin() -> PathBuf {
    let path = Path::new(common::BIN).with_file_name("convey-relay");
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo test --workspace) so the relay binary is there",
        path.display()
    );
    path
}

/// A free loopback port (TCP; the relay's STUN takes the same number on UDP).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The real relay process on `port`, killed (SIGKILL) on drop.
struct RelayProcess(Child);

impl RelayProcess {
    /// A relay on a free port. The relay's STUN takes the same number on UDP, which another
    /// process (a parallel test's WebRTC socket) may hold: that relay exits, and another
    /// port is tried.
    fn start_free() -> (Self, u16) {
        let mut why = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            match Self::start(port) {
                Ok(relay) => return (relay, port),
                Err(e) => why.push(format!("port {port}: {e}")),
            }
        }
        panic!("no relay started on five free ports: {}", why.join("; "));
    }

    /// The relay on `port`, once it answers its health check (so every socket it binds is
    /// bound); why not, when it exits or never answers.
    fn start(port: u16) -> Result<Self, String> {
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(relay_bin())
            .args(["--listen", &addr, "--stun-listen", &addr])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start convey-relay");
        let mut relay = Self(child);
        let started = Instant::now();
        let at: SocketAddr = addr.parse().expect("address");
        while !healthy(&at) {
            if let Ok(Some(status)) = relay.0.try_wait() {
                return Err(format!("the relay exited ({status})"));
            }
            if started.elapsed() > Duration::from_secs(20) {
                return Err("the relay never answered /healthz".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(relay)
    }

    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Does the relay at `at` answer its health check? A socket in the listen backlog of a
/// relay still starting (or about to exit) does not.
fn healthy(at: &SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(at, Duration::from_millis(200)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut status = [0u8; 12];
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .is_ok()
        && conn.read_exact(&mut status).is_ok()
        && status.ends_with(b" 200")
}

/// A TCP proxy in front of the relay for one side, whose open connections the test cuts
/// (as a load balancer or a NAT dropping them does) or silences, while it goes on taking
/// new ones.
struct CuttingProxy {
    port: u16,
    open: Arc<Mutex<Vec<Proxied>>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

/// One connection through the proxy: both sockets, whether it is a tunnel end, and whether
/// the proxy has stopped passing its bytes on.
struct Proxied {
    client: TcpStream,
    up: TcpStream,
    tunnel: bool,
    muted: Arc<AtomicBool>,
}

impl CuttingProxy {
    fn start(relay_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("proxy address").port();
        let open = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (conns, stopped) = (open.clone(), stop.clone());
        let accept = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                if let Some(conn) = Self::open_one(client, relay_port)
                    && let Ok(mut open) = conns.lock()
                {
                    open.push(conn);
                }
            }
        });
        Self {
            port,
            open,
            stop,
            accept: Some(accept),
        }
    }

    /// Connect `client` to the relay, pass on its request (whose line says whether it is a
    /// tunnel end), and pipe both ways.
    fn open_one(mut client: TcpStream, relay_port: u16) -> Option<Proxied> {
        let mut up = TcpStream::connect(("127.0.0.1", relay_port)).ok()?;
        client.set_nonblocking(false).ok()?;
        client.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut request = vec![0u8; 4096];
        let n = client.read(&mut request).ok()?;
        client.set_read_timeout(None).ok()?;
        up.write_all(&request[..n]).ok()?;
        let tunnel = request[..n].starts_with(format!("GET {TUNNEL_PATH}/").as_bytes());
        let muted = Arc::new(AtomicBool::new(false));
        pipe(client.try_clone().ok()?, up.try_clone().ok()?, muted.clone());
        pipe(up.try_clone().ok()?, client.try_clone().ok()?, muted.clone());
        Some(Proxied {
            client,
            up,
            tunnel,
            muted,
        })
    }

    /// Drop every connection open now; new ones still go through.
    fn cut(&self) {
        for conn in self.open.lock().expect("open connections").drain(..) {
            let _ = conn.client.shutdown(Shutdown::Both);
            let _ = conn.up.shutdown(Shutdown::Both);
        }
    }

    /// Stop passing on the bytes of every tunnel connection open now, closing nothing (as a
    /// NAT that forgot them does: no close, no reset, not even for a close that comes
    /// later); new ones still go through.
    fn silence_tunnels(&self) {
        self.silence(true);
    }

    /// The same for every session (rendezvous) connection open now; tunnels go on.
    fn silence_sessions(&self) {
        self.silence(false);
    }

    fn silence(&self, tunnels: bool) {
        for conn in self.open.lock().expect("open connections").iter() {
            if conn.tunnel == tunnels {
                conn.muted.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// Copy `from` into `to` on a thread of its own, until either end closes; once `muted`,
/// what is read goes nowhere and an end that closes is not passed on.
fn pipe(mut from: TcpStream, mut to: TcpStream, muted: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !muted.load(Ordering::SeqCst) && to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        if !muted.load(Ordering::SeqCst) {
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        }
    });
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        self.cut();
    }
}

/// What the test does to the relay once bytes move.
#[derive(Clone, Copy)]
enum Fault {
    /// SIGKILL the relay; start a new one on its port 2 s later, or not.
    Kill { restart: bool },
    /// Cut the connections of one side (the sender's, or the receiver's) only.
    Cut { sender: bool },
    /// Silence the session's relay connection of one side only (its tunnel goes on).
    Silence { sender: bool },
    /// Silence the tunnel connections of one side only, the one in use and the one
    /// waiting for the next connection alike (its session goes on).
    SilenceTunnels { sender: bool },
}

impl Fault {
    /// Is it done to one side's connections (through a proxy), and to which?
    fn side(self) -> Option<bool> {
        match self {
            Self::Kill { .. } => None,
            Self::Cut { sender } | Self::Silence { sender } | Self::SilenceTunnels { sender } => Some(sender),
        }
    }
}

fn convey_at(home: &Path, port: u16) -> Command {
    convey_via(home, &format!("127.0.0.1:{port}"))
}

/// Start a paced transfer of a 48 MiB file on `transport`, wait until bytes move (and 2 s
/// more), then do `fault` to the relay. Returns both exit codes, both sides' stderr and
/// whether the file arrived intact.
fn transfer_through_a_dying_relay(transport: &str, fault: Fault) -> (Option<i32>, Option<i32>, String, bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    transfer_in(dir.path(), transport, fault)
}

fn transfer_in(dir: &Path, transport: &str, fault: Fault) -> (Option<i32>, Option<i32>, String, bool) {
    let (home, out) = (dir.join("home"), dir.join("out"));
    std::fs::create_dir_all(&home).expect("home");
    std::fs::create_dir_all(&out).expect("out");
    let file = dir.join("big.bin");
    if !file.exists() {
        write_random(&file, 48 << 20);
    }
    let (relay, port) = RelayProcess::start_free();
    let proxy = fault.side().map(|_| CuttingProxy::start(port));
    let via = |sender: bool| match (&proxy, fault.side()) {
        (Some(p), Some(side)) if side == sender => p.port,
        _ => port,
    };

    let mut send = convey_at(&home, via(true));
    send.args(["send", "--transport", transport, "--limit-rate", "6M"])
        .arg(&file);
    let send_err = dir.join("send.err");
    let (mut sender, code) = spawn_with_code(send, &send_err);
    let recv_err = dir.join("recv.err");
    let mut receiver = convey_at(&home, via(false))
        .args(["receive", "--yes", "--json", "--transport", transport, "--out"])
        .arg(&out)
        .arg(&code)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&recv_err).expect("stderr file"))
        .spawn()
        .expect("receive");
    let mut events = std::io::BufReader::new(receiver.stdout.take().expect("stdout"));
    let started = Instant::now();
    for line in (&mut events).lines() {
        let Ok(line) = line else { break };
        let v: serde_json::Value = serde_json::from_str(&line).expect("every event line is JSON");
        if v["event"] == "resumed" {
            std::fs::write(dir.join("resumed"), v["bytes"].to_string()).expect("note the resume");
        }
        if v["event"] == "progress" && v["bytes"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(started.elapsed() < LONG, "no bytes moved");
    }
    let mut log = std::fs::File::create(dir.join("recv.json")).expect("event log");
    std::thread::spawn(move || {
        for line in events.lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        receiver.try_wait().expect("try_wait").is_none() && sender.try_wait().expect("try_wait").is_none(),
        "the transfer was still running when the relay died"
    );
    let relay = match fault {
        Fault::Kill { restart } => {
            relay.kill();
            std::thread::sleep(Duration::from_secs(2));
            restart.then(|| RelayProcess::start(port).expect("the relay started again on its port"))
        }
        Fault::Cut { .. } => {
            proxy.as_ref().expect("the proxy").cut();
            Some(relay)
        }
        Fault::Silence { .. } => {
            proxy.as_ref().expect("the proxy").silence_sessions();
            Some(relay)
        }
        Fault::SilenceTunnels { .. } => {
            proxy.as_ref().expect("the proxy").silence_tunnels();
            Some(relay)
        }
    };

    let r = wait_with_timeout(&mut receiver, LONG).code();
    let s = wait_with_timeout(&mut sender, LONG).code();
    drop(relay);
    drop(proxy);
    // The receiver reports as JSON on stdout; its stderr holds the warnings, the sender's
    // the error line.
    let err = std::fs::read_to_string(&recv_err).unwrap_or_default()
        + &std::fs::read_to_string(&send_err).unwrap_or_default();
    let same = std::fs::read(out.join("big.bin")).ok() == std::fs::read(&file).ok();
    if r != Some(0) || s != Some(0) {
        eprintln!(
            "receiver: {}{}\nsender: {}",
            std::fs::read_to_string(&recv_err).unwrap_or_default(),
            std::fs::read_to_string(dir.join("recv.json")).unwrap_or_default(),
            std::fs::read_to_string(&send_err).unwrap_or_default()
        );
    }
    (r, s, err, same)
}

/// `fault` mid-transfer on `transport`: both sides exit 0, the file arrives byte-identical,
/// and a side says it reconnected.
fn assert_survives(transport: &str, fault: Fault) {
    let (r, s, err, same) = transfer_through_a_dying_relay(transport, fault);
    let what = match fault {
        Fault::Kill { .. } => "relay restarted",
        Fault::Cut { sender: true } => "the sender's connections cut",
        Fault::Cut { sender: false } => "the receiver's connections cut",
        Fault::Silence { sender: true } => "the sender's relay connection silenced",
        Fault::Silence { sender: false } => "the receiver's relay connection silenced",
        Fault::SilenceTunnels { .. } => "a side's tunnels silenced",
    };
    assert_eq!(r, Some(0), "receiver on {transport}, {what}: {err}");
    assert_eq!(s, Some(0), "sender on {transport}, {what}: {err}");
    assert!(same, "the file on {transport} arrived byte-identical");
    assert!(
        err.contains("reconnected to the relay"),
        "a side said it reconnected: {err}"
    );
}

#[test]
fn a_direct_transfer_survives_a_relay_restart() {
    assert_survives("direct", Fault::Kill { restart: true });
}

#[test]
fn a_webrtc_transfer_survives_a_relay_restart() {
    assert_survives("webrtc", Fault::Kill { restart: true });
}

#[test]
fn a_tunnel_transfer_survives_a_relay_restart() {
    assert_survives("relay", Fault::Kill { restart: true });
}

/// The relay killed and never started again: on a path between the peers the transfer
/// needs it no more. The sender's digests and the receiver's verdict go over the peer route,
/// so both exit 0 (without it they would wait out the grace period and exit 7).
fn assert_finishes_without_the_relay(transport: &str) {
    let (r, s, err, same) = transfer_through_a_dying_relay(transport, Fault::Kill { restart: false });
    assert_eq!(r, Some(0), "receiver on {transport}: {err}");
    assert_eq!(s, Some(0), "sender on {transport}: {err}");
    assert!(same, "the file on {transport} arrived byte-identical");
    assert!(
        !err.contains("reconnected to the relay"),
        "no relay came back to reconnect to: {err}"
    );
}

#[test]
fn a_direct_transfer_finishes_when_the_relay_never_returns() {
    assert_finishes_without_the_relay("direct");
}

#[test]
fn a_webrtc_transfer_finishes_when_the_relay_never_returns() {
    assert_finishes_without_the_relay("webrtc");
}

/// The relay killed and never started again: a tunnel transfer (every byte of it goes
/// through the relay) ends on both sides after the grace period with exit 7 and a message
/// that says so, keeps what arrived, and a later run through a new relay resumes.
#[test]
fn a_tunnel_transfer_whose_relay_never_returns_fails_clearly_and_resumes_later() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (r, s, err, same) = transfer_in(dir.path(), "relay", Fault::Kill { restart: false });
    assert_eq!(r, Some(7), "relay exit code on the receiver: {err}");
    assert_eq!(s, Some(7), "relay exit code on the sender");
    assert!(!same, "nothing posing as complete");
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("lost the relay") && line.contains("60 s") && line.contains("resume"),
        "one line naming the lost relay and the resume: {err}"
    );
    let staging: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .expect("out")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(".convey-"))
        .collect();
    assert_eq!(staging.len(), 1, "the partial transfer is kept");

    let (r, s, err, same) = transfer_in(dir.path(), "relay", Fault::Kill { restart: true });
    assert_eq!((r, s), (Some(0), Some(0)), "{err}");
    let kept: u64 = std::fs::read_to_string(dir.path().join("resumed"))
        .ok()
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or(0);
    assert!(kept > 0, "the second run resumed from what the first kept");
    assert!(same, "the resumed file is byte-identical");
}

/// A proxy drops the relay connections of one side only, mid-transfer: that side
/// reconnects, the other (told only that its peer vanished) waits for it on the session's
/// resume slot instead of ending, and the transfer completes on both.
fn assert_survives_a_cut(transport: &str, sender: bool) {
    assert_survives(transport, Fault::Cut { sender });
}

#[test]
fn a_direct_transfer_survives_a_proxy_dropping_the_receivers_relay_connection() {
    assert_survives_a_cut("direct", false);
}

#[test]
fn a_webrtc_transfer_survives_a_proxy_dropping_the_senders_relay_connection() {
    assert_survives_a_cut("webrtc", true);
}

#[test]
fn a_direct_transfer_survives_a_proxy_dropping_the_senders_relay_connection() {
    assert_survives_a_cut("direct", true);
}

#[test]
fn a_webrtc_transfer_survives_a_proxy_dropping_the_receivers_relay_connection() {
    assert_survives_a_cut("webrtc", false);
}

/// On the tunnel the proxy cuts the tunnel too, and there is no peer route: the other side
/// still waits for the cut one (a one-to-one session waits 20 s for a vanished peer), the
/// push resumes through the relay, and both exit 0.
#[test]
fn a_tunnel_transfer_survives_a_proxy_dropping_the_receivers_relay_connections() {
    assert_survives_a_cut("relay", false);
}

#[test]
fn a_tunnel_transfer_survives_a_proxy_dropping_the_senders_relay_connections() {
    assert_survives_a_cut("relay", true);
}

/// On the tunnel (no peer route), the proxy silences one side's session connection: no
/// close, no reset, as when a NAT forgets it, while its tunnel goes on. That side hears
/// nothing from the relay for 20 s (not even the pong to its keep-alive ping) and connects
/// again; the relay, which also heard nothing, lets the silent connection go, so the other
/// side is told its peer vanished and meets it again on the resume slot. Without that,
/// what the two sides say at the end (the digests, the verdict) goes into the silence.
#[test]
fn a_tunnel_transfer_survives_the_receivers_relay_connection_going_silent() {
    assert_survives("relay", Fault::Silence { sender: false });
}

#[test]
fn a_tunnel_transfer_survives_the_senders_relay_connection_going_silent() {
    assert_survives("relay", Fault::Silence { sender: true });
}

/// A swarm of two on the tunnel, where a proxy cuts all of one receiver's relay connections
/// (its session's and its BitTorrent tunnel) mid-transfer: librqbit's connection to the
/// path selector stays open while the selector dials the tunnel again and the bytes lost
/// with the old one are sent again; the sender waits for the cut receiver's session on the
/// resume slot. All three exit 0 and both copies are byte-identical.
/// A NAT forgets every tunnel connection of the sender at once, closing nothing: the one
/// carrying the transfer, and the one waiting at the relay for the receiver's next. The relay
/// pings a waiting end, so it drops the dead one and the sender (whose pings stop) opens
/// another, which the receiver's resumed tunnel meets. Without the pings the dead end held
/// the sender's waiting place: its new end was refused ("another connection of this side is
/// already waiting") and the receiver exited 6 in 30 s.
#[test]
fn a_tunnel_transfer_survives_the_senders_waiting_tunnel_end_going_silent() {
    let fault = Fault::SilenceTunnels { sender: true };
    let (r, s, err, same) = transfer_through_a_dying_relay("relay", fault);
    assert_eq!(r, Some(0), "the receiver: {err}");
    assert_eq!(s, Some(0), "the sender: {err}");
    assert!(same, "the file arrived byte-identical");
}

#[test]
fn a_swarm_member_whose_tunnel_is_cut_goes_on_through_a_new_one() {
    let logs = swarm_member_through_a_faulty_proxy(CuttingProxy::cut);
    assert!(
        logs.contains("reconnected to the relay"),
        "the cut receiver said it reconnected: {logs}"
    );
}

/// The same swarm, where the proxy instead silences the receiver's tunnel connections (no
/// close, no reset, bytes go nowhere, as when a NAT forgets them): both ends of the tunnel
/// hear nothing, not even keep-alives, take it as lost after 6 s (before librqbit drops a
/// peer silent for 10 s) and resume on a new one.
#[test]
fn a_swarm_member_whose_tunnel_goes_silent_resumes_on_a_new_one() {
    swarm_member_through_a_faulty_proxy(CuttingProxy::silence_tunnels);
}

/// Two receivers on the tunnel, one of them through a proxy to which `fault` is done once it
/// has 6 MiB; asserts all three exit 0 with both copies byte-identical. The three logs.
fn swarm_member_through_a_faulty_proxy(fault: fn(&CuttingProxy)) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("big.bin");
    write_random(&file, 32 << 20);
    let (relay, port) = RelayProcess::start_free();
    let proxy = CuttingProxy::start(port);
    let home = |name: &str| {
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).expect("home");
        home
    };
    let mut send = convey_at(&home("send"), port);
    send.args([
        "send",
        "--receivers",
        "2",
        "--transport",
        "relay",
        "--limit-rate",
        "4M",
    ])
    .arg(&file);
    let send_err = dir.path().join("send.err");
    let (mut sender, code) = spawn_with_code(send, &send_err);
    let receiver = |name: &str, via: u16| {
        let out = dir.path().join(format!("{name}-out"));
        std::fs::create_dir_all(&out).expect("out");
        let child = convey_at(&home(name), via)
            .args(["receive", "--yes", "--json", "--transport", "relay", "--out"])
            .arg(&out)
            .arg(&code)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join(format!("{name}.err"))).expect("stderr file"))
            .spawn()
            .expect("receive");
        (child, out)
    };
    let (mut whole, whole_out) = receiver("whole", port);
    let (mut cut, cut_out) = receiver("cut", proxy.port);
    let mut events = std::io::BufReader::new(cut.stdout.take().expect("stdout"));
    let started = Instant::now();
    for line in (&mut events).lines() {
        let Ok(line) = line else { break };
        let v: serde_json::Value = serde_json::from_str(&line).expect("every event line is JSON");
        if v["event"] == "progress" && v["bytes"].as_u64().unwrap_or(0) >= 6 << 20 {
            break;
        }
        assert!(started.elapsed() < LONG, "the cut receiver never got 6 MiB");
    }
    std::thread::spawn(move || for _ in events.lines() {});
    fault(&proxy);
    let c = wait_with_timeout(&mut cut, LONG).code();
    let w = wait_with_timeout(&mut whole, LONG).code();
    let s = wait_with_timeout(&mut sender, LONG).code();
    drop(relay);
    drop(proxy);
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    let logs = format!(
        "cut receiver: {}\nwhole receiver: {}\nsender: {}",
        log("cut.err"),
        log("whole.err"),
        log("send.err")
    );
    assert_eq!(c, Some(0), "the cut receiver: {logs}");
    assert_eq!(w, Some(0), "the other receiver: {logs}");
    assert_eq!(s, Some(0), "the sender: {logs}");
    let original = std::fs::read(&file).expect("original");
    for out in [&cut_out, &whole_out] {
        assert!(
            std::fs::read(out.join("big.bin")).ok() == Some(original.clone()),
            "{} holds the file byte-identical",
            out.display()
        );
    }
    logs
}

/// A pipe (`send -`) through the relay's tunnel, the relay killed once 4 MiB has reached
/// the receiver's stdout and started again on its port 2 s later: the stream's tunnel
/// connection resumes through the new relay, so both sides exit 0 and stdout holds every
/// byte fed in, once and in order (without resumable tunnel ends the stream died with
/// "the stream ended before the sender finished").
#[test]
fn a_piped_stream_through_the_tunnel_survives_a_relay_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let source = dir.path().join("stream.bin");
    write_random(&source, 40 << 20);
    let fed = std::fs::read(&source).expect("source");
    let (relay, port) = RelayProcess::start_free();

    let mut send = convey_at(&home, port);
    send.args(["send", "--transport", "relay", "-"])
        .stdin(Stdio::piped());
    let send_err = dir.path().join("send.err");
    let (mut sender, code) = spawn_with_code(send, &send_err);
    let mut stdin = sender.stdin.take().expect("stdin");
    let feed = fed.clone();
    // About 5 MiB/s, so the stream is still running when the relay dies.
    let feeder = std::thread::spawn(move || {
        for chunk in feed.chunks(256 << 10) {
            if stdin.write_all(chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let recv_err = dir.path().join("recv.err");
    let mut receiver = convey_at(&home, port)
        .args(["receive", "--yes", "--transport", "relay", &code])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&recv_err).expect("stderr file"))
        .spawn()
        .expect("receive");
    let mut stdout = receiver.stdout.take().expect("stdout");
    let got = Arc::new(Mutex::new(Vec::with_capacity(fed.len())));
    let sink = Arc::clone(&got);
    let reader = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("sink").extend_from_slice(&buf[..n]);
        }
    });
    let started = Instant::now();
    while got.lock().expect("sink").len() < 4 << 20 {
        assert!(
            started.elapsed() < LONG,
            "4 MiB never reached the receiver's stdout"
        );
        assert!(
            receiver.try_wait().expect("try_wait").is_none(),
            "the receiver ended before the relay died: {}",
            std::fs::read_to_string(&recv_err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    relay.kill();
    std::thread::sleep(Duration::from_secs(2));
    let relay = RelayProcess::start(port).expect("the relay started again on its port");

    let r = wait_with_timeout(&mut receiver, LONG).code();
    let s = wait_with_timeout(&mut sender, LONG).code();
    drop(relay);
    let _ = feeder.join();
    let _ = reader.join();
    let err = format!(
        "receiver: {}\nsender: {}",
        std::fs::read_to_string(&recv_err).unwrap_or_default(),
        std::fs::read_to_string(&send_err).unwrap_or_default()
    );
    assert_eq!(r, Some(0), "the receiver: {err}");
    assert_eq!(s, Some(0), "the sender: {err}");
    let got = got.lock().expect("sink");
    assert_eq!(
        got.len(),
        fed.len(),
        "stdout holds as many bytes as were fed: {err}"
    );
    assert!(*got == fed, "stdout holds the bytes fed, once and in order");
}
