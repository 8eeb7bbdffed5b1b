//! One code, many receivers, through a real relay and real librqbit sessions on loopback:
//! every receiver completes, receivers serve each other (a late one completes from them
//! after the sender has gone), wrong codes are counted and close the code.

use std::{num::NonZeroU32, path::PathBuf, time::Duration};

use convey::{Code, Error, Event, Receivers, Transport};
use convey_tests::{Recorder, TestRelay, random_file, receive_options, send_options, sha256_file, text_file};

fn receivers(n: u32) -> Receivers {
    Receivers::Count(NonZeroU32::new(n).expect("non-zero"))
}

type Receiving = tokio::task::JoinHandle<Result<convey::ReceiveReport, Error>>;

/// Writes a test file of `size` bytes from `seed` and returns its SHA-256.
type WriteFile = fn(&std::path::Path, u64, u64) -> String;

/// A swarm sender under test: its relay and folder, the file's SHA-256, the sender's
/// events and task, and its code.
struct Swarm {
    relay: TestRelay,
    dir: tempfile::TempDir,
    digest: String,
    rec: Recorder,
    sender: tokio::task::JoinHandle<Result<convey::SendReport, Error>>,
    code: Code,
}

/// Through a fresh relay, send `name` (`size` bytes that `write` makes from `seed`) to `n`
/// receivers, the sender's options adjusted by `tweak`.
async fn swarm(
    name: &str,
    (size, seed, write): (u64, u64, WriteFile),
    n: u32,
    tweak: impl FnOnce(&mut convey::SendOptions),
) -> Swarm {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join(name);
    let digest = write(&src, size, seed);
    let mut opts = send_options(&relay, src);
    opts.receivers = receivers(n);
    tweak(&mut opts);
    let rec = Recorder::default();
    let sender = tokio::spawn(convey::send(opts, rec.sink()));
    let code = rec.code().await;
    Swarm {
        relay,
        dir,
        digest,
        rec,
        sender,
        code,
    }
}

/// A receiver of `code` on `transport` into a fresh folder under `root`, recording its
/// events.
fn receiver(
    relay: &TestRelay,
    code: &Code,
    (root, name): (&std::path::Path, &str),
    transport: Transport,
) -> (PathBuf, Recorder, Receiving) {
    let out = root.join(name);
    std::fs::create_dir(&out).expect("mkdir out");
    let rec = Recorder::default();
    let mut opts = receive_options(relay, code.clone(), out.clone());
    opts.seed_for = Duration::from_secs(60);
    opts.transport = transport;
    let task = tokio::spawn(convey::receive(opts, rec.sink()));
    (out, rec, task)
}

/// A receiver's report, once it ended within `secs`, which must be a success.
async fn finished(task: Receiving, secs: u64, what: &str) -> convey::ReceiveReport {
    tokio::time::timeout(Duration::from_secs(secs), task)
        .await
        .expect("receiver finished in time")
        .expect("receiver task")
        .expect(what)
}

/// How the sender ended (bounded).
async fn sender_end(
    sender: tokio::task::JoinHandle<Result<convey::SendReport, Error>>,
) -> Result<convey::SendReport, Error> {
    tokio::time::timeout(Duration::from_secs(30), sender)
        .await
        .expect("sender finished")
        .expect("sender task")
}

/// The sender's receiver events: state, receivers done, failed tries.
fn receiver_events(rec: &Recorder) -> Vec<(String, u32, u32)> {
    rec.events
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|e| match e {
            Event::Receiver {
                state, done, tries, ..
            } => Some((state.clone(), *done, *tries)),
            _ => None,
        })
        .collect()
}

/// `receiver_events` in `state`, as (done, tries).
fn in_state(rec: &Recorder, state: &str) -> Vec<(u32, u32)> {
    receiver_events(rec)
        .into_iter()
        .filter(|(s, ..)| s == state)
        .map(|(_, done, tries)| (done, tries))
        .collect()
}

/// Wait (bounded) until `rec` saw an event `pred` matches.
async fn saw(rec: &Recorder, what: &str, pred: impl Fn(&Event) -> bool) {
    for _ in 0..1200 {
        if rec.events.lock().expect("lock").iter().any(&pred) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no {what} within 120 s: {:?}", rec.events.lock().expect("lock"));
}

fn sources(rec: &Recorder) -> (u64, u64) {
    rec.events
        .lock()
        .expect("lock")
        .iter()
        .find_map(|e| match e {
            Event::Sources {
                from_sender,
                from_receivers,
            } => Some((*from_sender, *from_receivers)),
            _ => None,
        })
        .expect("a sources event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_receivers_on_one_code_all_get_the_file() {
    convey_tests::init_tracing();
    let size = 24 << 20;
    let Swarm {
        relay,
        dir,
        digest,
        rec,
        sender,
        code,
    } = swarm("big.bin", (size, 41, random_file), 4, |_| {}).await;
    assert_eq!(
        code.to_string().split('-').count(),
        4,
        "three words for several receivers: {code}"
    );
    let rs: Vec<_> = (0..4)
        .map(|i| receiver(&relay, &code, (dir.path(), &format!("r{i}")), Transport::Auto))
        .collect();
    for (out, rec, task) in rs {
        let got = finished(task, 180, "receive succeeded").await;
        assert_eq!(got.bytes, size);
        assert_eq!(sha256_file(&out.join("big.bin")), digest, "byte-identical");
        let (from_sender, from_receivers) = sources(&rec);
        assert!(from_sender + from_receivers > 0, "bytes came from somewhere");
    }
    let sent = sender_end(sender)
        .await
        .expect("send succeeded once all four were done");
    assert_eq!(sent.bytes, size);
    let done: Vec<u32> = in_state(&rec, "done").into_iter().map(|(d, _)| d).collect();
    assert_eq!(
        done,
        [1, 2, 3, 4],
        "each receiver's completion reported: {:?}",
        receiver_events(&rec)
    );
    relay.server.shutdown().await;
}

/// Two receivers finish; a third accepts the offer, the sender is stopped, and the third
/// completes from the first two.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_receiver_completes_from_the_others_after_the_sender_left() {
    late_receiver(random_file).await;
}

/// The same with compressed content: the receivers re-create the sender's packed frames
/// byte for byte from the plaintext they wrote, or the latecomer could not complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_receiver_completes_compressed_content_from_the_others() {
    late_receiver(text_file).await;
}

async fn late_receiver(write: WriteFile) {
    convey_tests::init_tracing();
    let size = 16 << 20;
    let Swarm {
        relay,
        dir,
        digest,
        rec: _,
        sender,
        code,
    } = swarm("late.bin", (size, 42, write), 3, |_| {}).await;
    let (out_a, rec_a, a) = receiver(&relay, &code, (dir.path(), "a"), Transport::Auto);
    let (out_b, rec_b, b) = receiver(&relay, &code, (dir.path(), "b"), Transport::Auto);
    for r in [&rec_a, &rec_b] {
        saw(r, "seeding", |e| matches!(e, Event::Seeding { .. })).await;
    }
    for out in [&out_a, &out_b] {
        assert_eq!(sha256_file(&out.join("late.bin")), digest);
    }
    // The latecomer gets the offer; then the sender is gone for good.
    let (out_c, rec_c, c) = receiver(&relay, &code, (dir.path(), "c"), Transport::Auto);
    saw(&rec_c, "offer", |e| matches!(e, Event::Offer { .. })).await;
    sender.abort();
    let _ = sender.await;
    let got = finished(c, 120, "the latecomer completes without the sender").await;
    assert_eq!(got.bytes, size);
    assert_eq!(sha256_file(&out_c.join("late.bin")), digest, "byte-identical");
    let (from_sender, from_receivers) = sources(&rec_c);
    assert!(
        from_receivers > 0,
        "the latecomer fetched from the other receivers (sender {from_sender}, receivers {from_receivers})"
    );
    a.abort();
    b.abort();
    relay.server.shutdown().await;
}

/// A receiver whose copy went bad (here overwritten on disk while it seeds, as a hostile
/// co-receiver, who holds the content key, could do) serves blocks that pass the AEAD check
/// but fail their piece hash. The latecomer drops it each time, takes those pieces from the
/// sender, and installs only the sender's bytes. There is no other receiver, so every
/// byte counted as coming from a receiver came from the forger: the test shows forged
/// pieces really arrived. (The forger also says it holds everything, which would have the
/// sender hold back for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_serving_forged_pieces_is_dropped_and_the_latecomer_completes() {
    convey_tests::init_tracing();
    let size = 32 << 20;
    // Capped, so the sender, told the forger holds every piece, holds back (to 256 KiB/s)
    // long before the latecomer is done: it must see that the latecomer gains only what it
    // sends itself and go back to full speed, or the latecomer would need over two minutes.
    let Swarm {
        relay,
        dir,
        digest,
        rec: _,
        sender,
        code,
    } = swarm("forged.bin", (size, 43, random_file), 2, |o| {
        o.upload_limit = NonZeroU32::new(8 << 20);
    })
    .await;
    let (out_a, rec_a, a) = receiver(&relay, &code, (dir.path(), "a"), Transport::Auto);
    saw(&rec_a, "seeding", |e| matches!(e, Event::Seeding { .. })).await;
    let installed = out_a.join("forged.bin");
    assert_eq!(sha256_file(&installed), digest);
    // Forge in place: rewriting the same file (same inode) gives the seeding receiver's
    // open file other bytes.
    assert_ne!(random_file(&installed, size, 44), digest, "forged");
    let (out_c, rec_c, c) = receiver(&relay, &code, (dir.path(), "c"), Transport::Auto);
    let got = finished(c, 90, "the latecomer completes beside a forger").await;
    assert_eq!(got.bytes, size);
    assert_eq!(
        sha256_file(&out_c.join("forged.bin")),
        digest,
        "only the real bytes installed"
    );
    let (from_sender, from_receivers) = sources(&rec_c);
    assert!(
        from_receivers > 0,
        "the forger served the latecomer (sender {from_sender}, receivers {from_receivers})"
    );
    assert!(
        from_sender >= size,
        "the sender made up for every forged piece: {from_sender}"
    );
    let _ = sender_end(sender).await;
    a.abort();
    relay.server.shutdown().await;
}

/// While one receiver transfers, three tries with wrong words are each reported to the
/// sender; then the code takes nobody new, and the admitted receiver still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_wrong_codes_close_the_code_and_the_admitted_receiver_finishes() {
    convey_tests::init_tracing();
    let size = 8 << 20;
    // Slow enough that the first receiver is still transferring during the tries.
    let Swarm {
        relay,
        dir,
        digest,
        rec,
        sender,
        code,
    } = swarm("slow.bin", (size, 43, random_file), 2, |o| {
        o.upload_limit = NonZeroU32::new(1 << 20);
    })
    .await;
    let (out, _rec_ok, ok) = receiver(&relay, &code, (dir.path(), "ok"), Transport::Auto);
    saw(
        &rec,
        "an acceptance",
        |e| matches!(e, Event::Receiver { state, .. } if state == "accepted"),
    )
    .await;
    let wrong: Code = format!("{}-abandon-ability-able", code.nameplate())
        .parse()
        .expect("code");
    for i in 0..3 {
        let err = convey::receive(
            receive_options(&relay, wrong.clone(), dir.path().to_owned()),
            convey::ignore_events(),
        )
        .await
        .expect_err("a wrong code is refused");
        assert!(matches!(err, Error::WrongCode), "try {i}: {err:?}");
    }
    saw(&rec, "the code closing", |e| matches!(e, Event::Closed { .. })).await;
    let tries: Vec<u32> = in_state(&rec, "wrong-code").into_iter().map(|(_, t)| t).collect();
    assert_eq!(tries, [1, 2, 3], "the sender is told of each try");
    let late = convey::receive(
        receive_options(&relay, code.clone(), dir.path().to_owned()),
        convey::ignore_events(),
    )
    .await
    .expect_err("a closed code takes nobody new, even with the right words");
    assert!(matches!(late, Error::Relay { .. }), "{late:?}");
    let got = finished(ok, 120, "the admitted receiver completes").await;
    assert_eq!(got.bytes, size);
    assert_eq!(sha256_file(&out.join("slow.bin")), digest);
    let err = sender_end(sender)
        .await
        .expect_err("one of two receivers finished before the code closed");
    assert!(matches!(err, Error::CodeClosed(_)), "{err:?}");
    assert_eq!(err.exit_code(), 3);
    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_word_code_is_refused_for_several_receivers() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("f");
    random_file(&src, 10, 1);
    let mut opts = send_options(&relay, src);
    opts.receivers = receivers(2);
    opts.code = Some("7-pilot-planet".parse().expect("code"));
    let err = convey::send(opts, convey::ignore_events())
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("33 bits"), "{err}");
    relay.server.shutdown().await;
}

/// Among three receivers, one may use only the relay (its tunnel to the sender): it
/// completes through the tunnel while the other two swarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_receiver_limited_to_the_relay_completes_while_the_others_swarm() {
    convey_tests::init_tracing();
    let size = 8 << 20;
    let Swarm {
        relay,
        dir,
        digest,
        rec,
        sender,
        code,
    } = swarm("mixed.bin", (size, 44, random_file), 3, |_| {}).await;
    let transports = [Transport::Auto, Transport::Relay, Transport::Auto];
    let tasks: Vec<_> = transports
        .iter()
        .enumerate()
        .map(|(i, t)| receiver(&relay, &code, (dir.path(), &format!("m{i}")), *t))
        .collect();
    for ((out, got, task), transport) in tasks.into_iter().zip(transports) {
        finished(task, 180, "each receiver completes").await;
        assert_eq!(sha256_file(&out.join("mixed.bin")), digest);
        if transport == Transport::Relay {
            let events = got.events.lock().expect("lock").clone();
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, Event::Transport { path } if path == "relay")),
                "the relay-only receiver came through the tunnel: {events:?}"
            );
        }
    }
    assert_eq!(in_state(&rec, "done").len(), 3, "{:?}", receiver_events(&rec));
    sender_end(sender).await.expect("all three done");
    relay.server.shutdown().await;
}
