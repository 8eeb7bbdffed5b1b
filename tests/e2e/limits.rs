//! Each of the relay's abuse limits trips, and the client's error carries the relay's own
//! message (the CLI prints an error's text as its one-line message).

use std::{path::Path, sync::Arc, time::Duration};

use convey::{Error, Transport};
use convey_shared::protocol::rendezvous::ErrorKind;
use convey_tests::{
    Recorder, Side, TestRelay, dir_entries, next_json, random_file, receive_options, rendezvous_ws,
    send_json, send_options, sha256_file, transfer,
};

const TOKEN: &str = "operators-own-secret-token";

/// A sender on `relay` with every setting as tests use it; returns its result.
async fn send_once(relay: &TestRelay, src: &Path, wait: Duration) -> Result<convey::SendReport, Error> {
    let mut opts = send_options(relay, src.to_path_buf());
    opts.wait = Some(wait);
    tokio::time::timeout(
        Duration::from_secs(30),
        convey::send(opts, Recorder::default().sink()),
    )
    .await
    .expect("send ends in time")
}

fn relay_kind(e: &Error) -> Option<ErrorKind> {
    match e {
        Error::Relay { kind, .. } => Some(*kind),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_relay_needs_its_token_to_open_a_code_but_not_to_join_one() {
    let relay = TestRelay::spawn_with(|c| c.access_token = Some(TOKEN.parse().expect("token"))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("payload.bin");
    random_file(&src, 1024, 3);

    let e = send_once(&relay, &src, Duration::from_secs(5))
        .await
        .expect_err("no token");
    assert_eq!(relay_kind(&e), Some(ErrorKind::Unauthorized), "{e}");
    assert!(e.to_string().contains("--relay-token"), "{e}");
    assert_eq!(e.exit_code(), 7);

    // With the token the sender opens a code; the receiver joins with the code alone, and
    // the relay tunnel (whose sender end needs the token too) carries the transfer.
    let with_token = relay.addr.clone().with_token(Some(TOKEN.into()));
    let (paths, _) = transfer(
        &relay,
        Side::new(&with_token, Transport::Relay),
        Side::new(&relay.addr, Transport::Relay),
        4 << 20,
    )
    .await;
    assert_eq!(paths, ["relay"]);

    // The sender's end of a tunnel without the token is refused before the upgrade.
    let url = format!(
        "ws://{}/v2/tunnel/{}/listen",
        relay.server.local_addr(),
        "ab".repeat(32)
    );
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_codes_are_rate_limited_per_address() {
    let relay = TestRelay::spawn_with(|c| {
        c.rate_per_minute = 1;
        c.rate_burst = 2;
    })
    .await;
    let at = relay.server.local_addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut ws = rendezvous_ws(at, None).await;
        send_json(&mut ws, serde_json::json!({"type": "allocate"})).await;
        assert_eq!(next_json(&mut ws).await["type"], "claimed");
        held.push(ws);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("f");
    random_file(&src, 10, 1);
    let e = send_once(&relay, &src, Duration::from_secs(5))
        .await
        .expect_err("third code refused");
    assert_eq!(relay_kind(&e), Some(ErrorKind::RateLimited), "{e}");
    assert!(
        e.to_string().contains("too many new codes from your address"),
        "{e}"
    );
    assert!(e.to_string().contains("try again in"), "{e}");
    drop(held);
    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_nameplates_are_capped_and_lone_sides_expire() {
    let relay = TestRelay::spawn_with(|c| {
        c.max_nameplates = 1;
        c.nameplate_ttl_secs = 1;
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("f");
    random_file(&src, 10, 1);
    let mut ws = rendezvous_ws(relay.server.local_addr(), None).await;
    send_json(&mut ws, serde_json::json!({"type": "allocate"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "claimed");
    let e = send_once(&relay, &src, Duration::from_secs(5))
        .await
        .expect_err("full");
    assert_eq!(relay_kind(&e), Some(ErrorKind::Exhausted), "{e}");
    assert!(e.to_string().contains("no free codes"), "{e}");

    // The lone side above expires after the TTL, and says so; then a sender gets a code,
    // and its own lone wait expires the same way.
    let msg = next_json(&mut ws).await;
    assert_eq!(msg["kind"], "expired", "{msg}");
    let e = send_once(&relay, &src, Duration::from_secs(20))
        .await
        .expect_err("expires");
    assert_eq!(relay_kind(&e), Some(ErrorKind::Expired), "{e}");
    assert!(
        e.to_string().contains("nobody else used this code in time"),
        "{e}"
    );
    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_but_a_slow_transfer_is_not() {
    let relay = TestRelay::spawn_with(|c| c.idle_secs = 1).await;
    let at = relay.server.local_addr();

    // Connected but never claiming a code.
    let mut ws = rendezvous_ws(at, None).await;
    let msg = next_json(&mut ws).await;
    assert_eq!(msg["kind"], "idle", "{msg}");
    assert!(
        msg["message"]
            .as_str()
            .is_some_and(|m| m.contains("without claiming a code"))
    );

    // Claiming, then never reading (so never answering the relay's pings). A WebSocket
    // library would answer pings as soon as it reads, so this side is raw TCP.
    let raw = silent_claim(at).await;
    assert!(raw.contains("\"type\":\"claimed\""), "{raw}");
    assert!(
        raw.contains("\"kind\":\"idle\"") && raw.contains("not even a pong"),
        "{raw}"
    );

    // A real transfer that takes several idle periods: a receiver that thinks for 2.5 s
    // before accepting, and a sender capped at 2 MiB/s. Both clients answer pings.
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("payload.bin");
    let digest = random_file(&src, 6 << 20, 5);
    let rec = Recorder::default();
    let mut send = send_options(&relay, src.clone());
    send.upload_limit = std::num::NonZeroU32::new(2 << 20);
    let sending = tokio::spawn(convey::send(send, rec.sink()));
    let out = dir.path().join("out");
    let mut recv = receive_options(&relay, rec.code().await, out.clone());
    recv.accept = Arc::new(|_| {
        std::thread::sleep(Duration::from_millis(2500));
        true
    });
    tokio::time::timeout(
        Duration::from_secs(60),
        convey::receive(recv, Recorder::default().sink()),
    )
    .await
    .expect("in time")
    .expect("a slow but live transfer is not idle");
    sending.await.expect("task").expect("sent");
    assert_eq!(sha256_file(&out.join("payload.bin")), digest);
    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_with_a_reason() {
    let relay = TestRelay::spawn_with(|c| c.max_message_bytes = 4096).await;
    let mut ws = rendezvous_ws(relay.server.local_addr(), None).await;
    send_json(&mut ws, serde_json::json!({"type": "allocate"})).await;
    assert_eq!(next_json(&mut ws).await["type"], "claimed");
    send_json(
        &mut ws,
        serde_json::json!({"type": "send", "body": "A".repeat(8192)}),
    )
    .await;
    let msg = next_json(&mut ws).await;
    assert_eq!(msg["kind"], "bad-request", "{msg}");
    let text = msg["message"].as_str().unwrap_or_default();
    assert!(
        text.contains("closed this connection") && text.contains("too long"),
        "{text}"
    );
    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_byte_cap_ends_a_relayed_transfer_with_the_relays_reason() {
    let relay = TestRelay::spawn_with(|c| c.tunnel_max_bytes = 2 << 20).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("payload.bin");
    random_file(&src, 16 << 20, 8);
    let rec = Recorder::default();
    let mut send = send_options(&relay, src.clone());
    send.transport = Transport::Relay;
    let sending = tokio::spawn(convey::send(send, rec.sink()));
    let out = dir.path().join("out");
    let mut recv = receive_options(&relay, rec.code().await, out.clone());
    recv.transport = Transport::Relay;
    let e = tokio::time::timeout(
        Duration::from_secs(30),
        convey::receive(recv, Recorder::default().sink()),
    )
    .await
    .expect("the receiver stops soon after the cap")
    .expect_err("capped");
    assert!(e.to_string().contains("byte cap"), "{e}");
    assert_eq!(e.exit_code(), 6);
    assert!(
        !dir_entries(&out).iter().any(|n| n == "payload.bin"),
        "no complete-looking file"
    );
    let _ = tokio::time::timeout(Duration::from_secs(30), sending).await;
    relay.server.shutdown().await;
}

/// Open the rendezvous WebSocket by hand, allocate a code, then read nothing for 2.5 s;
/// returns everything the relay sent (server frames are unmasked, so JSON shows as text).
async fn silent_claim(at: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(at).await.expect("connect");
    let hello = format!(
        "GET /v1/rendezvous HTTP/1.1\r\nHost: {at}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: convey-v1\r\n\r\n"
    );
    s.write_all(hello.as_bytes()).await.expect("upgrade");
    // One masked text frame (clients must mask), with a zero mask for simplicity.
    let payload = br#"{"type":"allocate"}"#;
    let mut frame = vec![
        0x81,
        0x80 | u8::try_from(payload.len()).expect("short"),
        0,
        0,
        0,
        0,
    ];
    frame.extend_from_slice(payload);
    s.write_all(&frame).await.expect("allocate");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the relay closes the connection")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}
