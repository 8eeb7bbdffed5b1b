//! Horizontal scale: two relay instances sharing one Redis (Debian's redis-server, started
//! by the test on loopback) pair a sender on one with a receiver on the other, never hand out
//! the same nameplate twice, and serve one tracker view; when the instance both sides of a
//! transfer used goes away, they move to the other through the load balancer and finish.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use std::sync::{Arc, Mutex};

use convey::{RelayAddr, Transport};
use convey_tests::{
    Recorder, Side, TestRelay, http_get, next_json, random_file, receive_options, rendezvous_ws, send_json,
    send_options, sha256_file, transfer,
};

/// A private redis-server on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Self::start_on(port)
    }

    fn start_on(port: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is required (apt-get install redis-server; .ci/run installs it)");
        let began = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("redis://127.0.0.1:{port}/0"),
            _dir: dir,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The port `redis` listens on, to start it again there.
fn redis_port(redis: &Redis) -> u16 {
    redis
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// Wait (bounded) until `relay` reaches Redis again, and its subscription is renewed.
async fn back_on_redis(relay: &TestRelay) {
    let began = Instant::now();
    while http_get(relay.server.local_addr(), "/healthz").await.0 != 200 {
        assert!(began.elapsed() < Duration::from_secs(20), "reconnected to Redis");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The subscriptions are renewed within about a second of the loss.
    tokio::time::sleep(Duration::from_secs(3)).await;
}

fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

async fn announce(relay: &TestRelay, hash: [u8; 20], peer: u8, port: u16) -> String {
    announce_event(relay, hash, (peer, port), "").await
}

/// An announce of `peer` with `event` (`&event=stopped`, or nothing).
async fn announce_event(relay: &TestRelay, hash: [u8; 20], (peer, port): (u8, u16), event: &str) -> String {
    let q = format!(
        "/announce?info_hash={}&peer_id={}&port={port}&left=5&compact=0{event}",
        pct(&hash),
        pct(&[peer; 20])
    );
    let (status, body) = http_get(relay.server.local_addr(), &q).await;
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_sharing_redis_act_as_one() {
    convey_tests::init_tracing();
    let redis = Redis::start();
    let a = TestRelay::spawn_with(|c| c.redis_url = Some(redis.url.clone())).await;
    let b = TestRelay::spawn_with(|c| c.redis_url = Some(redis.url.clone())).await;

    // Nameplates are unique across instances.
    let mut on_a = rendezvous_ws(a.server.local_addr(), None).await;
    send_json(&mut on_a, serde_json::json!({"type": "allocate"})).await;
    let first = next_json(&mut on_a).await["nameplate"].clone();
    let mut on_b = rendezvous_ws(b.server.local_addr(), None).await;
    send_json(&mut on_b, serde_json::json!({"type": "allocate"})).await;
    assert_ne!(next_json(&mut on_b).await["nameplate"], first);

    // A swarm registered through instance A is served by instance B's tracker too.
    let mut joiner = rendezvous_ws(b.server.local_addr(), None).await;
    send_json(
        &mut joiner,
        serde_json::json!({"type": "claim", "nameplate": first}),
    )
    .await;
    assert_eq!(next_json(&mut joiner).await["peer_present"], true);
    assert_eq!(
        next_json(&mut on_a).await["type"],
        "peer-joined",
        "told across instances"
    );
    let hash = [0x42; 20];
    send_json(
        &mut on_a,
        serde_json::json!({"type": "register-swarm", "info_hash": hex::encode(hash)}),
    )
    .await;
    assert_eq!(next_json(&mut on_a).await["type"], "swarm-registered");
    let reply = announce(&a, hash, 1, 1111).await;
    assert!(!reply.contains("failure reason"), "{reply}");
    let reply = announce(&b, hash, 2, 2222).await;
    assert!(
        reply.contains("4:porti1111e"),
        "instance B knows the peer that announced to A: {reply}"
    );
    drop((on_a, on_b, joiner));

    // A real transfer: the sender's code comes from instance A, the receiver joins on B.
    transfer(
        &a,
        Side::new(&a.addr, Transport::Auto),
        Side::new(&b.addr, Transport::Auto),
        16 << 20,
    )
    .await;

    // A swarm outlives its registration while its peers announce; once the registering
    // session left and its peers stopped, neither instance serves it. (The probe is itself
    // a `stopped` announce, so it does not keep the swarm alive.)
    let stopped = "&event=stopped";
    assert!(
        !announce_event(&b, hash, (3, 3333), stopped)
            .await
            .contains("failure reason")
    );
    announce_event(&a, hash, (1, 1111), stopped).await;
    announce_event(&b, hash, (2, 2222), stopped).await;
    let began = Instant::now();
    while !announce_event(&b, hash, (3, 3333), stopped)
        .await
        .contains("unregistered")
    {
        assert!(began.elapsed() < Duration::from_secs(10), "registration released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Redis goes away: health checks say so; it comes back: both instances pair again.
    let port = redis_port(&redis);
    drop(redis);
    assert_eq!(http_get(a.server.local_addr(), "/healthz").await.0, 503);
    let _redis = Redis::start_on(port);
    back_on_redis(&a).await;
    transfer(
        &b,
        Side::new(&b.addr, Transport::Auto),
        Side::new(&a.addr, Transport::Auto),
        1 << 20,
    )
    .await;
    a.server.shutdown().await;
    b.server.shutdown().await;
}

/// One code for three receivers, with the sender on instance A and receivers on both: each
/// is paired with its own sender connection across instances, and all three complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_receivers_across_two_relays_sharing_redis() {
    convey_tests::init_tracing();
    let redis = Redis::start();
    let a = TestRelay::spawn_with(|c| c.redis_url = Some(redis.url.clone())).await;
    let b = TestRelay::spawn_with(|c| c.redis_url = Some(redis.url.clone())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("many.bin");
    let digest = convey_tests::random_file(&src, 8 << 20, 51);
    let mut opts = convey_tests::send_options(&a, src);
    opts.receivers = convey::Receivers::Count(std::num::NonZeroU32::new(3).expect("3"));
    let rec = convey_tests::Recorder::default();
    let sender = tokio::spawn(convey::send(opts, rec.sink()));
    let code = rec.code().await;
    let mut receivers = Vec::new();
    for (i, relay) in [&a, &b, &b].into_iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        std::fs::create_dir(&out).expect("mkdir");
        let opts = convey_tests::receive_options(relay, code.clone(), out.clone());
        receivers.push((out, tokio::spawn(convey::receive(opts, convey::ignore_events()))));
    }
    for (out, task) in receivers {
        tokio::time::timeout(Duration::from_secs(120), task)
            .await
            .expect("in time")
            .expect("task")
            .expect("each receiver completes across instances");
        assert_eq!(convey_tests::sha256_file(&out.join("many.bin")), digest);
    }
    tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .expect("sender finished")
        .expect("task")
        .expect("the sender saw all three complete");
    a.server.shutdown().await;
    b.server.shutdown().await;
}

/// A load balancer in front of the instances: a TCP forwarder sending each new connection
/// to the upstream of the moment. Stopped when dropped.
struct Balancer {
    addr: std::net::SocketAddr,
    upstream: Arc<Mutex<std::net::SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    async fn start(first: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the balancer");
        let addr = listener.local_addr().expect("balancer address");
        let upstream = Arc::new(Mutex::new(first));
        let to = upstream.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let target = *to.lock().expect("upstream");
                conns.spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                    }
                });
            }
        });
        Self { addr, upstream, task }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The instance both sides of a direct transfer reached is cut mid-transfer (no grace) and
/// the balancer sends new connections to the other instance: both sides reconnect there,
/// meet on their session's resume slot through Redis, and the transfer completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_instance_both_sides_used_goes_away_they_move_to_the_other() {
    convey_tests::init_tracing();
    let redis = Redis::start();
    let a = TestRelay::spawn_with(|c| {
        c.redis_url = Some(redis.url.clone());
        c.shutdown_grace_secs = 0;
    })
    .await;
    let b = TestRelay::spawn_with(|c| c.redis_url = Some(redis.url.clone())).await;
    let lb = Balancer::start(a.server.local_addr()).await;
    let via: RelayAddr = format!("http://{}", lb.addr).parse().expect("address");

    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("payload.bin");
    let digest = random_file(&src, 24 << 20, 5);
    let rec = Recorder::default();
    let mut send = send_options(&a, src);
    send.relay = via.clone();
    send.transport = Transport::Direct;
    send.upload_limit = std::num::NonZeroU32::new(4 << 20);
    let sending = tokio::spawn(convey::send(send, rec.sink()));
    let got = Recorder::default();
    let mut recv = receive_options(&a, rec.code().await, dir.path().join("out"));
    recv.relay = via;
    recv.transport = Transport::Direct;
    let receiving = tokio::spawn(convey::receive(recv, got.sink()));
    got.wait_for_bytes().await;
    *lb.upstream.lock().expect("upstream") = b.server.local_addr();
    a.server.shutdown().await;
    assert!(!receiving.is_finished(), "the instance went away mid-transfer");

    let received = tokio::time::timeout(Duration::from_secs(100), receiving)
        .await
        .expect("in time")
        .expect("task");
    received.expect("the receiver finished through the other instance");
    tokio::time::timeout(Duration::from_secs(30), sending)
        .await
        .expect("in time")
        .expect("task")
        .expect("the sender finished through the other instance");
    assert_eq!(sha256_file(&dir.path().join("out/payload.bin")), digest);
    b.server.shutdown().await;
}

/// Two relays on one Redis, the sender on one and the receiver on the other. Redis goes
/// away in the middle of a direct transfer: the transfer finishes (its messages take the
/// peer route) and both sides succeed; meanwhile a new `send` on either instance is told
/// that the relay's shared store is away, within the store's few-second bound rather than
/// after a minute of silence; once Redis is back, codes are handed out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_redis_is_away_a_running_transfer_finishes_and_new_codes_are_refused() {
    through_a_redis_outage(Transport::Direct, 61, None).await;
}

/// The same on the tunnel, which has no peer route. A tunnel's two ends meet on one
/// instance (the README's load-balancer rule), so both sides use the first; its bytes keep
/// moving, but the session's messages cross Redis. Each side treats the relay's
/// `unavailable` as a lost relay and waits for it (up to 60 s). Redis comes back after 6 s,
/// empty: the relay closes its sessions' connections, as messages may have been lost, and
/// the two sides meet again on their resume slot, re-send what the other lacks and finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn while_redis_is_away_a_tunnel_transfer_waits_for_it_and_finishes() {
    through_a_redis_outage(Transport::Relay, 62, Some(Duration::from_secs(6))).await;
}

type Sending = tokio::task::JoinHandle<Result<convey::SendReport, convey::Error>>;
type Receiving = tokio::task::JoinHandle<Result<convey::ReceiveReport, convey::Error>>;

/// Start sending `src` at 4 MiB/s (32 MiB take about 8 s, so a fault lands while bytes
/// move) from the sender's relay to a receiver on the receiver's, writing into `out`;
/// return once bytes move.
async fn paced_transfer(
    (senders, receivers): (&TestRelay, &TestRelay),
    src: std::path::PathBuf,
    out: std::path::PathBuf,
    transport: Transport,
) -> (Sending, Receiving) {
    let mut opts = send_options(senders, src);
    opts.transport = transport;
    opts.upload_limit = std::num::NonZeroU32::new(4 << 20);
    let sent = Recorder::default();
    let sender = tokio::spawn(convey::send(opts, sent.sink()));
    let rec = Recorder::default();
    let mut ropts = receive_options(receivers, sent.code().await, out);
    ropts.transport = transport;
    let receiver = tokio::spawn(convey::receive(ropts, rec.sink()));
    rec.wait_for_bytes().await;
    (sender, receiver)
}

/// A paced transfer on `transport` with Redis killed once bytes move, and started again
/// `back_after` later (or only once the transfer is over).
async fn through_a_redis_outage(transport: Transport, seed: u64, back_after: Option<Duration>) {
    convey_tests::init_tracing();
    let redis = Redis::start();
    let port = redis_port(&redis);
    let relay = TestRelay::spawn_with(|c| c.redis_url = Some(redis.url.clone())).await;
    let other = TestRelay::spawn_with(|c| c.redis_url = Some(redis.url.clone())).await;
    // The receiver's instance: the other one, unless the tunnel needs both on one.
    let theirs = if transport == Transport::Relay {
        &relay
    } else {
        &other
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("outage.bin");
    let size = 32 << 20;
    let digest = random_file(&src, size, seed);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let (sender, receiver) = paced_transfer((&relay, theirs), src.clone(), out.clone(), transport).await;
    drop(redis);
    let gone = Instant::now();

    for instance in [&relay, &other] {
        let refused = tokio::time::timeout(
            Duration::from_secs(20),
            convey::send(send_options(instance, src.clone()), convey::ignore_events()),
        )
        .await
        .expect("a new code is answered while Redis is away")
        .expect_err("no code without the shared store");
        assert!(
            matches!(&refused, convey::Error::Relay { message, .. } if message.contains("shared store")),
            "{refused}"
        );
    }
    let mut redis = None;
    if let Some(away) = back_after {
        tokio::time::sleep(away.saturating_sub(gone.elapsed())).await;
        assert!(
            !receiver.is_finished(),
            "Redis came back before the transfer ended"
        );
        redis = Some(Redis::start_on(port));
    }

    tokio::time::timeout(Duration::from_secs(120), receiver)
        .await
        .expect("receiver finished")
        .expect("task")
        .expect("the running transfer finishes across the Redis outage");
    assert_eq!(sha256_file(&out.join("outage.bin")), digest);
    tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("sender finished")
        .expect("task")
        .expect("the sender succeeds too");

    let redis = redis.unwrap_or_else(|| Redis::start_on(port));
    back_on_redis(&relay).await;
    back_on_redis(&other).await;
    transfer(
        &relay,
        Side::new(&relay.addr, Transport::Auto),
        Side::new(&other.addr, Transport::Auto),
        1 << 20,
    )
    .await;
    drop(redis);
    relay.server.shutdown().await;
    other.server.shutdown().await;
}

/// Redis keeps its data but drops the instances' subscriptions (a failover, a `CLIENT
/// KILL`): messages published meanwhile may be lost, so each instance closes its paired
/// sessions, which meet again on their resume slot and finish; a sender still waiting on
/// its code is kept (its record is still there), and a receiver arriving afterwards gets
/// the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_redis_subscription_drops_waiting_codes_stay_and_running_sessions_resume() {
    convey_tests::init_tracing();
    let redis = Redis::start();
    let relay = TestRelay::spawn_with(|c| c.redis_url = Some(redis.url.clone())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (running, waiting) = (dir.path().join("running.bin"), dir.path().join("waiting.bin"));
    let running_digest = random_file(&running, 32 << 20, 63);
    let waiting_digest = random_file(&waiting, 1 << 20, 64);
    for out in ["out-running", "out-waiting"] {
        std::fs::create_dir(dir.path().join(out)).expect("mkdir");
    }

    let (sender, receiver) = paced_transfer(
        (&relay, &relay),
        running,
        dir.path().join("out-running"),
        Transport::Relay,
    )
    .await;

    let held = Recorder::default();
    let holder = tokio::spawn(convey::send(send_options(&relay, waiting), held.sink()));
    let code = held.code().await;
    let killed = Command::new("redis-cli")
        .args([
            "-p",
            &redis_port(&redis).to_string(),
            "CLIENT",
            "KILL",
            "TYPE",
            "pubsub",
        ])
        .output()
        .expect("redis-cli is required (apt-get install redis-tools)");
    assert!(killed.status.success(), "CLIENT KILL: {killed:?}");
    // The instance renews its subscription about a second later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!holder.is_finished(), "the waiting sender was kept");
    assert!(
        !receiver.is_finished(),
        "the running transfer was still under way"
    );

    let got = Recorder::default();
    let late = receive_options(&relay, code, dir.path().join("out-waiting"));
    tokio::time::timeout(Duration::from_secs(60), convey::receive(late, got.sink()))
        .await
        .expect("in time")
        .expect("the waiting code still pairs");
    assert_eq!(
        sha256_file(&dir.path().join("out-waiting/waiting.bin")),
        waiting_digest
    );
    tokio::time::timeout(Duration::from_secs(30), holder)
        .await
        .expect("in time")
        .expect("task")
        .expect("the waiting sender succeeds");
    tokio::time::timeout(Duration::from_secs(120), receiver)
        .await
        .expect("in time")
        .expect("task")
        .expect("the running transfer finishes after its sessions resumed");
    tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("in time")
        .expect("task")
        .expect("its sender succeeds too");
    assert_eq!(
        sha256_file(&dir.path().join("out-running/running.bin")),
        running_digest
    );
    relay.server.shutdown().await;
}
