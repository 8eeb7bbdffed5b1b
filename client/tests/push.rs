//! Files move while the sender still reads them, through the real binary and a real relay:
//! the receiver has data before the sender's pass is over, a receiver that arrives in the
//! middle of the pass gets what was read before it came, a transfer killed on both sides
//! during the push resumes with what arrived, and what the push did not bring BitTorrent
//! fetches. The sender's pass is slowed with its test-only read throttle
//! (`CONVEY_TEST_READ_BPS`), as a slow disk would slow it; nothing here asserts a timing.

mod common;

use std::time::{Duration, Instant};

use common::{
    convey, event_number, json_events, json_receiver, send_and_receive, spawn_with_code, wait_with_timeout,
    write_random,
};

const LONG: Duration = Duration::from_secs(120);

/// Bytes the process has read so far (`rchar` of /proc/PID/io), 0 once it is gone.
fn read_so_far(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("rchar: ").and_then(|v| v.trim().parse().ok()))
        })
        .unwrap_or(0)
}

fn identical(a: &std::path::Path, b: &std::path::Path) {
    assert!(
        std::fs::read(a).expect("received") == std::fs::read(b).expect("source"),
        "{} arrived identical",
        b.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_has_data_before_the_sender_has_read_it_all() {
    const SIZE: u64 = 32 << 20;
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("slow.bin");
    write_random(&src, SIZE as usize);
    let out = home.path().join("out");

    let mut send = convey(home.path(), &relay);
    send.env("CONVEY_TEST_READ_BPS", (4u64 << 20).to_string())
        .args(["send", "--code", "61-pilot-planet-canyon"])
        .arg(&src);
    let (mut sender, _) = spawn_with_code(send, &home.path().join("send.err"));
    let (mut receiver, mut events) = json_receiver(home.path(), &relay, &out, "61-pilot-planet-canyon");
    let mut sender_had_read = None;
    let seen = json_events(&mut events, |v| {
        if v["event"] == "progress" && v["bytes"].as_u64().unwrap_or(0) > 0 && sender_had_read.is_none() {
            sender_had_read = Some(read_so_far(sender.id()));
        }
        v["event"] == "done"
    });
    assert!(wait_with_timeout(&mut receiver, LONG).success(), "{seen:?}");
    assert!(wait_with_timeout(&mut sender, LONG).success());
    let had_read = sender_had_read.expect("the receiver reported progress");
    eprintln!("when the first bytes arrived the sender had read {had_read} of {SIZE}");
    assert!(
        had_read < SIZE / 2,
        "bytes moved while the sender was still reading: it had read {had_read} of {SIZE}"
    );
    identical(&out.join("slow.bin"), &src);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_arrives_in_the_middle_of_the_pass_gets_everything() {
    const SIZE: u64 = 24 << 20;
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("mid.bin");
    write_random(&src, SIZE as usize);
    let out = home.path().join("out");

    let mut send = convey(home.path(), &relay);
    send.env("CONVEY_TEST_READ_BPS", (6u64 << 20).to_string())
        .args(["send", "--code", "62-pilot-planet-canyon"])
        .arg(&src);
    let (mut sender, _) = spawn_with_code(send, &home.path().join("send.err"));
    // Arrive once the pass has read a third of the file (bounded).
    let deadline = Instant::now() + LONG;
    while read_so_far(sender.id()) < SIZE / 3 {
        assert!(Instant::now() < deadline, "the sender's pass never got going");
        std::thread::sleep(Duration::from_millis(20));
    }
    let arrived_at = read_so_far(sender.id());
    let (mut receiver, mut events) = json_receiver(home.path(), &relay, &out, "62-pilot-planet-canyon");
    let seen = json_events(&mut events, |v| v["event"] == "done");
    assert!(wait_with_timeout(&mut receiver, LONG).success(), "{seen:?}");
    assert!(wait_with_timeout(&mut sender, LONG).success());
    eprintln!("the receiver arrived when the sender had read {arrived_at} of {SIZE}");
    assert!(arrived_at < SIZE, "it arrived during the pass");
    identical(&out.join("mid.bin"), &src);
    let fetched = event_number(&seen, "done", "fetched");
    assert!(fetched >= SIZE, "everything came over the network: {fetched}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_killed_on_both_sides_during_the_push_resumes_with_what_arrived() {
    const SIZE: u64 = 48 << 20;
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("resume.bin");
    write_random(&src, SIZE as usize);
    let out = home.path().join("out");

    let mut send = convey(home.path(), &relay);
    send.env("CONVEY_TEST_READ_BPS", (6u64 << 20).to_string())
        .args(["send", "--code", "63-pilot-planet-canyon"])
        .arg(&src);
    let (mut sender, _) = spawn_with_code(send, &home.path().join("send1.err"));
    let (mut receiver, mut events) = json_receiver(home.path(), &relay, &out, "63-pilot-planet-canyon");
    let seen = json_events(&mut events, |v| {
        v["event"] == "progress" && v["bytes"].as_u64().unwrap_or(0) >= SIZE / 3
    });
    let still_reading = read_so_far(sender.id()) < SIZE;
    sender.kill().expect("kill -9 sender");
    receiver.kill().expect("kill -9 receiver");
    let _ = (sender.wait(), receiver.wait());
    assert_eq!(
        seen.last().expect("events")["event"],
        "progress",
        "killed mid-way: {seen:?}"
    );
    assert!(still_reading, "both were killed during the sender's pass");

    let seen = send_and_receive(
        home.path(),
        &relay,
        &[src.as_os_str()],
        &out,
        "64-pilot-planet-canyon",
    );
    let resumed = event_number(&seen, "resumed", "bytes");
    let fetched = event_number(&seen, "done", "fetched");
    eprintln!("the rerun kept {resumed} of {SIZE} and fetched {fetched}");
    // The record of frames on disk lags the writes by at most 1 MiB.
    assert!(
        resumed + (1 << 20) >= SIZE / 3,
        "what arrived before the kill was kept: {resumed}"
    );
    // Sealed bytes carry one 16-byte tag per 16 KiB chunk: a 1 % margin covers it.
    assert!(
        fetched <= (SIZE - resumed) + (SIZE - resumed) / 100,
        "only the rest was fetched: {fetched} after keeping {resumed}"
    );
    identical(&out.join("resume.bin"), &src);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_push_did_not_bring_comes_over_bittorrent() {
    const SIZE: u64 = 20 << 20;
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("half.bin");
    write_random(&src, SIZE as usize);
    let out = home.path().join("out");

    let mut send = convey(home.path(), &relay);
    send.args(["send", "--code", "65-pilot-planet-canyon"]).arg(&src);
    let (mut sender, _) = spawn_with_code(send, &home.path().join("send.err"));
    // The receiver takes 30 frames (about 7.5 MiB) over the push, as if every path it had
    // then broke; the rest comes over BitTorrent, which checks what the push wrote.
    let mut receiver = convey(home.path(), &relay)
        .env("CONVEY_TEST_PUSH_FRAMES", "30")
        .args(["receive", "--yes", "--json", "--out"])
        .arg(&out)
        .arg("65-pilot-planet-canyon")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("receive");
    let mut events = std::io::BufReader::new(receiver.stdout.take().expect("stdout"));
    let seen = json_events(&mut events, |v| v["event"] == "done");
    assert!(wait_with_timeout(&mut receiver, LONG).success(), "{seen:?}");
    assert!(wait_with_timeout(&mut sender, LONG).success());
    let checked = event_number(&seen, "resumed", "bytes");
    eprintln!("librqbit found {checked} bytes the push had written");
    assert!(checked > 0, "BitTorrent kept what the push brought: {seen:?}");
    assert!(checked < SIZE, "and fetched the rest");
    identical(&out.join("half.bin"), &src);
}
