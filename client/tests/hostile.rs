//! The `convey` binary's output against a hostile sender (the test-only one from
//! `convey-tests`): whatever the sender puts in its messages reaches the terminal and the
//! JSON lines escaped, through the one choke point in `convey_shared::display`.

use std::{process::Stdio, time::Duration};

use convey_tests::hostile::Opened;
use serde_json::json;

mod common;

use common::wait_with_timeout;

/// Bytes a terminal would obey: ESC, BEL, and U+202E (RIGHT-TO-LEFT OVERRIDE) in UTF-8.
fn raw_controls(bytes: &[u8]) -> Vec<&'static str> {
    let mut found = Vec::new();
    if bytes.contains(&0x1b) {
        found.push("ESC");
    }
    if bytes.contains(&0x07) {
        found.push("BEL");
    }
    if bytes.windows(3).any(|w| w == "\u{202e}".as_bytes()) {
        found.push("RLO");
    }
    found
}

/// Defect 3: a sender-chosen `kind` reaches the error message (serde quotes it); in text
/// and in JSON output alike it arrives escaped, never raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_strings_in_errors_are_escaped() {
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    for json_mode in [false, true] {
        let opened = Opened::open(relay.local_addr()).await;
        let mut cmd = common::convey(home.path(), &relay);
        if json_mode {
            cmd.arg("--json");
        }
        let mut child = cmd
            .args(["receive", "--yes", "--out"])
            .arg(home.path().join("out"))
            .env("CONVEY_CODE", opened.code.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn convey receive");
        let mut hostile = opened.confirm().await;
        hostile
            .send(&json!({"type": "offer", "abilities": [], "body": {"kind": "\u{1b}]0;pwned\u{7}\u{202e}evil"}}))
            .await;
        let status = tokio::task::spawn_blocking(move || {
            let status = wait_with_timeout(&mut child, Duration::from_secs(30));
            (status, child.wait_with_output().expect("output"))
        });
        let (status, output) = status.await.expect("wait");
        hostile.close().await;
        assert_eq!(status.code(), Some(7), "a protocol error");
        for (name, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
            assert!(
                raw_controls(bytes).is_empty(),
                "{name} has {:?}",
                raw_controls(bytes)
            );
        }
        let shown = if json_mode {
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let events: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("JSON lines"))
                .collect();
            let event = events.last().expect("events").clone();
            assert_eq!(event["event"], "error", "{event}");
            event["message"].as_str().expect("message").to_owned()
        } else {
            String::from_utf8_lossy(&output.stderr).into_owned()
        };
        assert!(shown.contains("\\u{1b}]0;pwned\\u{7}\\u{202e}evil"), "{shown}");
    }
    relay.shutdown().await;
}

/// Defect 2: `receive --json` of a text prints the offer and the text, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_receiver_prints_a_text() {
    let relay = common::relay().await;
    let home = tempfile::tempdir().expect("home");
    let mut send = common::convey(home.path(), &relay);
    send.args(["send", "--text", "hello \u{202e} there"]);
    let (mut sender, code) = common::spawn_with_code(send, &home.path().join("send.err"));
    let output = tokio::task::spawn_blocking(move || {
        let out = common::bin()
            .env("HOME", home.path())
            .env("CONVEY_RELAY", relay.local_addr().to_string())
            .args(["--json", "receive", &code])
            .output()
            .expect("run convey receive");
        let sent = wait_with_timeout(&mut sender, Duration::from_secs(30));
        (out, sent, relay)
    });
    let (out, sent, relay) = output.await.expect("join");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(sent.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert!(kinds.contains(&"offer"), "{kinds:?}");
    let text = events
        .iter()
        .find(|e| e["event"] == "text")
        .expect("a text event");
    assert_eq!(text["text"], "hello \u{202e} there", "the text itself, exactly");
    assert!(raw_controls(&out.stdout).is_empty(), "but written inert");
    relay.shutdown().await;
}
