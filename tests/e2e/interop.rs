//! Interoperability with real third-party BitTorrent clients from Debian (aria2c,
//! transmission-cli, qbittorrent-nox): each finds the sender through the bundled tracker and
//! downloads the ciphertext, byte for byte what convey's cipher produces. A stranger with the
//! info-hash gets ciphertext only.
//!
//! Transmission and qBittorrent will not dial loopback peers, so their tests run in a network
//! namespace the test creates (root needed), where the relay and the seeder use 198.18.0.1
//! on that namespace's own `lo`: the outer test re-runs this binary's ignored inner test
//! there with `ip netns exec`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use convey::transfer::{
    bt, files::FileSet, prepare::Prepared, prepare::prepare, storage::SealingStorageFactory,
};
use convey_shared::{
    content::{ContentCipher, ContentKey},
    layout::Layout,
};
use convey_tests::{
    TestRelay, Ws, netns::run_in_namespace, next_json, random_file, rendezvous_ws, send_json, sha256_file,
};
use sha2::{Digest, Sha256};

/// A sender seeding a random file through a swarm registered by a live, paired rendezvous
/// session, as a real sender does.
struct Seeded {
    dir: tempfile::TempDir,
    src: PathBuf,
    key: ContentKey,
    prepared: Prepared,
    session: bt::Engine,
    sides: (Ws, Ws),
}

impl Seeded {
    async fn start(relay: &TestRelay, size: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("plain.bin");
        random_file(&src, size, 77);
        let key = ContentKey::generate();
        let content = Arc::new(FileSet::new(
            vec![src.clone()],
            Layout::new([size]).expect("layout"),
            false,
        ));
        let prepared = prepare(&content, key.clone(), false, &AtomicBool::new(false)).expect("prepare");
        let at = relay.server.local_addr();
        let (mut a, mut b) = (rendezvous_ws(at, None).await, rendezvous_ws(at, None).await);
        send_json(&mut a, serde_json::json!({"type": "allocate"})).await;
        let claimed = next_json(&mut a).await;
        let claim = serde_json::json!({"type": "claim", "nameplate": claimed["nameplate"]});
        send_json(&mut b, claim).await;
        assert_eq!(next_json(&mut b).await["peer_present"], true);
        assert_eq!(next_json(&mut a).await["type"], "peer-joined");
        let register = serde_json::json!({"type": "register-swarm", "info_hash": prepared.info_hash_hex()});
        send_json(&mut a, register).await;
        assert_eq!(next_json(&mut a).await["type"], "swarm-registered");

        let session = bt::start_session(dir.path(), None).await.expect("session");
        let storage = SealingStorageFactory::new(content, prepared.cipher());
        let opts = bt::AddOptions {
            tracker: Some(relay.addr.announce_url()),
            peers: vec![],
            paused: false,
            announce_every: None,
        };
        let torrent = prepared.torrent_bytes(None);
        let handle = bt::add(&session, torrent, storage.boxed_factory(), opts, dir.path())
            .await
            .expect("seed");
        bt::wait_seeding(&handle).await.expect("seeding");
        Self {
            dir,
            src,
            key,
            prepared,
            session,
            sides: (a, b),
        }
    }

    /// The .torrent a stranger would need, announcing to the bundled tracker.
    fn torrent_file(&self, relay: &TestRelay) -> PathBuf {
        let torrent = self.dir.path().join("stranger.torrent");
        std::fs::write(
            &torrent,
            self.prepared.torrent_bytes(Some(&relay.addr.announce_url())),
        )
        .expect("write torrent");
        torrent
    }

    /// `got` is exactly the ciphertext (compared with an independent encryption), not the
    /// plaintext.
    fn assert_ciphertext(&self, got: &Path) {
        assert_eq!(
            std::fs::metadata(got).expect("client output").len(),
            self.prepared.info.length
        );
        let data = std::fs::read(&self.src).expect("read source");
        let ct = ContentCipher::uncompressed(&self.key, data.len() as u64).seal_in_memory(&data);
        assert_eq!(
            sha256_file(got),
            hex::encode(Sha256::digest(&ct)),
            "the client got exactly the ciphertext"
        );
        assert_ne!(sha256_file(got), self.prepared.sha256[0], "and not the plaintext");
    }

    async fn stop(self) {
        bt::shutdown(&self.session).await;
        let (mut a, mut b) = self.sides;
        let _ = (a.close(None).await, b.close(None).await);
    }
}

fn require(tool: &str, package: &str) {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status();
    assert!(
        matches!(found, Ok(s) if s.success()),
        "{tool} is required for the interop tests (apt-get install {package}; .ci/run installs it)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn aria2c_downloads_the_ciphertext_via_the_bundled_tracker() {
    require("aria2c", "aria2");
    convey_tests::init_tracing();
    let relay = TestRelay::spawn().await;
    let seeded = Seeded::start(&relay, 8 << 20).await;
    let torrent = seeded.torrent_file(&relay);
    let out = seeded.dir.path().join("aria2");
    let mut child = tokio::process::Command::new("aria2c")
        .args(["--seed-time=0", "--enable-dht=false", "--enable-dht6=false"])
        .args(["--bt-enable-lpd=false", "--enable-peer-exchange=false"])
        .args(["--summary-interval=0", "--console-log-level=warn"])
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
    seeded.assert_ciphertext(&out.join("convey-payload"));
    seeded.stop().await;
    relay.server.shutdown().await;
}

/// Relay and seeder on 198.18.0.1 (inside the namespace), then `client` downloads; poll
/// until its output is complete.
async fn third_party_download(
    client: &str,
    command: impl FnOnce(&Path, &Path, &Path) -> tokio::process::Command,
) {
    convey_tests::init_tracing();
    let relay = TestRelay::spawn_with(|c| {
        c.listen = "198.18.0.1:0".parse().expect("addr");
        c.stun_listen = convey_relay::config::StunListen(None);
    })
    .await;
    let seeded = Seeded::start(&relay, 8 << 20).await;
    let torrent = seeded.torrent_file(&relay);
    let (out, home) = (seeded.dir.path().join("out"), seeded.dir.path().join("home"));
    std::fs::create_dir_all(&out).expect("out");
    std::fs::create_dir_all(&home).expect("home");
    let mut child = command(&torrent, &out, &home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {client}: {e}"));
    let got = out.join("convey-payload");
    let began = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("poll client") {
            panic!("{client} exited early: {status}");
        }
        let complete = std::fs::metadata(&got).is_ok_and(|m| m.len() == seeded.prepared.info.length)
            && sha256_file(&got) == {
                let data = std::fs::read(&seeded.src).expect("source");
                let ct = ContentCipher::uncompressed(&seeded.key, data.len() as u64).seal_in_memory(&data);
                hex::encode(Sha256::digest(&ct))
            };
        if complete {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "{client} did not finish within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = child.kill().await;
    seeded.assert_ciphertext(&got);
    seeded.stop().await;
    relay.server.shutdown().await;
}

#[test]
fn transmission_downloads_the_ciphertext_via_the_bundled_tracker() {
    require("transmission-cli", "transmission-cli");
    run_in_namespace("interop::inner_transmission", Some("198.18.0.1/32"));
}

#[test]
fn qbittorrent_downloads_the_ciphertext_via_the_bundled_tracker() {
    require("qbittorrent-nox", "qbittorrent-nox");
    run_in_namespace("interop::inner_qbittorrent", Some("198.18.0.1/32"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "run inside a network namespace by transmission_downloads_the_ciphertext_via_the_bundled_tracker"]
async fn inner_transmission() {
    third_party_download("transmission-cli", |torrent, out, home| {
        // No DHT, LPD, PEX or port mapping; encryption tolerated (convey speaks plain BitTorrent).
        let settings = serde_json::json!({
            "dht-enabled": false, "lpd-enabled": false, "pex-enabled": false,
            "port-forwarding-enabled": false, "utp-enabled": false,
            "encryption": 0, "rename-partial-files": true, "start-added-torrents": true,
        });
        std::fs::write(home.join("settings.json"), settings.to_string()).expect("settings");
        let mut c = tokio::process::Command::new("transmission-cli");
        c.arg("-g")
            .arg(home)
            .arg("-w")
            .arg(out)
            .args(["-et", "-M"])
            .arg(torrent);
        c
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "run inside a network namespace by qbittorrent_downloads_the_ciphertext_via_the_bundled_tracker"]
async fn inner_qbittorrent() {
    third_party_download("qbittorrent-nox", |torrent, out, home| {
        let conf = home.join("qBittorrent/config");
        std::fs::create_dir_all(&conf).expect("qbittorrent config dir");
        std::fs::write(
            conf.join("qBittorrent.conf"),
            "[LegalNotice]\nAccepted=true\n\n[BitTorrent]\nSession\\DHTEnabled=false\n\
             Session\\LSDEnabled=false\nSession\\PeXEnabled=false\nSession\\Encryption=0\n\
             Session\\Port=51413\n\n[Network]\nPortForwardingEnabled=false\n\n\
             [Preferences]\nConnection\\UPnP=false\nWebUI\\Port=18080\nWebUI\\Address=198.18.0.1\n",
        )
        .expect("qbittorrent config");
        let mut c = tokio::process::Command::new("qbittorrent-nox");
        c.arg(format!("--profile={}", home.display()))
            .arg(format!("--save-path={}", out.display()))
            .arg("--skip-dialog=true")
            .arg(torrent)
            .env("HOME", home);
        c
    })
    .await;
}
