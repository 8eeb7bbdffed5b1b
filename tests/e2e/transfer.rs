//! Whole transfers through a real relay and real librqbit sessions.

use std::time::Duration;

use convey::Event;
use convey_tests::{
    Recorder, TestRelay, dir_entries, random_file, receive_options, send_options, sha256_file,
};

async fn roundtrip(size: u64) {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("payload.bin");
    let digest = random_file(&src, size, size);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir out");

    let rec = Recorder::default();
    let sender = tokio::spawn(convey::send(send_options(&relay, src.clone()), rec.sink()));
    let code = rec.code().await;
    let got = tokio::time::timeout(
        Duration::from_secs(120),
        convey::receive(
            receive_options(&relay, code, out.clone()),
            convey::ignore_events(),
        ),
    )
    .await
    .expect("receive finished in time")
    .expect("receive succeeded");
    let sent = sender.await.expect("sender task").expect("send succeeded");

    let convey::Received::Files { paths, count } = &got.received else {
        panic!("expected files, got {:?}", got.received)
    };
    assert_eq!(
        (paths.as_slice(), *count),
        ([out.join("payload.bin")].as_slice(), 1)
    );
    assert_eq!((got.bytes, sent.bytes), (size, size));
    assert_eq!(sha256_file(&paths[0]), digest, "byte-identical");
    assert_eq!(
        dir_entries(&out),
        vec!["payload.bin"],
        "no partial files left behind"
    );
    let events = rec.events.lock().expect("lock").clone();
    assert!(
        matches!(events.first(), Some(Event::Code { .. })),
        "the code comes first: {events:?}"
    );
    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_mib_random_file_arrives_identical() {
    roundtrip(64 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_file_arrives() {
    roundtrip(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_sized_file_spanning_partial_chunks_and_pieces() {
    roundtrip(3 * 256 * 1024 + 12_345).await;
}
