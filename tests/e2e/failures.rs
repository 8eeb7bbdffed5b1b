//! Things going wrong: each ends with a clear error and nothing written.

use std::time::{Duration, Instant};

use convey::{Code, Error};
use convey_tests::{Recorder, TestRelay, dir_entries, random_file, receive_options, send_options};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_code_fails_cleanly_on_both_sides() {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("secret.txt");
    random_file(&src, 100_000, 1);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");

    let rec = Recorder::default();
    let sender = tokio::spawn(convey::send(send_options(&relay, src), rec.sink()));
    let real = rec.code().await;
    let wrong: Code = format!("{}-wrong-guess", real.nameplate()).parse().expect("code");
    assert_ne!(real, wrong);

    let started = Instant::now();
    let r = convey::receive(
        receive_options(&relay, wrong, out.clone()),
        convey::ignore_events(),
    )
    .await;
    assert!(matches!(r, Err(Error::WrongCode)), "receiver: {r:?}");
    let s = tokio::time::timeout(Duration::from_secs(10), sender)
        .await
        .expect("sender stops")
        .expect("task");
    assert!(matches!(s, Err(Error::WrongCode)), "sender: {s:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "both sides stop within seconds"
    );
    assert_eq!(Error::WrongCode.exit_code(), 3);
    assert!(dir_entries(&out).is_empty(), "nothing written");

    // The nameplate cannot be used again for a second guess: the sender is gone.
    let mut again = receive_options(&relay, real, out.clone());
    again.wait = Duration::from_millis(500);
    let r = convey::receive(again, convey::ignore_events()).await;
    assert!(matches!(r, Err(Error::Timeout(_))), "retry: {r:?}");
    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_without_sender_times_out_clearly() {
    let relay = TestRelay::spawn().await;
    let out = tempfile::tempdir().expect("tempdir");
    let mut opts = receive_options(
        &relay,
        "42-pilot-planet".parse().expect("code"),
        out.path().to_owned(),
    );
    opts.wait = Duration::from_secs(1);
    let started = Instant::now();
    let err = convey::receive(opts, convey::ignore_events())
        .await
        .expect_err("must time out");
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(err.to_string().contains("no sender appeared"), "{err}");
    assert_eq!(err.exit_code(), 4);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(dir_entries(out.path()).is_empty());
    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_relay_is_reported() {
    // Bind and drop to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let relay: convey::RelayAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("f");
    random_file(&src, 10, 1);
    let opts = convey::SendOptions {
        relay,
        code: None,
        payload: convey::Payload::Paths(vec![src]),
        upload_limit: None,
        transport: convey::Transport::Auto,
        wait: None,
        receivers: convey::Receivers::ONE,
        compress: true,
    };
    let err = convey::send(opts, convey::ignore_events())
        .await
        .expect_err("no relay");
    assert!(matches!(err, Error::RelayUnreachable { .. }), "{err:?}");
    assert_eq!(err.exit_code(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_on_a_paired_code_is_refused() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("f");
    random_file(&src, 1 << 20, 3);
    let rec = Recorder::default();
    let mut opts = send_options(&relay, src);
    opts.upload_limit = std::num::NonZeroU32::new(64 * 1024);
    let sender = tokio::spawn(convey::send(opts, rec.sink()));
    let code = rec.code().await;
    let out1 = dir.path().join("o1");
    let receiver = tokio::spawn(convey::receive(
        receive_options(&relay, code.clone(), out1),
        convey::ignore_events(),
    ));
    // Wait until the two sides are paired, then try to join as a third.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let third = convey::receive(
        receive_options(&relay, code, dir.path().join("o2")),
        convey::ignore_events(),
    )
    .await;
    match third {
        Err(Error::Relay { message, .. }) => assert!(message.contains("already in use"), "{message}"),
        other => panic!("third party must be refused, got {other:?}"),
    }
    receiver.abort();
    let _ = receiver.await;
    let _ = tokio::time::timeout(Duration::from_secs(30), sender).await;
    relay.server.shutdown().await;
}
