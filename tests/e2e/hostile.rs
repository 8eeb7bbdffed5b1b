//! The receiver against a hostile sender: each test puts one crafted offer on the wire with
//! the test-only [`convey_tests::hostile`] sender and drives the real receiver (library,
//! real relay, real librqbit). Named after the defect or questionable case it closes.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use convey::{Error, OfferSummary, ReceiveReport, Transport};
use convey_shared::{
    content::ContentKey,
    manifest::MAX_ENTRIES,
    protocol::stream::{HELLO_LEN, HELLO_PREFIX},
};
use convey_tests::{
    Recorder, TestRelay,
    hostile::{HostileSender, Opened, Seeder, StreamListener, files_offer, stream_offer},
    random_file, receive_options, send_options,
};
use serde_json::json;

/// A receiver started on `code` with `--transport direct`: what it was asked (if anything)
/// and its result.
struct Receiving {
    asked: Arc<Mutex<Option<OfferSummary>>>,
    task: tokio::task::JoinHandle<Result<ReceiveReport, Error>>,
}

fn start_receiver(
    relay: &TestRelay,
    code: convey::Code,
    out: PathBuf,
    change: impl FnOnce(&mut convey::ReceiveOptions),
) -> Receiving {
    let asked: Arc<Mutex<Option<OfferSummary>>> = Arc::default();
    let mut opts = receive_options(relay, code, out);
    opts.transport = Transport::Direct;
    let seen = asked.clone();
    opts.accept = Arc::new(move |offer| {
        *seen.lock().expect("lock") = Some(offer.clone());
        true
    });
    change(&mut opts);
    let task = tokio::spawn(convey::receive(opts, convey::ignore_events()));
    Receiving { asked, task }
}

impl Receiving {
    async fn result(self) -> (Option<OfferSummary>, Result<ReceiveReport, Error>) {
        let r = tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the receiver ends within a minute")
            .expect("receiver task");
        (self.asked.lock().expect("lock").take(), r)
    }
}

/// Open a code, start the receiver on it, confirm: the hostile sender is ready to talk.
async fn pair(relay: &TestRelay, out: &Path) -> (HostileSender, Receiving) {
    pair_with(relay, out, |_| {}).await
}

async fn pair_with(
    relay: &TestRelay,
    out: &Path,
    change: impl FnOnce(&mut convey::ReceiveOptions),
) -> (HostileSender, Receiving) {
    let opened = Opened::open(relay.server.local_addr()).await;
    let receiving = start_receiver(relay, opened.code.clone(), out.to_owned(), change);
    (opened.confirm().await, receiving)
}

/// Offer what `seeder` seeds, described by `manifest`, to a receiver on `out` (its options
/// changed by `change`): what the receiver asked, and how it ended.
async fn offer_seeded(
    relay: &TestRelay,
    seeder: &Seeder,
    manifest: serde_json::Value,
    out: &Path,
    change: impl FnOnce(&mut convey::ReceiveOptions),
) -> (Option<OfferSummary>, Result<ReceiveReport, Error>) {
    let (mut hostile, receiving) = pair_with(relay, out, change).await;
    hostile
        .send(&files_offer(
            manifest,
            &seeder.key,
            &seeder.torrent,
            &[seeder.addr],
        ))
        .await;
    let ended = receiving.result().await;
    hostile.close().await;
    ended
}

fn files(dir: &Path, contents: &[&[u8]]) -> Vec<PathBuf> {
    contents
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let p = dir.join(format!("src{i}"));
            std::fs::write(&p, c).expect("write source");
            p
        })
        .collect()
}

/// The staging folder name a receiver uses for `torrent`, which the sender can compute.
fn staging_name(torrent: &[u8]) -> String {
    let (_, hash) = convey_shared::torrent::parse(torrent).expect("torrent");
    format!(".convey-{}.partial", hex::encode(&hash[..10]))
}

fn entries(dir: &Path) -> Vec<String> {
    convey_tests::dir_entries(dir)
}

/// Defect 1: an entry that names the staging folder is refused before anyone is asked,
/// alone or beside an entry whose staged path it would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staging_folder_entry_collision_is_refused() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let seeder = Seeder::start(files(dir.path(), &[b"kept", b"other"])).await;
    let staging = staging_name(&seeder.torrent);
    for names in [
        vec![format!("{staging}/kept.txt"), "y".to_owned()],
        vec![format!("{staging}/x"), "x".to_owned()],
        vec![staging.to_uppercase() + "/x", "x".to_owned()],
    ] {
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).expect("out");
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let (asked, result) = offer_seeded(&relay, &seeder, seeder.manifest(&names), &out, |_| {}).await;
        let err = result.expect_err("refused");
        assert!(asked.is_none(), "refused before asking");
        assert!(err.to_string().contains("reserved for convey's staging"), "{err}");
        assert_eq!(err.exit_code(), 8);
        assert!(entries(&out).is_empty(), "nothing written: {:?}", entries(&out));
    }
    seeder.stop().await;
    relay.server.shutdown().await;
}

/// Defect 1, the other half: staged paths are by index, so entries named like indices
/// (swapped, even) each get their own bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_named_like_staged_files_keep_their_own_bytes() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sources = files(dir.path(), &[b"first file", b"second file", b"third"]);
    let seeder = Seeder::start(sources.clone()).await;
    let out = dir.path().join("out");
    let (mut hostile, receiving) = pair(&relay, &out).await;
    let offer = files_offer(
        seeder.manifest(&["1", "0", "2/0"]),
        &seeder.key,
        &seeder.torrent,
        &[seeder.addr],
    );
    hostile.send(&offer).await;
    let answer = hostile.recv().await.expect("answer");
    assert_eq!(answer["accept"], true, "{answer}");
    let done = hostile.recv().await.expect("done");
    assert_eq!(done["ok"], true, "{done}");
    let (_, result) = receiving.result().await;
    hostile.close().await;
    result.expect("received");
    assert_eq!(std::fs::read(out.join("1")).expect("1"), b"first file");
    assert_eq!(std::fs::read(out.join("0")).expect("0"), b"second file");
    assert_eq!(std::fs::read(out.join("2/0")).expect("2/0"), b"third");
    assert_eq!(entries(&out), vec!["0", "1", "2"], "no staging folder left");
    seeder.stop().await;
    relay.server.shutdown().await;
}

/// Defect 4: a path too long for the system is refused before asking, with the name
/// escaped; so is one that fits the offer's limit but not under this `--out`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_paths_are_refused_before_asking() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let seeder = Seeder::start(files(dir.path(), &[b"x"])).await;
    let component = format!("{}\u{202e}", "c".repeat(197));
    let fifty = vec![component.as_str(); 50].join("/");
    let deep_out = (0..10).fold(dir.path().join("out"), |p, i| {
        p.join(format!("{i}{}", "d".repeat(199)))
    });
    std::fs::create_dir_all(&deep_out).expect("deep out");
    let fits_offer = vec!["e".repeat(250); 12].join("/");
    for (name, out) in [(fifty, dir.path().join("out2")), (fits_offer, deep_out.clone())] {
        let manifest = seeder.manifest(&[name.as_str()]);
        let (asked, result) = offer_seeded(&relay, &seeder, manifest, &out, |_| {}).await;
        let err = result.expect_err("refused");
        assert!(asked.is_none(), "refused before asking: {err}");
        assert!(
            !err.to_string().contains('\u{202e}'),
            "the name is escaped: {err}"
        );
        assert!(err.to_string().contains("too long"), "{err}");
    }
    assert!(entries(&deep_out).is_empty());
    seeder.stop().await;
    relay.server.shutdown().await;
}

/// Defect 5: an offer beyond the documented entry limit is refused before asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_beyond_the_entry_limit_is_refused() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let (mut hostile, receiving) = pair(&relay, &out).await;
    let empty = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b""));
    let files: Vec<_> = (0..=MAX_ENTRIES)
        .map(|i| json!({"path": format!("f{i}"), "size": 0, "sha256": empty}))
        .collect();
    let offer = files_offer(
        json!({"files": files}),
        &ContentKey::generate(),
        b"d4:infod6:lengthi16ee",
        &[],
    );
    hostile.send(&offer).await;
    let (asked, result) = receiving.result().await;
    hostile.close().await;
    let err = result.expect_err("refused");
    assert!(asked.is_none());
    assert!(
        err.to_string().contains(&format!("more than the {MAX_ENTRIES}")),
        "{err}"
    );
    relay.server.shutdown().await;
}

/// Defect 5: at the limit, a real transfer completes (every per-entry step is
/// O(n log n)); bounded generously, not timed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_at_the_entry_limit_completes() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("many");
    // The folder itself and its subfolders count as entries too: 1 + 19 + 19,980.
    let (subdirs, per_dir) = (19, 1000);
    for d in 0..subdirs {
        let sub = src.join(format!("d{d:03}"));
        std::fs::create_dir_all(&sub).expect("subdir");
        for f in 0..per_dir {
            std::fs::write(sub.join(format!("f{f:04}")), [d as u8, f as u8]).expect("file");
        }
    }
    let in_root = MAX_ENTRIES - 1 - subdirs - subdirs * per_dir;
    for f in 0..in_root {
        std::fs::write(src.join(format!("r{f:04}")), b"r").expect("file");
    }
    let rec = Recorder::default();
    let sending = tokio::spawn(convey::send(send_options(&relay, src.clone()), rec.sink()));
    let out = dir.path().join("out");
    let got = tokio::time::timeout(
        Duration::from_secs(120),
        convey::receive(
            receive_options(&relay, rec.code().await, out.clone()),
            convey::ignore_events(),
        ),
    )
    .await
    .expect("within two minutes")
    .expect("received");
    match got.received {
        convey::Received::Files { count, paths } => {
            assert_eq!(count, subdirs * per_dir + in_root);
            assert_eq!(paths, vec![out.join("many")]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(out.join("many/d007/f0042")).expect("file"), [7, 42]);
    sending.await.expect("sender task").expect("sent");
    relay.server.shutdown().await;
}

/// Defect 6: a stream with escape sequences is not written to a terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_with_escapes_is_not_written_to_a_terminal() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ContentKey::generate();
    let server = StreamListener::spawn(
        key.clone(),
        vec![b"\x1b]0;pwned\x07 hi".to_vec()],
        true,
        Duration::ZERO,
    )
    .await;
    let (mut hostile, receiving) = pair_with(&relay, dir.path(), |o| o.guard_terminal = true).await;
    hostile.send(&stream_offer(&key, &[server.addr])).await;
    let (_, result) = receiving.result().await;
    hostile.close().await;
    let err = result.expect_err("refused");
    assert!(err.to_string().contains("--to-terminal"), "{err}");
    assert_eq!(err.exit_code(), 8);
    relay.server.shutdown().await;
}

/// Cross-protocol requests: the first bytes a receiver writes to a sender-named address
/// are a fixed protocol line and a value derived from the session key, never chosen by the
/// sender (before, they were the sender's 32-byte token: `FLUSHALL\r\n…` reached a listener).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_first_bytes_are_not_the_senders_choice() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ContentKey::generate();
    let mut server =
        StreamListener::spawn(key.clone(), vec![b"hello\n".to_vec()], true, Duration::ZERO).await;
    let (mut hostile, receiving) = pair(&relay, dir.path()).await;
    let mut offer = stream_offer(&key, &[server.addr]);
    offer["body"]["token"] = json!(hex::encode(b"FLUSHALL\r\nQUIT\r\n0123456789abcdef"));
    hostile.send(&offer).await;
    let first = tokio::time::timeout(Duration::from_secs(20), server.first_bytes.recv())
        .await
        .expect("the receiver connected")
        .expect("first bytes");
    assert_eq!(first.len(), HELLO_LEN);
    assert!(
        first.starts_with(HELLO_PREFIX),
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    assert_eq!(first, hostile.stream_hello());
    let (_, result) = receiving.result().await;
    hostile.close().await;
    assert_eq!(result.expect("stream received").bytes, 6);
    relay.server.shutdown().await;
}

/// No deadline for a silent stream: a sender that stops sending mid-stream is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_stream_ends_with_a_message() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = ContentKey::generate();
    let _server = StreamListener::spawn(
        key.clone(),
        vec![b"partial".to_vec()],
        false,
        Duration::from_secs(60),
    )
    .await;
    let (mut hostile, receiving) =
        pair_with(&relay, dir.path(), |o| o.silence = Duration::from_secs(2)).await;
    hostile.send(&stream_offer(&key, &[_server.addr])).await;
    let (_, result) = receiving.result().await;
    hostile.close().await;
    let err = result.expect_err("gone");
    assert!(err.to_string().contains("sent nothing for 2s"), "{err}");
    relay.server.shutdown().await;
}

/// No deadline for the offer: a sender that confirms the code and then says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sender_after_confirmation_times_out() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (hostile, receiving) = pair_with(&relay, dir.path(), |o| o.silence = Duration::from_secs(2)).await;
    let (_, result) = receiving.result().await;
    hostile.close().await;
    let err = result.expect_err("timed out");
    assert_eq!(err.exit_code(), 4, "{err}");
    assert!(err.to_string().contains("sent nothing for 2s"), "{err}");
    relay.server.shutdown().await;
}

/// Escape by category: a name with U+2028 (a line break in some viewers) or a tag
/// character is shown escaped in the summary the user is asked about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separators_and_tags_in_names_are_escaped_in_the_summary() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let seeder = Seeder::start(files(dir.path(), &[b"a", b"b"])).await;
    let out = dir.path().join("out");
    let names = ["x\u{2028}Received fake", "y\u{E0041}\u{061C}"];
    let decline = |o: &mut convey::ReceiveOptions| {
        let inner = o.accept.clone();
        o.accept = Arc::new(move |s| {
            inner(s);
            false
        });
    };
    let (asked, result) = offer_seeded(&relay, &seeder, seeder.manifest(&names), &out, decline).await;
    assert!(matches!(result, Err(Error::Declined(_))));
    let shown = asked.expect("asked").names.join(" ");
    for c in ['\u{2028}', '\u{E0041}', '\u{061C}'] {
        assert!(!shown.contains(c), "{shown:?}");
    }
    assert!(shown.contains("\\u{2028}"), "{shown}");
    seeder.stop().await;
    relay.server.shutdown().await;
}

/// `cipher_len` on network input: a size whose ciphertext length would wrap to one chunk
/// is refused as too large, not matched against a one-piece torrent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_that_would_overflow_the_ciphertext_length_is_refused() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let seeder = Seeder::start(files(dir.path(), &[&[7u8; 16368]])).await;
    let out = dir.path().join("out");
    let mut manifest = seeder.manifest(&["huge"]);
    manifest["files"][0]["size"] = json!(16368u64 * ((1u64 << 50) + 1));
    let (asked, result) = offer_seeded(&relay, &seeder, manifest, &out, |_| {}).await;
    let err = result.expect_err("refused");
    assert!(asked.is_none());
    assert!(err.to_string().contains("more than any disk holds"), "{err}");
    seeder.stop().await;
    relay.server.shutdown().await;
}

/// Mode bits are applied through the receiver's umask, never as sent (07777 would have
/// been world-writable).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_are_applied_through_the_umask() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let seeder = Seeder::start(files(dir.path(), &[b"script"])).await;
    let out = dir.path().join("out");
    let mut manifest = seeder.manifest(&["run.sh"]);
    manifest["files"][0]["mode"] = json!(0o7777);
    manifest["dirs"] = json!([{"path": "open", "mode": 0o7777}]);
    let (_, result) = offer_seeded(&relay, &seeder, manifest, &out, |_| {}).await;
    result.expect("received");
    let umask = process_umask();
    assert_ne!(umask, 0, "the test needs a umask that masks something");
    for name in ["run.sh", "open"] {
        let mode = std::fs::metadata(out.join(name))
            .expect("installed")
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o777 & !umask, "{name}: {mode:o}");
    }
    seeder.stop().await;
    relay.server.shutdown().await;
}

fn process_umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .expect("umask line");
    u32::from_str_radix(line.trim(), 8).expect("octal")
}

/// A second offer during a download ends the transfer with one short line, not the
/// whole message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_offer_during_download_is_one_short_line() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("big");
    random_file(&src, 64 << 20, 5);
    let seeder = Seeder::start(vec![src]).await;
    let out = dir.path().join("out");
    let (mut hostile, receiving) = pair(&relay, &out).await;
    let offer = files_offer(
        seeder.manifest(&["big"]),
        &seeder.key,
        &seeder.torrent,
        &[seeder.addr],
    );
    hostile.send(&offer).await;
    let answer = hostile.recv().await.expect("answer");
    assert_eq!(answer["accept"], true);
    let mut second = offer.clone();
    second["body"]["manifest"]["files"][0]["path"] = json!("z".repeat(100_000));
    hostile.send(&second).await;
    let (_, result) = receiving.result().await;
    hostile.close().await;
    let err = result.expect_err("ended");
    let text = err.to_string();
    assert!(
        text.len() < 200,
        "{} bytes: {}",
        text.len(),
        &text[..200.min(text.len())]
    );
    assert!(text.contains("unexpected offer"), "{text}");
    assert!(!out.join("big").exists(), "nothing installed");
    seeder.stop().await;
    relay.server.shutdown().await;
}

/// Defect 7: an empty folder arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_folder_arrives() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("emptydir");
    std::fs::create_dir(&src).expect("mkdir");
    let rec = Recorder::default();
    let sending = tokio::spawn(convey::send(send_options(&relay, src), rec.sink()));
    let out = dir.path().join("out");
    tokio::time::timeout(
        Duration::from_secs(60),
        convey::receive(
            receive_options(&relay, rec.code().await, out.clone()),
            convey::ignore_events(),
        ),
    )
    .await
    .expect("in time")
    .expect("received");
    sending.await.expect("sender task").expect("sent");
    assert!(out.join("emptydir").is_dir());
    assert_eq!(entries(&out), vec!["emptydir"], "no staging folder left");
    relay.server.shutdown().await;
}

/// The sender refuses more entries than the limit before it hashes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_refuses_more_entries_than_the_limit() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("many");
    std::fs::create_dir(&src).expect("mkdir");
    for i in 0..=MAX_ENTRIES {
        std::fs::write(src.join(format!("f{i}")), b"").expect("file");
    }
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        convey::send(send_options(&relay, src), convey::ignore_events()),
    )
    .await
    .expect("in time")
    .expect_err("refused");
    assert!(err.to_string().contains("tar c FOLDER | convey send -"), "{err}");
    assert_eq!(err.exit_code(), 8);
    relay.server.shutdown().await;
}
