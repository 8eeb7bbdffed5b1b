//! Compression through the real binary and a real relay: what shrinks crosses the wire
//! smaller, what does not is sent as it is, folders mixing both arrive identical, a
//! compressed transfer resumes fetching only what is missing, and streams compress too.

mod common;

use std::{io::Write, process::Stdio, sync::atomic::AtomicBool, time::Duration};

use common::{
    convey, event_number, json_events, json_receiver, send_and_receive, spawn_with_code, tree_listing,
    wait_with_timeout, write_random,
};
use convey::transfer::{files::FileSet, prepare::prepare};
use convey_shared::{content::ContentKey, layout::Layout};

fn write_text(path: &std::path::Path, size: usize) {
    convey_tests::text_file(path, size as u64, 0);
}

const LONG: Duration = Duration::from_secs(120);

/// Send `path` with `extra` sender flags under `code`; the receiver's ciphertext bytes
/// fetched (its `done` event), after checking both exit 0 and the file arrived identical.
fn fetched_for(
    home: &std::path::Path,
    relay: &convey_relay::Server,
    path: &std::path::Path,
    extra: &[&str],
    code: &str,
) -> u64 {
    let out = home.join(format!("out-{code}"));
    let mut args: Vec<&std::ffi::OsStr> = extra.iter().map(std::ffi::OsStr::new).collect();
    args.push(path.as_os_str());
    let seen = send_and_receive(home, relay, &args, &out, code);
    let name = path.file_name().expect("name");
    assert_eq!(
        std::fs::read(out.join(name)).expect("received"),
        std::fs::read(path).expect("source"),
        "arrived identical"
    );
    event_number(&seen, "done", "fetched")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_crosses_the_wire_smaller_and_random_data_no_larger() {
    const SIZE: u64 = 24 << 20;
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let (text, noise) = (home.path().join("build.log"), home.path().join("noise.bin"));
    write_text(&text, SIZE as usize);
    write_random(&noise, SIZE as usize);

    let packed = fetched_for(home.path(), &relay, &text, &[], "51-pilot-planet-canyon");
    let plain = fetched_for(
        home.path(),
        &relay,
        &text,
        &["--no-compress"],
        "52-pilot-planet-canyon",
    );
    let random = fetched_for(home.path(), &relay, &noise, &[], "53-pilot-planet-canyon");
    eprintln!("text {SIZE} bytes: {packed} on the wire, {plain} with --no-compress; random: {random}");
    assert!(packed * 10 <= SIZE * 4, "text shrinks to at most 0.4x: {packed}");
    assert!(plain >= SIZE, "--no-compress sends it as it is: {plain}");
    // Only the per-chunk tags (1/1023) and piece rounding on top of the data.
    assert!(random <= SIZE + SIZE / 100, "random data does not grow: {random}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_mixing_text_random_tiny_and_empty_files_arrives_identical() {
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let root = home.path().join("src").join("mixed");
    std::fs::create_dir_all(root.join("logs")).expect("mkdir");
    std::fs::create_dir_all(root.join("empty")).expect("mkdir");
    write_text(&root.join("logs/a.log"), 3 << 20);
    write_text(&root.join("logs/odd.log"), 700_001);
    write_random(&root.join("blob.bin"), (5 << 20) + 333);
    std::fs::write(root.join("tiny.txt"), b"hi\n").expect("tiny");
    std::fs::write(root.join("zero"), b"").expect("zero");
    for i in 0..40 {
        write_text(&root.join(format!("logs/small-{i}.txt")), 1000 + i * 517);
    }
    let mut send = convey(home.path(), &relay);
    send.args(["send", "--code", "54-pilot-planet"]).arg(&root);
    let (mut sender, _) = spawn_with_code(send, &home.path().join("send.err"));
    let out = home.path().join("out");
    let recv = convey(home.path(), &relay)
        .args(["receive", "--yes", "--out"])
        .arg(&out)
        .arg("54-pilot-planet")
        .output()
        .expect("receive");
    assert!(recv.status.success(), "{}", String::from_utf8_lossy(&recv.stderr));
    assert!(wait_with_timeout(&mut sender, LONG).success());
    assert_eq!(tree_listing(&out), tree_listing(&home.path().join("src")));
}

/// The compressed ciphertext length of `path` (it does not depend on the key).
fn packed_cipher_len(path: &std::path::Path) -> u64 {
    let size = std::fs::metadata(path).expect("source").len();
    let files = FileSet::new(vec![path.to_owned()], Layout::new([size]).expect("layout"), false);
    prepare(&files, ContentKey::generate(), true, &AtomicBool::new(false))
        .expect("prepare")
        .map
        .cipher_len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_compressed_transfer_fetches_only_what_is_missing() {
    const SIZE: u64 = 160 << 20;
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("build.log");
    write_text(&src, SIZE as usize);
    let total = packed_cipher_len(&src);
    let out = home.path().join("out");

    // First attempt, slowed down, killed on both sides at about half way.
    let mut send = convey(home.path(), &relay);
    send.args(["send", "--limit-rate", "4M", "--code", "55-pilot-planet"])
        .arg(&src);
    let (mut sender, _) = spawn_with_code(send, &home.path().join("send1.err"));
    let (mut receiver, mut events) = json_receiver(home.path(), &relay, &out, "55-pilot-planet");
    let seen = json_events(&mut events, |v| {
        v["event"] == "progress" && v["bytes"].as_u64().unwrap_or(0) >= SIZE / 2
    });
    sender.kill().expect("kill -9 sender");
    receiver.kill().expect("kill -9 receiver");
    let _ = (sender.wait(), receiver.wait());
    assert_eq!(
        seen.last().expect("events")["event"],
        "progress",
        "killed mid-way: {seen:?}"
    );

    let seen = send_and_receive(home.path(), &relay, &[src.as_os_str()], &out, "56-pilot-planet");
    let fetched = event_number(&seen, "done", "fetched");
    let resumed = event_number(&seen, "resumed", "bytes");
    // `resumed` counts plaintext: the ciphertext it stands for, in proportion.
    let kept = u64::try_from(u128::from(resumed) * u128::from(total) / u128::from(SIZE)).expect("fits");
    eprintln!("compressed ciphertext {total} of {SIZE}; kept {kept}, the resume fetched {fetched}");
    assert!(total * 4 < SIZE, "the text compresses: {total}");
    assert!(
        resumed >= SIZE / 4,
        "much of the first attempt was kept: {resumed}"
    );
    // What was kept is not fetched again; allow a 1 MiB piece of slack at the edges.
    assert!(
        kept + fetched <= total + (1 << 20),
        "kept {kept} + fetched {fetched} of {total}"
    );
    assert_eq!(
        std::fs::read(out.join("build.log")).expect("received"),
        std::fs::read(&src).expect("source")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressible_stream_and_a_slow_one_arrive_identical() {
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("stream.log");
    write_text(&src, 20 << 20);
    let want = std::fs::read(&src).expect("source");
    for (code, slow) in [("57-pilot-planet", false), ("58-pilot-planet", true)] {
        let mut send = convey(home.path(), &relay);
        send.args(["send", "--code", code, "-"]).stdin(Stdio::piped());
        let (mut sender, _) = spawn_with_code(send, &home.path().join(format!("{code}.err")));
        let mut stdin = sender.stdin.take().expect("stdin");
        let body = if slow { want[..4000].to_vec() } else { want.clone() };
        let feeding = std::thread::spawn(move || {
            if slow {
                // A producer that writes a line now and then: each arrives as it comes.
                for line in body.split_inclusive(|&b| b == b'\n') {
                    stdin.write_all(line).expect("feed");
                    std::thread::sleep(Duration::from_millis(20));
                }
            } else {
                stdin.write_all(&body).expect("feed");
            }
        });
        let recv = convey(home.path(), &relay)
            .args(["receive", "--yes", code])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("receive");
        feeding.join().expect("feeder");
        assert!(recv.status.success(), "{}", String::from_utf8_lossy(&recv.stderr));
        assert!(wait_with_timeout(&mut sender, LONG).success());
        let expected = if slow { &want[..4000] } else { &want[..] };
        assert!(recv.stdout == expected, "stream {code} arrived identical");
    }
}
