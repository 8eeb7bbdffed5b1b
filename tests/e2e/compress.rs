//! Compressed offers from a hostile sender, against the real receiver (real relay, real
//! librqbit): a forged chunk map is refused before asking, and a packed frame that would
//! decode to more than the map allows (a decompression bomb) ends the transfer with a clear
//! error, nothing installed and nothing written past what the map says.

use std::{path::Path, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use convey::{Error, Transport};
use convey_shared::{chunk_map::FRAME_PLAIN, content::PLAIN_CHUNK};
use convey_tests::{
    TestRelay,
    hostile::{Opened, Seeder, files_offer},
    receive_options, text_file,
};
use serde_json::{Value, json};

/// Offer `offer` to a receiver on `out` (direct only); what it was asked, and how it ended.
async fn offer_to_receiver(
    relay: &TestRelay,
    offer: &Value,
    out: &Path,
) -> (bool, Result<convey::ReceiveReport, Error>) {
    let opened = Opened::open(relay.server.local_addr()).await;
    let asked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut opts = receive_options(relay, opened.code.clone(), out.to_owned());
    opts.transport = Transport::Direct;
    let seen = asked.clone();
    opts.accept = Arc::new(move |_| {
        seen.store(true, std::sync::atomic::Ordering::Relaxed);
        true
    });
    let task = tokio::spawn(convey::receive(opts, convey::ignore_events()));
    let mut hostile = opened.confirm().await;
    hostile.send(offer).await;
    let result = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the receiver ends within a minute")
        .expect("receiver task");
    hostile.close().await;
    (asked.load(std::sync::atomic::Ordering::Relaxed), result)
}

fn with_packing(mut offer: Value, codec: &str, codes: &[u8]) -> Value {
    offer["body"]["packing"] = json!({"codec": codec, "frames": B64.encode(codes)});
    offer
}

/// Every file under `dir`, with its size.
fn sizes_under(dir: &Path) -> Vec<(String, u64)> {
    walk(dir)
        .into_iter()
        .map(|p| {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p.display().to_string(), len)
        })
        .collect()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_chunk_maps_are_refused_before_asking() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("log.txt");
    text_file(&src, 3 * FRAME_PLAIN, 1);
    let seeder = Seeder::start(vec![src]).await;
    let ours = convey::transfer::codec::codec_id();
    let plain = files_offer(
        seeder.manifest(&["log.txt"]),
        &seeder.key,
        &seeder.torrent,
        &[seeder.addr],
    );
    for (offer, says) in [
        (
            with_packing(plain.clone(), &ours, &[1, 1]),
            "chunk map is not valid",
        ),
        (
            with_packing(plain.clone(), &ours, &[0, 16, 0]),
            "chunk map is not valid",
        ),
        // Well-formed, but it does not describe the torrent's ciphertext.
        (with_packing(plain.clone(), &ours, &[3, 0, 0]), "torrent"),
        (
            with_packing(plain.clone(), "gzip-9", &[3, 0, 0]),
            "compression this receiver does not know",
        ),
    ] {
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).expect("out");
        let (asked, result) = offer_to_receiver(&relay, &offer, &out).await;
        let err = result.expect_err("refused");
        assert!(!asked, "refused before asking: {err}");
        assert!(err.to_string().contains(says), "{err}");
        assert_eq!(err.exit_code(), Error::Protocol(String::new()).exit_code());
        assert!(
            sizes_under(&out).is_empty(),
            "nothing written: {:?}",
            sizes_under(&out)
        );
    }
    seeder.stop().await;
    relay.server.shutdown().await;
}

/// The sender seeds, as its first chunk, a zstd frame of 64 MiB of zeros (a few hundred
/// bytes), and claims in its map that this chunk is a packed frame of 256 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_is_refused_and_nothing_is_installed() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bomb = zstd_bomb();
    let mut first = (bomb.len() as u32).to_le_bytes().to_vec();
    first.extend_from_slice(&bomb);
    assert!(first.len() as u64 <= PLAIN_CHUNK, "the bomb fits one chunk");
    first.resize(PLAIN_CHUNK as usize, 0);
    // Seeded uncompressed, chunk 0 holds the bomb and chunk 1 a 1000-byte raw tail: the
    // same ciphertext layout as a packed frame of one chunk followed by a raw frame.
    first.extend_from_slice(&[b'x'; 1000]);
    let src = dir.path().join("seeded");
    std::fs::write(&src, &first).expect("write");
    let seeder = Seeder::start(vec![src]).await;
    let claimed = FRAME_PLAIN + 1000;
    let manifest = json!({"files": [{"path": "bomb.bin", "size": claimed, "sha256": "00".repeat(32), "mode": 0o644}], "dirs": []});
    let offer = with_packing(
        files_offer(manifest, &seeder.key, &seeder.torrent, &[seeder.addr]),
        &convey::transfer::codec::codec_id(),
        &[1, 0],
    );
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("out");
    let (asked, result) = offer_to_receiver(&relay, &offer, &out).await;
    let err = result.expect_err("refused");
    assert!(asked, "the offer itself was well-formed");
    assert!(
        err.to_string().contains("compressed data does not decode"),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was installed"), "{err}");
    assert!(!out.join("bomb.bin").exists(), "nothing poses as complete");
    for (path, len) in sizes_under(&out) {
        assert!(
            len <= claimed,
            "{path} holds {len} bytes, more than the map allows"
        );
    }
    seeder.stop().await;
    relay.server.shutdown().await;
}

/// A zstd frame that decodes to 64 MiB of zeros.
fn zstd_bomb() -> Vec<u8> {
    zstd::bulk::compress(&vec![0u8; 64 << 20], 19).expect("compress")
}
