//! A hostile sender for the receiver's tests: it speaks the protocol from `shared` (the
//! rendezvous, SPAKE2, key confirmation, the sealed channel, the stream's framing) but puts
//! whatever a test wants on the wire, any field of any message, so the real receiver can be
//! driven with offers an honest sender never makes. It can also seed real ciphertext with
//! librqbit (through convey's own content code) for any list of files, under any names.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use convey::transfer::{bt, files::FileSet, prepare::prepare, storage::SealingStorageFactory};
use convey_shared::{
    Code, Nameplate,
    content::{ContentKey, StreamCipher},
    crypto::{Channel, SessionKey, Side, confirmation, verify_confirmation},
    layout::Layout,
    pake::Pake,
    protocol::stream,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Ws, next_json, rendezvous_ws, send_json};

/// A code opened on the relay, waiting for the receiver.
#[derive(Debug)]
pub struct Opened {
    ws: Ws,
    pub code: Code,
}

/// A hostile sender past key confirmation.
#[derive(Debug)]
pub struct HostileSender {
    ws: Ws,
    channel: Channel,
    key: SessionKey,
}

impl Opened {
    /// Allocate a nameplate on `relay` and make up the words.
    pub async fn open(relay: SocketAddr) -> Self {
        let mut ws = rendezvous_ws(relay, None).await;
        send_json(&mut ws, json!({"type": "allocate"})).await;
        let claimed = next_json(&mut ws).await;
        assert_eq!(claimed["type"], "claimed", "{claimed}");
        let nameplate = Nameplate(claimed["nameplate"].as_u64().expect("nameplate") as u32);
        let code = Code::generate(&mut rand::thread_rng(), nameplate);
        Self { ws, code }
    }

    /// Wait for the receiver, run SPAKE2 and key confirmation honestly.
    pub async fn confirm(mut self) -> HostileSender {
        loop {
            let m = next_json(&mut self.ws).await;
            if m["type"] == "peer-joined" {
                break;
            }
        }
        let (pake, msg) = Pake::start(&self.code);
        send_body(&mut self.ws, &msg).await;
        let theirs = recv_body(&mut self.ws).await;
        let key = pake.finish(&theirs).expect("receiver's SPAKE2 message");
        send_body(&mut self.ws, &confirmation(&key, Side::Sender)).await;
        let confirm = recv_body(&mut self.ws).await;
        assert!(
            verify_confirmation(&key, Side::Receiver, &confirm),
            "receiver confirmed"
        );
        HostileSender {
            channel: Channel::new(&key, Side::Sender),
            ws: self.ws,
            key,
        }
    }
}

async fn send_body(ws: &mut Ws, body: &[u8]) {
    send_json(ws, json!({"type": "send", "body": B64.encode(body)})).await;
}

async fn recv_body(ws: &mut Ws) -> Vec<u8> {
    loop {
        let m = next_json(ws).await;
        match m["type"].as_str() {
            Some("message") => return B64.decode(m["body"].as_str().expect("body")).expect("base64"),
            Some("peer-left") => panic!("the receiver left: {m}"),
            _ => {}
        }
    }
}

impl HostileSender {
    /// Seal and send any JSON value as a peer message.
    pub async fn send(&mut self, msg: &Value) {
        let sealed = self.channel.seal(msg.to_string().as_bytes());
        send_body(&mut self.ws, &sealed).await;
    }

    /// The receiver's next sealed message, or `None` if it left first (bounded wait).
    pub async fn recv(&mut self) -> Option<Value> {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(60), next_json(&mut self.ws))
                .await
                .ok()?;
            match m["type"].as_str() {
                Some("message") => {
                    let body = B64.decode(m["body"].as_str()?).ok()?;
                    let json = self.channel.open(&body).ok()?;
                    return serde_json::from_slice(&json).ok();
                }
                Some("peer-left") => return None,
                _ => {}
            }
        }
    }

    /// Leave the relay (a relay shutting down waits for connections still open).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }

    /// What an honest receiver writes first on a stream connection of this session.
    pub fn stream_hello(&self) -> [u8; stream::HELLO_LEN] {
        stream::hello(&self.key)
    }
}

/// A files offer with every field as given.
pub fn files_offer(manifest: Value, key: &ContentKey, torrent: &[u8], hints: &[SocketAddr]) -> Value {
    json!({
        "type": "offer",
        "abilities": ["bt-v1"],
        "body": {
            "kind": "files",
            "manifest": manifest,
            "content_key": key,
            "torrent": B64.encode(torrent),
            "direct_hints": hints,
        }
    })
}

/// A stream offer pointing the receiver at `hints`.
pub fn stream_offer(key: &ContentKey, hints: &[SocketAddr]) -> Value {
    json!({
        "type": "offer",
        "abilities": [convey_shared::protocol::peer::ABILITY_STREAM],
        "body": {"kind": "stream", "content_key": key, "direct_hints": hints}
    })
}

/// Real ciphertext of `sources` (uncompressed: the offer names no packing), seeded by
/// librqbit on a loopback port.
#[derive(Debug)]
pub struct Seeder {
    pub torrent: Vec<u8>,
    pub key: ContentKey,
    /// Hex SHA-256 of each source, in order.
    pub sha256: Vec<String>,
    pub sizes: Vec<u64>,
    pub addr: SocketAddr,
    engine: bt::Engine,
    _dir: tempfile::TempDir,
}

impl Seeder {
    pub async fn start(sources: Vec<PathBuf>) -> Self {
        let sizes: Vec<u64> = sources
            .iter()
            .map(|p| std::fs::metadata(p).expect("source").len())
            .collect();
        let files = Arc::new(FileSet::new(
            sources,
            Layout::new(sizes.iter().copied()).expect("sizes"),
            false,
        ));
        let prepared = {
            let files = files.clone();
            tokio::task::spawn_blocking(move || {
                prepare(&files, ContentKey::generate(), false, &AtomicBool::new(false)).expect("prepare")
            })
            .await
            .expect("prepare task")
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = bt::start_session(dir.path(), None).await.expect("session");
        let cipher = prepared.cipher();
        let torrent = prepared.torrent_bytes(None);
        let handle = bt::add(
            &engine,
            torrent.clone(),
            SealingStorageFactory::new(files, cipher).boxed_factory(),
            bt::AddOptions {
                tracker: None,
                peers: Vec::new(),
                paused: false,
                announce_every: None,
            },
            dir.path(),
        )
        .await
        .expect("add");
        bt::wait_seeding(&handle).await.expect("seeding");
        let port = engine.session().announce_port().expect("listening");
        Self {
            torrent,
            key: prepared.key,
            sha256: prepared.sha256,
            sizes,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            engine,
            _dir: dir,
        }
    }

    /// A manifest of the seeded files under `names` (one per source, in order).
    pub fn manifest(&self, names: &[&str]) -> Value {
        let files: Vec<Value> = names
            .iter()
            .zip(self.sizes.iter().zip(&self.sha256))
            .map(|(n, (size, sha))| json!({"path": n, "size": size, "sha256": sha, "mode": 0o644}))
            .collect();
        json!({"files": files, "dirs": []})
    }

    pub async fn stop(self) {
        bt::shutdown(&self.engine).await;
    }
}

/// A stream server that records the first bytes the first connection writes, then answers
/// it with `chunks` (each one raw record) sealed under `key` (the final one marked last if `last`), then holds
/// the connection open, silent, for `hold_open`.
#[derive(Debug)]
pub struct StreamListener {
    pub addr: SocketAddr,
    pub first_bytes: tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    task: tokio::task::JoinHandle<()>,
}

impl StreamListener {
    pub async fn spawn(key: ContentKey, chunks: Vec<Vec<u8>>, last: bool, hold_open: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, first_bytes) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let mut first = vec![0u8; stream::HELLO_LEN];
            let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_exact(&mut first)).await;
            let _ = tx.send(first);
            let cipher = StreamCipher::new(&key);
            let n = chunks.len();
            for (i, c) in chunks.iter().enumerate() {
                let last = last && i + 1 == n;
                let mut record = stream::Record {
                    compressed: false,
                    plain_len: c.len(),
                    stored_len: c.len(),
                }
                .to_bytes()
                .to_vec();
                record.extend_from_slice(c);
                let sealed = cipher.seal(i as u64, last, &record);
                let head = stream::header(last, sealed.len()).expect("header");
                if conn.write_all(&head).await.is_err() || conn.write_all(&sealed).await.is_err() {
                    return;
                }
            }
            // Then say nothing, keeping the connection open.
            tokio::time::sleep(hold_open).await;
        });
        Self {
            addr,
            first_bytes,
            task,
        }
    }
}

impl Drop for StreamListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}
