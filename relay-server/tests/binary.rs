//! The `convey-relay` binary: settings from a config file (with the environment winning),
//! JSON log lines, `--health-check`, and a clean exit on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_convey-relay");

#[test]
fn config_file_json_logs_health_check_and_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let file = dir.path().join("relay.toml");
    std::fs::write(
        &file,
        format!("listen = \"127.0.0.1:{port}\"\nstun-listen = \"off\"\nlog-format = \"text\"\n"),
    )
    .expect("config");
    let mut relay = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .env("CONVEY_RELAY_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start convey-relay");
    let mut first = String::new();
    BufReader::new(relay.stderr.take().expect("stderr"))
        .read_line(&mut first)
        .expect("a log line");
    let line: serde_json::Value = serde_json::from_str(&first).expect("the environment chose JSON logs");
    assert_eq!(line["fields"]["message"], "convey-relay listening");
    assert_eq!(
        line["fields"]["addr"],
        format!("127.0.0.1:{port}"),
        "the file set the address"
    );

    let health = Command::new(BIN)
        .args(["--health-check", "--listen", &format!("127.0.0.1:{port}")])
        .status()
        .expect("health check");
    assert!(health.success());

    let pid = relay.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let began = std::time::Instant::now();
    let status = loop {
        if let Some(s) = relay.try_wait().expect("wait") {
            break s;
        }
        assert!(began.elapsed() < Duration::from_secs(20), "exits after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let down = Command::new(BIN)
        .args(["--health-check", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .status()
        .expect("health check");
    assert_eq!(down.code(), Some(1), "a stopped relay is unhealthy");
}

/// `--version` names the release and the protocol, and a text log line on a pipe (not a
/// terminal) carries no colour codes.
#[test]
fn version_names_the_protocol_and_piped_logs_have_no_colour() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains(env!("CARGO_PKG_VERSION")) && text.contains("protocol convey-v1"),
        "{text}"
    );
    let mut relay = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--stun-listen", "off"])
        .env("CONVEY_RELAY_LOG_FORMAT", "text")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(relay.stderr.take().expect("stderr"))
        .read_line(&mut first)
        .expect("a log line");
    let _ = relay.kill();
    let _ = relay.wait();
    assert!(first.contains("listening"), "{first}");
    assert!(!first.contains('\u{1b}'), "colour codes on a pipe: {first:?}");
}
