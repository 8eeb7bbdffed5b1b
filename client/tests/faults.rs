//! Local faults named as local faults, through the real binary: a disk that another program
//! fills mid-transfer ends the receiver with exit 8 and one line naming the space, keeps
//! the partial transfer, tells the sender only a category (never the receiver's paths),
//! and after space is freed both commands run again resume and complete. Needs root (it
//! mounts a tmpfs) and fails loudly without it.

mod common;

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{
    convey, json_events, json_receiver, run, send_and_receive, spawn_with_code, wait_with_timeout,
    write_random,
};

const LONG: Duration = Duration::from_secs(120);

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).expect("mount point");
        run(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            &at.display().to_string(),
        ]);
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Write zeros to `path` until the disk under it is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).expect("filler");
    let block = vec![0u8; 1 << 20];
    let mut n = 0;
    while f.write_all(&block).is_ok() {
        n += block.len() as u64;
    }
    let _ = f.flush();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filled_mid_transfer_ends_with_one_line_and_the_transfer_resumes() {
    const SIZE: usize = 48 << 20;
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let src = home.path().join("payload.bin");
    write_random(&src, SIZE);
    let out = home.path().join("out");
    let disk = Tmpfs::mount(&out, "96m");

    let mut send = convey(home.path(), &relay);
    send.args(["send", "--limit-rate", "8M", "--code", "71-pilot-planet"])
        .arg(&src);
    let sender_err = home.path().join("send1.err");
    let (mut sender, _) = spawn_with_code(send, &sender_err);
    let (mut receiver, mut events) = json_receiver(home.path(), &relay, &out, "71-pilot-planet");
    json_events(&mut events, |v| {
        v["event"] == "progress" && v["bytes"].as_u64().unwrap_or(0) >= 8 << 20
    });
    // Another program takes the rest of the space after the free-space check passed.
    let filler = out.join("filler");
    assert!(fill(&filler) > 0, "the filler took some space");
    let seen = json_events(&mut events, |v| v["event"] == "error");
    let status = wait_with_timeout(&mut receiver, LONG);
    let sender_status = wait_with_timeout(&mut sender, LONG);
    let error = seen.last().expect("events");
    assert_eq!(error["event"], "error", "{seen:?}");
    assert_eq!(status.code(), Some(8), "{error}");
    assert_eq!(error["exit_code"], 8);
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("is full") && message.contains("MiB more needed") && message.contains("resume"),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(!sender_status.success());
    let said = std::fs::read_to_string(&sender_err).expect("sender stderr");
    assert!(said.contains("the receiver ran out of disk space"), "{said}");
    assert!(
        !said.contains(&*out.to_string_lossy()),
        "the receiver's paths stay with it: {said}"
    );
    assert!(
        !said.contains("Caused by") && !said.contains("backtrace"),
        "{said}"
    );
    assert!(!out.join("payload.bin").exists(), "nothing poses as complete");

    // Space freed: both commands again, with a new code, resume and complete.
    std::fs::remove_file(&filler).expect("free space");
    let seen = send_and_receive(home.path(), &relay, &[src.as_os_str()], &out, "72-pilot-planet");
    assert!(
        seen.iter().any(|v| v["event"] == "resumed"),
        "it resumed: {seen:?}"
    );
    assert!(
        std::fs::read(out.join("payload.bin")).expect("received") == std::fs::read(&src).expect("source"),
        "byte-identical"
    );
    drop(disk);
}
