//! The relay's `/metrics` reflects what happened: pairings, failed key confirmations,
//! tunnelled bytes, announces, and rejections by reason.

use std::time::Duration;

use convey::Transport;
use convey_tests::{Recorder, TestRelay, random_file, receive_options, send_options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(relay: &TestRelay, path: &str) -> String {
    let mut conn = tokio::net::TcpStream::connect(relay.server.local_addr())
        .await
        .expect("connect");
    conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await.expect("reply");
    reply
}

/// The value of a metric line `name` (with labels, if any) in a Prometheus text page.
fn value(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from:\n{page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_relay_saw() {
    const SIZE: u64 = 2 << 20;
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("f.bin");
    random_file(&src, SIZE, 5);

    // A transfer through the tunnel.
    let rec = Recorder::default();
    let mut send = send_options(&relay, src.clone());
    send.transport = Transport::Relay;
    let sending = tokio::spawn(convey::send(send, rec.sink()));
    let code = rec.code().await;
    let mut recv = receive_options(&relay, code, dir.path().join("out"));
    recv.transport = Transport::Relay;
    tokio::time::timeout(
        Duration::from_secs(60),
        convey::receive(recv, convey::ignore_events()),
    )
    .await
    .expect("in time")
    .expect("received");
    sending.await.expect("task").expect("sent");

    // A wrong code, and an announce for a swarm nobody registered.
    let rec = Recorder::default();
    let sending = tokio::spawn(convey::send(send_options(&relay, src.clone()), rec.sink()));
    let code = rec.code().await;
    let wrong = format!("{}-wrong-guess", code.nameplate()).parse().expect("code");
    let _ = convey::receive(
        receive_options(&relay, wrong, dir.path().join("o2")),
        convey::ignore_events(),
    )
    .await;
    let _ = sending.await;
    let hash = "%AA".repeat(20);
    let announce = format!(
        "/announce?info_hash={hash}&peer_id={}&port=1&left=0",
        "%01".repeat(20)
    );
    assert!(get(&relay, &announce).await.contains("unregistered"));

    let page = get(&relay, "/metrics").await;
    assert!(
        page.starts_with("HTTP/1.1 200") || page.starts_with("HTTP/1.0 200"),
        "{page}"
    );
    assert!(value(&page, "convey_relay_pairings_total") >= 2, "{page}");
    assert!(
        value(&page, "convey_relay_failed_key_confirmations_total") >= 1,
        "{page}"
    );
    assert!(value(&page, "convey_relay_tunnels_paired_total") >= 1, "{page}");
    assert!(value(&page, "convey_relay_tunnel_bytes_total") >= SIZE, "{page}");
    assert!(
        value(&page, "convey_relay_tracker_announces_total") >= 1,
        "{page}"
    );
    assert!(
        value(
            &page,
            "convey_relay_rejections_total{reason=\"tracker_unregistered\"}"
        ) >= 1,
        "{page}"
    );
    assert!(!page.contains(&code.to_string()), "no code in the metrics");
}
