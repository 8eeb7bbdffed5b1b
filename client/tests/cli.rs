//! Black-box tests of the `convey` binary: real processes, a real relay on loopback.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use convey_relay::Server;

mod common;

use common::wait_with_timeout;

fn write_random(path: &Path, size: usize) {
    common::write_random(path, size);
}

/// Start `convey send`, returning the child and the first lines it printed.
fn spawn_sender(args: &[&str], lines_wanted: usize) -> (Child, Vec<String>) {
    let mut child = common::bin()
        .arg("send")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn convey send");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout);
    let mut lines = Vec::new();
    while lines.len() < lines_wanted {
        let mut l = String::new();
        if reader.read_line(&mut l).expect("read sender output") == 0 {
            break;
        }
        lines.push(l.trim_end().to_owned());
    }
    // Keep draining so the sender never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    (child, lines)
}

fn code_of(lines: &[String]) -> String {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("Code: "))
        .expect("sender prints `Code: ...` first")
        .to_owned()
}

async fn relay() -> Server {
    common::relay().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_receive_through_the_binary() {
    let relay = relay().await;
    let addr = relay.local_addr().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("report ✓.bin");
    write_random(&src, 3_000_000);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");

    let (mut sender, lines) = spawn_sender(&["--relay", &addr, src.to_str().expect("utf8")], 2);
    let code = code_of(&lines);
    assert!(
        lines[1].contains(&format!("convey receive --relay {addr} {code}")),
        "{lines:?}"
    );
    let recv = common::bin()
        .args(["receive", "--yes", "--relay", &addr, "--out"])
        .arg(&out)
        .env("CONVEY_CODE", &code) // the code need not appear in the process list
        .output()
        .expect("run receive");
    assert!(
        recv.status.success(),
        "receive failed: {}",
        String::from_utf8_lossy(&recv.stderr)
    );
    assert!(String::from_utf8_lossy(&recv.stderr).contains("Received 1 file "));
    assert!(wait_with_timeout(&mut sender, Duration::from_secs(20)).success());
    assert_eq!(
        std::fs::read(out.join("report ✓.bin")).expect("received"),
        std::fs::read(&src).expect("src")
    );
    relay.shutdown().await;
}

#[test]
fn embedded_relay_needs_no_setup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("hello.txt");
    std::fs::write(&src, b"hello from the embedded relay\n").expect("write");
    let (mut sender, lines) = spawn_sender(&[src.to_str().expect("utf8")], 2);
    let code = code_of(&lines);
    // The second line is the one command the receiver must type.
    let cmd = lines[1]
        .split_once("run:")
        .expect("receive line")
        .1
        .trim()
        .to_owned();
    let args: Vec<&str> = cmd.split_whitespace().collect();
    assert_eq!(&args[..2], ["convey", "receive"], "{cmd}");
    assert_eq!(args.last(), Some(&code.as_str()));
    let out = dir.path().join("out");
    let recv = common::bin()
        .args(&args[1..])
        .args(["--yes", "--out"])
        .arg(&out)
        .output()
        .expect("run receive");
    assert!(recv.status.success(), "{}", String::from_utf8_lossy(&recv.stderr));
    assert!(wait_with_timeout(&mut sender, Duration::from_secs(20)).success());
    assert_eq!(
        std::fs::read(out.join("hello.txt")).expect("received"),
        b"hello from the embedded relay\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sender_mid_transfer_leaves_no_complete_looking_file() {
    let relay = relay().await;
    let addr = relay.local_addr().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("big.bin");
    write_random(&src, 32 << 20);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");

    // 4 MiB/s makes the transfer take ~8 s, so the kill lands mid-way.
    let (mut sender, lines) = spawn_sender(
        &[
            "--relay",
            &addr,
            "--limit-rate",
            "4M",
            src.to_str().expect("utf8"),
        ],
        1,
    );
    let code = code_of(&lines);
    let mut receiver = common::bin()
        .args(["receive", "--yes", "--relay", &addr, "--out"])
        .arg(&out)
        .arg(&code)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn receive");
    let staging = || {
        std::fs::read_dir(&out)
            .expect("out")
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with(".convey-"))
            .map(|e| e.path())
    };
    let start = Instant::now();
    while staging().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "receiver never started writing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    sender.kill().expect("kill -9 the sender");
    let _ = sender.wait();

    let status = wait_with_timeout(&mut receiver, Duration::from_secs(90));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut receiver.stderr.take().expect("stderr"), &mut err).expect("stderr");
    assert_eq!(status.code(), Some(6), "transfer-failed exit code; stderr: {err}");
    assert!(
        err.contains("vanished") || err.contains("transfer failed"),
        "{err}"
    );
    assert!(!out.join("big.bin").exists(), "no file posing as complete");
    let left: Vec<String> = std::fs::read_dir(&out)
        .expect("out")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter()
            .all(|n| n.starts_with(".convey-") && n.ends_with(".partial")),
        "only the hidden staging folder, kept for a resume, may remain: {left:?}"
    );
    relay.shutdown().await;
}

/// `convey --version` says which protocol it speaks.
#[test]
fn version_names_the_protocol() {
    let out = common::bin().arg("--version").output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")) && text.contains("protocol convey-v1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_and_non_interactive_decline_have_distinct_exit_codes() {
    let bad = common::bin()
        .args(["receive", "not-a-code"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2), "bad usage");
    let weak = common::bin()
        .args(["send", "--code", "5-abc", "Cargo.toml"])
        .output()
        .expect("run");
    assert_eq!(weak.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&weak.stderr).contains("too weak"));

    let relay = relay().await;
    let addr = relay.local_addr().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("f.txt");
    std::fs::write(&src, b"x").expect("write");
    let (mut sender, lines) = spawn_sender(&["--relay", &addr, src.to_str().expect("utf8")], 1);
    let code = code_of(&lines);
    // No --yes and no terminal: decline with a hint, exit 5; the sender learns it too.
    let recv = common::bin()
        .args(["receive", "--relay", &addr, "--out"])
        .arg(dir.path().join("out"))
        .arg(&code)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(
        recv.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&recv.stderr)
    );
    assert!(String::from_utf8_lossy(&recv.stderr).contains("--yes"));
    assert_eq!(
        wait_with_timeout(&mut sender, Duration::from_secs(20)).code(),
        Some(5)
    );
    assert!(!dir.path().join("out").join("f.txt").exists());
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_relay_refuses_without_the_token_and_says_how_to_fix_it() {
    let mut config = convey_relay::Config::with_listen("127.0.0.1:0".parse().expect("addr"));
    config.access_token = Some("ci-shared-secret-token".parse().expect("token"));
    let relay = Server::spawn(config).await.expect("relay");
    let addr = relay.local_addr().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("f.txt");
    std::fs::write(&src, b"x").expect("write");

    let refused = common::bin()
        .args(["send", "--relay", &addr, "--wait", "5s"])
        .arg(&src)
        .env_remove("CONVEY_RELAY_TOKEN")
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(7));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("private") && err.contains("--relay-token"), "{err}");

    // With the token from the environment, the sender gets its code.
    let mut sender = common::bin()
        .args(["send", "--relay", &addr, "--wait", "5s"])
        .arg(&src)
        .env("CONVEY_RELAY_TOKEN", "ci-shared-secret-token")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(sender.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("read");
    assert!(first.starts_with("Code: "), "{first}");
    let _ = sender.kill();
    let _ = sender.wait();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_is_not_a_crash() {
    let relay = relay().await;
    let addr = relay.local_addr().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("f.bin");
    write_random(&src, 1024);
    // The reader of the code went away before it was written (as after `| head -1` for
    // the lines that follow it): the sender goes on, here until its --wait runs out.
    let mut sender = common::bin()
        .args(["send", "--relay", &addr, "--wait", "1s"])
        .arg(&src)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(sender.stdout.take());
    let status = wait_with_timeout(&mut sender, Duration::from_secs(30));
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut sender.stderr.take().expect("stderr"), &mut err);
    assert_eq!(status.code(), Some(4), "a timeout, not a panic: {err}");
    relay.shutdown().await;
}

#[test]
fn both_commands_take_the_relay_ca() {
    // A CA file that does not exist is reported before any connection is tried: proof that
    // the flag (and its env twin) reached the TLS set-up on each side.
    let missing = "/nonexistent/relay-ca.pem";
    for args in [
        vec![
            "send",
            "--relay",
            "https://127.0.0.1:1",
            "--relay-ca",
            missing,
            "Cargo.toml",
        ],
        vec!["receive", "--relay", "https://127.0.0.1:1", "7-pilot-planet"],
    ] {
        let out = common::bin()
            .args(&args)
            .env("CONVEY_RELAY_CA", missing)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("cannot set up TLS") && err.contains(missing),
            "{args:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(8), "{args:?}: {err}");
    }
}
