//! Graceful shutdown of the relay: new sessions are turned away, a relayed transfer already
//! running finishes within the grace period, and one that outlasts it fails cleanly on both
//! sides, leaving no complete-looking file.

use std::time::{Duration, Instant};

use convey::Transport;
use convey_tests::{
    Recorder, TestRelay, dir_entries, random_file, receive_options, send_options, sha256_file,
};

/// Start a relayed transfer of `size` bytes capped at `rate` bytes/s; returns once the
/// receiver has some bytes, with both tasks running.
async fn start_relayed(
    relay: &TestRelay,
    dir: &std::path::Path,
    size: u64,
    rate: u32,
) -> (
    String,
    tokio::task::JoinHandle<Result<convey::SendReport, convey::Error>>,
    tokio::task::JoinHandle<Result<convey::ReceiveReport, convey::Error>>,
) {
    let src = dir.join("payload.bin");
    let digest = random_file(&src, size, 11);
    let rec = Recorder::default();
    let mut send = send_options(relay, src);
    send.transport = Transport::Relay;
    send.upload_limit = std::num::NonZeroU32::new(rate);
    let sending = tokio::spawn(convey::send(send, rec.sink()));
    let got = Recorder::default();
    let mut recv = receive_options(relay, rec.code().await, dir.join("out"));
    recv.transport = Transport::Relay;
    let receiving = tokio::spawn(convey::receive(recv, got.sink()));
    got.wait_for_bytes().await;
    (digest, sending, receiving)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_relayed_transfer_finishes_within_the_grace_period() {
    let relay = TestRelay::spawn_with(|c| c.shutdown_grace_secs = 60).await;
    let at = relay.server.local_addr();
    let dir = tempfile::tempdir().expect("tempdir");
    let (digest, sending, receiving) = start_relayed(&relay, dir.path(), 12 << 20, 4 << 20).await;
    let stopping = tokio::spawn(relay.server.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(at).await.is_err(),
        "a draining relay accepts no new connections"
    );
    let received = tokio::time::timeout(Duration::from_secs(60), receiving)
        .await
        .expect("in time")
        .expect("task");
    received.expect("the transfer finished during the grace period");
    sending.await.expect("task").expect("sender done");
    assert_eq!(sha256_file(&dir.path().join("out/payload.bin")), digest);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown ends once the sessions are done")
        .expect("task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_period_a_transfer_fails_cleanly() {
    let relay = TestRelay::spawn_with(|c| c.shutdown_grace_secs = 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, sending, receiving) = start_relayed(&relay, dir.path(), 64 << 20, 2 << 20).await;
    let began = Instant::now();
    relay.server.shutdown().await;
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "cut after the grace period"
    );
    // Both sides wait up to the client's 60 s relay grace period for it to come back.
    let received = tokio::time::timeout(Duration::from_secs(100), receiving)
        .await
        .expect("the receiver gives up in time")
        .expect("task");
    let e = received.expect_err("cut short");
    assert!(matches!(e.exit_code(), 6 | 7), "{e} ({})", e.exit_code());
    let sent = tokio::time::timeout(Duration::from_secs(100), sending)
        .await
        .expect("the sender gives up in time")
        .expect("task");
    assert!(sent.is_err(), "the sender knows it did not finish");
    let left = dir_entries(&dir.path().join("out"));
    assert!(
        left.iter().all(|n| n.starts_with(".convey-")),
        "only the hidden partial folder remains: {left:?}"
    );
}
