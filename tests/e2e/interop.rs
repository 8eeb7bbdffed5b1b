//! Interoperability with a real third-party BitTorrent client (aria2c from Debian): it finds
//! the sender through the bundled tracker and downloads the ciphertext, byte for byte what
//! convey's cipher produces. A stranger with the info-hash gets ciphertext only.

use std::{
    path::Path,
    process::Stdio,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use convey::transfer::{bt, files::FileSet, prepare::prepare, storage::SealingStorageFactory};
use convey_shared::{
    content::{ContentCipher, ContentKey},
    layout::Layout,
};
use convey_tests::{TestRelay, Ws, next_json, random_file, rendezvous_ws, send_json, sha256_file};
use sha2::{Digest, Sha256};

async fn ws(relay: &TestRelay) -> Ws {
    rendezvous_ws(relay.server.local_addr(), None).await
}

/// SHA-256 of the ciphertext of `path` under `key`, computed independently of librqbit.
fn ciphertext_sha256(path: &Path, key: &ContentKey) -> String {
    let data = std::fs::read(path).expect("read source");
    let ct = ContentCipher::new(key, data.len() as u64).seal_in_memory(&data);
    hex::encode(Sha256::digest(&ct))
}

fn require_aria2c() {
    let ok = std::process::Command::new("aria2c")
        .arg("--version")
        .stdout(Stdio::null())
        .status();
    assert!(
        matches!(ok, Ok(s) if s.success()),
        "aria2c is required for the interop test (apt-get install aria2; .ci/run installs it)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aria2c_downloads_the_ciphertext_via_the_bundled_tracker() {
    require_aria2c();
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("plain.bin");
    random_file(&src, 8 << 20, 77);
    let key = ContentKey::generate();
    let content = Arc::new(FileSet::new(
        vec![src.clone()],
        Layout::new([8 << 20]).expect("layout"),
        false,
    ));
    let prepared = prepare(&content, key.clone(), &AtomicBool::new(false)).expect("prepare");

    // A live, paired rendezvous session registers the swarm, as a real sender does.
    let (mut a, mut b) = (ws(&relay).await, ws(&relay).await);
    send_json(&mut a, serde_json::json!({"type": "allocate"})).await;
    let claimed = next_json(&mut a).await;
    send_json(
        &mut b,
        serde_json::json!({"type": "claim", "nameplate": claimed["nameplate"]}),
    )
    .await;
    assert_eq!(next_json(&mut b).await["peer_present"], true);
    assert_eq!(next_json(&mut a).await["type"], "peer-joined");
    send_json(
        &mut a,
        serde_json::json!({"type": "register-swarm", "info_hash": prepared.info_hash_hex()}),
    )
    .await;
    assert_eq!(next_json(&mut a).await["type"], "swarm-registered");

    let session = bt::start_session(dir.path(), None).await.expect("session");
    let storage = SealingStorageFactory::new(content, ContentCipher::new(&key, prepared.size));
    let opts = bt::AddOptions {
        tracker: Some(relay.addr.announce_url()),
        peers: vec![],
        paused: false,
    };
    let handle = bt::add(
        &session,
        prepared.torrent_bytes(None),
        storage.boxed_factory(),
        opts,
        dir.path(),
    )
    .await
    .expect("seed");
    bt::wait_seeding(&handle).await.expect("seeding");

    let torrent = dir.path().join("stranger.torrent");
    std::fs::write(&torrent, prepared.torrent_bytes(Some(&relay.addr.announce_url())))
        .expect("write torrent");
    let out = dir.path().join("aria2");
    let mut child = tokio::process::Command::new("aria2c")
        .args([
            "--seed-time=0",
            "--enable-dht=false",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
        ])
        .args([
            "--enable-peer-exchange=false",
            "--summary-interval=0",
            "--console-log-level=warn",
        ])
        .args([
            "--file-allocation=none",
            "--bt-stop-timeout=60",
            "--disable-ipv6=true",
        ])
        .arg(format!("--dir={}", out.display()))
        .arg(&torrent)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn aria2c");
    let status = tokio::time::timeout(Duration::from_secs(90), child.wait())
        .await
        .expect("aria2c finished in 90s")
        .expect("wait");
    assert!(status.success(), "aria2c failed: {status}");

    let got = out.join("convey-payload");
    assert_eq!(
        std::fs::metadata(&got).expect("aria2c output").len(),
        prepared.info.length
    );
    assert_eq!(
        sha256_file(&got),
        ciphertext_sha256(&src, &key),
        "aria2c got exactly the ciphertext"
    );
    assert_ne!(sha256_file(&got), prepared.sha256[0], "and not the plaintext");

    bt::shutdown(&session).await;
    let _ = (a.close(None).await, b.close(None).await);
    relay.server.shutdown().await;
}
