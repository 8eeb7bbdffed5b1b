//! What users do with `convey` beyond one file, through the real binary and a real relay:
//! folders of many files, pipes, resume, a receiver that starts first, text, and the
//! documented exit code of every failure.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    process::Stdio,
    time::{Duration, Instant},
};

use common::{
    convey, event_number, json_events, json_receiver, peak_rss, send_and_receive, spawn_with_code,
    tree_listing, wait_with_timeout, write_random,
};
use sha2::{Digest, Sha256};

const LONG: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_of_a_thousand_files_and_a_big_one_arrives_identical() {
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("src");
    let root = src.join("project ✓");
    for d in 0..10 {
        let dir = root.join(format!("dir-{d}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..100 {
            let body = format!("file {d}/{f}\n").repeat((d * 100 + f) % 37);
            std::fs::write(dir.join(format!("f{f:03}.txt")), body).expect("write");
        }
    }
    std::fs::create_dir_all(root.join("empty/nested")).expect("mkdir");
    std::fs::set_permissions(root.join("empty"), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::set_permissions(
        root.join("dir-3/f007.txt"),
        std::fs::Permissions::from_mode(0o751),
    )
    .expect("chmod");
    write_random(&root.join("big.bin"), 200 << 20);

    let mut send = convey(home.path(), &relay);
    send.args(["send", "--code", "41-pilot-planet"]).arg(&root);
    let (mut sender, _) = spawn_with_code(send, &home.path().join("send.err"));
    let out = home.path().join("out");
    let recv = convey(home.path(), &relay)
        .args(["receive", "--yes", "--out"])
        .arg(&out)
        .arg("41-pilot-planet")
        .output()
        .expect("receive");
    assert!(recv.status.success(), "{}", String::from_utf8_lossy(&recv.stderr));
    assert!(wait_with_timeout(&mut sender, LONG).success());
    let (want, got) = (tree_listing(&src), tree_listing(&out));
    assert_eq!(
        want.len(),
        1 + 10 + 1000 + 2 + 1,
        "root, 10 folders, 1000 files, 2 empty folders, big.bin"
    );
    assert_eq!(got, want, "names, contents, empty folders and modes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_to_stdout_streams_100_mib_in_flat_memory() {
    const SIZE: usize = 100 << 20;
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let mut send = convey(home.path(), &relay);
    send.args(["send", "--code", "42-pilot-planet", "-"])
        .stdin(Stdio::piped());
    let (mut sender, _) = spawn_with_code(send, &home.path().join("send.err"));
    let mut input = sender.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        let mut h = Sha256::new();
        let mut x: u64 = 42;
        let mut buf = vec![0u8; 1 << 16];
        for _ in 0..SIZE / buf.len() {
            for b in buf.iter_mut() {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *b = (x >> 56) as u8;
            }
            h.update(&buf);
            input.write_all(&buf).expect("feed stdin");
        }
        hex::encode(h.finalize())
    });
    let mut receiver = convey(home.path(), &relay)
        .args(["receive", "--yes", "42-pilot-planet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("receive");
    let mut output = receiver.stdout.take().expect("stdout");
    let drain = std::thread::spawn(move || {
        let mut h = Sha256::new();
        let n = std::io::copy(&mut output, &mut h).expect("read stdout");
        (n, hex::encode(h.finalize()))
    });
    let (mut peak_send, mut peak_recv) = (0, 0);
    let start = Instant::now();
    while receiver.try_wait().expect("wait").is_none() || sender.try_wait().expect("wait").is_none() {
        assert!(start.elapsed() < LONG, "stream did not finish");
        peak_send = peak_send.max(peak_rss(sender.id()).unwrap_or(0));
        peak_recv = peak_recv.max(peak_rss(receiver.id()).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sender.wait().expect("sender").success());
    assert!(receiver.wait().expect("receiver").success());
    let (n, got) = drain.join().expect("drain");
    assert_eq!((n, got), (SIZE as u64, feeder.join().expect("feeder")));
    eprintln!(
        "peak RSS: sender {} MiB, receiver {} MiB",
        peak_send >> 20,
        peak_recv >> 20
    );
    assert!(peak_send > 0 && peak_recv > 0, "memory was sampled");
    for peak in [peak_send, peak_recv] {
        assert!(peak < 64 << 20, "memory grew with the stream: {} MiB", peak >> 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_transfer_moves_only_the_missing_part() {
    const SIZE: u64 = 96 << 20;
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("resume.bin");
    write_random(&src, SIZE as usize);
    let out = home.path().join("out");

    // First attempt, slowed down, killed on both sides at about half way.
    let mut send = convey(home.path(), &relay);
    send.args(["send", "--limit-rate", "12M", "--code", "43-pilot-planet"])
        .arg(&src);
    let (mut sender, _) = spawn_with_code(send, &home.path().join("send1.err"));
    let (mut receiver, mut events) = json_receiver(home.path(), &relay, &out, "43-pilot-planet");
    let seen = json_events(&mut events, |v| {
        v["event"] == "progress" && v["bytes"].as_u64().unwrap_or(0) >= SIZE / 2
    });
    sender.kill().expect("kill -9 sender");
    receiver.kill().expect("kill -9 receiver");
    let _ = (sender.wait(), receiver.wait());
    let last = seen.last().expect("events");
    assert_eq!(last["event"], "progress", "killed mid-way: {seen:?}");
    assert!(!out.join("resume.bin").exists(), "nothing poses as complete");

    // Second attempt, new code, same files, same folder.
    let seen = send_and_receive(home.path(), &relay, &[src.as_os_str()], &out, "44-pilot-planet");
    let resumed = event_number(&seen, "resumed", "bytes");
    let fetched = event_number(&seen, "done", "fetched");
    eprintln!("resumed {resumed} bytes, fetched {fetched} of {SIZE}");
    assert!(
        resumed >= SIZE * 2 / 5,
        "most of the first half was kept: {resumed}"
    );
    // Ciphertext is 1/1023 larger than the plaintext; allow one 1 MiB piece of slack.
    let missing = SIZE - resumed;
    assert!(
        fetched <= missing + missing / 1000 + (1 << 20),
        "fetched {fetched}, missing {missing}"
    );
    assert_eq!(
        std::fs::read(out.join("resume.bin")).expect("received"),
        std::fs::read(&src).expect("source")
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .expect("out")
        .filter_map(Result::ok)
        .collect();
    assert_eq!(left.len(), 1, "the staging folder is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_may_start_first_with_a_pre_agreed_code() {
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("artifact.tar");
    write_random(&src, 1 << 20);
    let out = home.path().join("out");
    let mut receiver = convey(home.path(), &relay)
        .args(["receive", "--yes", "--wait", "60s", "--out"])
        .arg(&out)
        .env("CONVEY_CODE", "45-pilot-planet")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("receive");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(receiver.try_wait().expect("wait").is_none(), "the receiver waits");
    let send = convey(home.path(), &relay)
        .args(["send", "--quiet"])
        .arg(&src)
        .env("CONVEY_CODE", "45-pilot-planet")
        .stdin(Stdio::null())
        .output()
        .expect("send");
    assert!(send.status.success(), "{}", String::from_utf8_lossy(&send.stderr));
    assert_eq!(
        String::from_utf8_lossy(&send.stdout),
        "Code: 45-pilot-planet\n",
        "--quiet"
    );
    assert!(wait_with_timeout(&mut receiver, LONG).success());
    assert_eq!(
        std::fs::read(out.join("artifact.tar")).expect("received"),
        std::fs::read(&src).expect("source")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_arrives_on_stdout() {
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let mut send = convey(home.path(), &relay);
    send.args([
        "send",
        "--code",
        "46-pilot-planet",
        "--text",
        "line one\nline two ✓",
    ]);
    let (mut sender, _) = spawn_with_code(send, &home.path().join("send.err"));
    let recv = convey(home.path(), &relay)
        .args(["receive", "46-pilot-planet"])
        .stdin(Stdio::null())
        .output()
        .expect("receive");
    assert!(recv.status.success(), "{}", String::from_utf8_lossy(&recv.stderr));
    assert_eq!(String::from_utf8_lossy(&recv.stdout), "line one\nline two ✓");
    assert!(wait_with_timeout(&mut sender, LONG).success());
}

/// Run `convey` to completion and return (exit code, stderr).
fn run(cmd: &mut std::process::Command) -> (Option<i32>, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("run convey");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_has_its_exit_code_and_message() {
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let h = home.path();
    let src = h.join("f.txt");
    std::fs::write(&src, "data").expect("write");

    // 3: wrong code, on both sides.
    let mut send = convey(h, &relay);
    send.args(["send", "--code", "50-pilot-planet"]).arg(&src);
    let (mut sender, _) = spawn_with_code(send, &h.join("s.err"));
    let (code, err) = run(convey(h, &relay).args(["receive", "--yes", "50-pilot-zebra"]));
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("code was wrong"), "{err}");
    assert_eq!(wait_with_timeout(&mut sender, LONG).code(), Some(3));

    // 4: nobody on the other side, for either side.
    let (code, err) = run(convey(h, &relay).args(["receive", "--wait", "1s", "51-pilot-planet"]));
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("no sender appeared"), "{err}");
    let (code, err) = run(convey(h, &relay)
        .args(["send", "--wait", "1s", "--code", "52-pilot-planet"])
        .arg(&src));
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("no receiver appeared"), "{err}");

    // 7: no relay.
    let (code, err) = run(convey(h, &relay).args(["receive", "--relay", "127.0.0.1:1", "53-pilot-planet"]));
    assert_eq!(code, Some(7), "{err}");
    assert!(err.contains("cannot reach the relay"), "{err}");

    // 8: refusing to overwrite; the sender hears why (declined, 5).
    let out = h.join("out");
    std::fs::create_dir(&out).expect("mkdir");
    std::fs::write(out.join("f.txt"), "mine").expect("write");
    let mut send = convey(h, &relay);
    send.args(["send", "--code", "54-pilot-planet"]).arg(&src);
    let (mut sender, _) = spawn_with_code(send, &h.join("s.err"));
    let (code, err) = run(convey(h, &relay)
        .args(["receive", "--yes", "--out"])
        .arg(&out)
        .arg("54-pilot-planet"));
    assert_eq!(code, Some(8), "{err}");
    assert!(
        err.contains("already exists") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(wait_with_timeout(&mut sender, LONG).code(), Some(5));
    assert_eq!(std::fs::read_to_string(out.join("f.txt")).expect("kept"), "mine");
    // ... and --overwrite replaces it.
    let mut send = convey(h, &relay);
    send.args(["send", "--code", "55-pilot-planet"]).arg(&src);
    let (mut sender, _) = spawn_with_code(send, &h.join("s.err"));
    let (code, err) = run(convey(h, &relay)
        .args(["receive", "--yes", "--overwrite", "--out"])
        .arg(&out)
        .arg("55-pilot-planet"));
    assert_eq!(code, Some(0), "{err}");
    assert!(wait_with_timeout(&mut sender, LONG).success());
    assert_eq!(
        std::fs::read_to_string(out.join("f.txt")).expect("replaced"),
        "data"
    );

    // 8: the sender refuses a link inside a folder, before a code is handed out... after
    // printing it, but before the receiver is needed.
    let tree = h.join("tree");
    std::fs::create_dir(&tree).expect("mkdir");
    std::os::unix::fs::symlink("/etc/passwd", tree.join("passwd")).expect("symlink");
    let (code, err) = run(convey(h, &relay)
        .args(["send", "--code", "56-pilot-planet"])
        .arg(&tree));
    assert_eq!(code, Some(8), "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    let (code, err) = run(convey(h, &relay).args(["send"]).arg(h.join("missing")));
    assert_eq!(code, Some(8), "{err}");
    assert!(err.contains("missing"), "{err}");

    // 2: bad usage and a broken config file.
    let (code, _) = run(convey(h, &relay).args(["send", "-", "f.txt"]));
    assert_eq!(code, Some(2));
    let cfg = h.join("bad.toml");
    std::fs::write(&cfg, "wait = 5").expect("write");
    let (code, err) = run(convey(h, &relay)
        .args(["receive", "--config"])
        .arg(&cfg)
        .arg("57-pilot-planet"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bad.toml"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_refused_before_accepting() {
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let small = home.path().join("small");
    std::fs::create_dir(&small).expect("mkdir");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status()
        .expect("run mount (this test needs root)");
    assert!(
        mounted.success(),
        "mounting a 1 MiB tmpfs failed; this test must run as root"
    );
    let src = home.path().join("three-mib.bin");
    write_random(&src, 3 << 20);
    let mut send = convey(home.path(), &relay);
    send.args(["send", "--code", "60-pilot-planet"]).arg(&src);
    let (mut sender, _) = spawn_with_code(send, &home.path().join("s.err"));
    let (code, err) = run(convey(home.path(), &relay)
        .args(["receive", "--yes", "--out"])
        .arg(&small)
        .arg("60-pilot-planet"));
    let sender_code = wait_with_timeout(&mut sender, LONG).code();
    let _ = std::process::Command::new("umount").arg(&small).status();
    assert_eq!(code, Some(8), "{err}");
    assert!(err.contains("not enough free space"), "{err}");
    assert_eq!(sender_code, Some(5), "the sender hears the reason");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_codes_completions_and_the_config_file() {
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("f.txt");
    std::fs::write(&src, "configured").expect("write");
    // The relay comes only from the config file here.
    let cfg_dir = home.path().join(".config/convey");
    std::fs::create_dir_all(&cfg_dir).expect("mkdir");
    let addr = relay.local_addr().to_string();
    std::fs::write(
        cfg_dir.join("config.toml"),
        format!("relay = \"{addr}\"\nreceive_wait = \"20s\"\n"),
    )
    .expect("config");
    let mut send = convey(home.path(), &relay);
    send.env_remove("CONVEY_RELAY")
        .args(["send", "--qr", "--code", "61-pilot-planet"])
        .arg(&src);
    let mut child = send
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("send");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut head = String::new();
    for _ in 0..8 {
        reader.read_line(&mut head).expect("read");
    }
    std::thread::spawn(move || for _ in reader.lines() {});
    assert!(head.contains(&format!("--relay {addr}")), "{head}");
    assert!(
        head.contains('█') || head.contains('▀'),
        "a QR code is drawn: {head}"
    );
    let out = home.path().join("out");
    let (code, err) = run(convey(home.path(), &relay)
        .env_remove("CONVEY_RELAY")
        .args(["receive", "--yes", "--out"])
        .arg(&out)
        .arg("61-pilot-planet"));
    assert_eq!(code, Some(0), "{err}");
    assert!(wait_with_timeout(&mut child, LONG).success());
    assert_eq!(
        std::fs::read_to_string(out.join("f.txt")).expect("received"),
        "configured"
    );

    for shell in ["bash", "zsh", "fish"] {
        let c = convey(home.path(), &relay)
            .args(["completions", shell])
            .output()
            .expect("completions");
        assert!(c.status.success());
        let script = String::from_utf8_lossy(&c.stdout);
        assert!(
            script.contains("receive") && script.contains("overwrite"),
            "{shell}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_exits_130_and_keeps_the_partial_folder_for_a_resume() {
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("slow.bin");
    write_random(&src, 32 << 20);
    let out = home.path().join("out");
    let mut send = convey(home.path(), &relay);
    send.args(["send", "--limit-rate", "4M", "--code", "62-pilot-planet"])
        .arg(&src);
    let (mut sender, _) = spawn_with_code(send, &home.path().join("s.err"));
    let (mut receiver, mut events) = json_receiver(home.path(), &relay, &out, "62-pilot-planet");
    json_events(&mut events, |v| {
        v["event"] == "progress" && v["bytes"].as_u64().unwrap_or(0) > 0
    });
    let sigint = std::process::Command::new("kill")
        .args(["-INT", &receiver.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(sigint.success());
    assert_eq!(wait_with_timeout(&mut receiver, LONG).code(), Some(130));
    let rest = json_events(&mut events, |_| false);
    let last = rest.last().expect("a last event");
    assert_eq!(
        (last["event"].as_str(), last["exit_code"].as_u64()),
        (Some("error"), Some(130)),
        "{rest:?}"
    );
    sender.kill().expect("stop the sender");
    let _ = sender.wait();
    let left: Vec<String> = std::fs::read_dir(&out)
        .expect("out")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].starts_with(".convey-") && left[0].ends_with(".partial"),
        "{left:?}"
    );
}
