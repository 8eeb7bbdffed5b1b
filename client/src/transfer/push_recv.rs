//! The receiver's push: frames arrive over one connection as the sender reads them, are
//! authenticated (ChaCha20-Poly1305, numbered as the torrent numbers them), decoded and
//! written into the staging files, and hashed (SHA-256 per file) in order as they arrive.
//! Which frames are on disk is kept in a small bitfield beside the staging files, so a rerun
//! after a kill asks only for the rest.
//!
//! Decrypting, decoding and writing run on their own thread; the connection's reader only
//! frames the bytes, so a slow disk holds the sender back instead of filling memory.

use std::{
    fs::{File, OpenOptions},
    net::SocketAddr,
    os::unix::fs::FileExt,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use convey_shared::{
    bits::{self, has},
    chunk_map::{ChunkMap, FRAME_PLAIN},
    content::{CIPHER_CHUNK, ContentCipher, ContentKey},
    protocol::push::{HELLO_LEN, HaveField, ITEM_HEADER_LEN, Item, frame_plain_len, have_len},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    sync::mpsc,
};

use super::{
    codec,
    files::FileSet,
    writer::{FileHasher, WRITEBACK_EVERY, is_disk_full},
};
use crate::{Error, error::Result};

/// How long a push connection may carry nothing (the sender says it is there every second).
pub const PUSH_SILENCE: Duration = Duration::from_secs(8);
/// How long connecting (through the path selector) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Frames queued for the writing thread.
const QUEUE: usize = 8;
/// The bitfield on disk is brought up to date after this many new frames (1 MiB): what a
/// kill can lose.
const RECORD_EVERY: u64 = 4;

/// Why a push stopped before every frame was in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The connection broke, went silent, or carried something that failed to authenticate:
    /// try again or let BitTorrent fetch the rest.
    Broken(String),
    /// The disk is full.
    DiskFull,
    /// Writing failed otherwise.
    Write(String),
    /// A compressed frame did not decode (the sender's data is corrupt).
    Corrupt(String),
}

/// What the writing thread ends with.
#[derive(Debug)]
pub struct Pushed {
    /// Every frame is on disk.
    pub complete: bool,
    /// SHA-256 of each file, when every frame was hashed in order as it arrived (or read
    /// back in order from an earlier attempt).
    pub sha256: Option<Vec<[u8; 32]>>,
    /// Why it stopped, if it did.
    pub stop: Option<Stop>,
}

enum Job {
    Frame(Item, Vec<u8>),
    /// Answer once everything queued before is written.
    Sync(tokio::sync::oneshot::Sender<()>),
}

/// The receiving end of a push, across connections: the writing thread and what is on disk.
pub struct PushSink {
    /// For tests only (`CONVEY_TEST_PUSH_FRAMES`): take at most this many frames over the
    /// push in this run, as a push whose every path broke would, so BitTorrent fetches the rest.
    frame_limit: Option<u64>,
    frames_fetched: AtomicU64,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<Pushed>>,
    state: Arc<Shared>,
}

struct Shared {
    /// Frames on disk, as a bitfield (the thread writes it; connections read it).
    have: std::sync::Mutex<Vec<u8>>,
    frames: u64,
    plain_len: u64,
    /// Plaintext bytes on disk.
    bytes: AtomicU64,
    /// Sealed bytes that arrived over a push connection in this run.
    fetched: AtomicU64,
    /// Set once the thread stopped for good.
    stop: std::sync::Mutex<Option<Stop>>,
}

impl std::fmt::Debug for PushSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSink").finish_non_exhaustive()
    }
}

impl PushSink {
    /// Start writing into `files` (the staging files); `record` is where the bitfield of
    /// frames on disk lives (read back when it is there: a resumed transfer).
    pub fn start(files: Arc<FileSet>, key: &ContentKey, record: PathBuf) -> Result<Self> {
        let plain_len = files.layout().total();
        let frames = ChunkMap::frame_count_for(plain_len);
        let mut have = vec![0u8; have_len(frames)];
        if let Ok(old) = std::fs::read(&record)
            && old.len() == have.len()
        {
            have = old;
        }
        let on_disk = (0..frames)
            .filter(|k| has(&have, *k))
            .map(|k| frame_plain_len(plain_len, k))
            .sum();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&record)
            .map_err(Error::io(format!("creating {}", record.display())))?;
        // Whole from the start, so later updates write only the bytes they change.
        file.write_all_at(&have, 0)
            .and_then(|()| file.set_len(have.len() as u64))
            .map_err(Error::io(format!("writing {}", record.display())))?;
        let state = Arc::new(Shared {
            have: std::sync::Mutex::new(have.clone()),
            frames,
            plain_len,
            bytes: AtomicU64::new(on_disk),
            fetched: AtomicU64::new(0),
            stop: std::sync::Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut thread = SinkThread {
            hasher: FileHasher::new(files.layout().file_count()),
            files,
            cipher: ContentCipher::uncompressed(key, plain_len),
            plain_len,
            have,
            record: file,
            unrecorded: 0,
            dirty: None,
            hashed: 0,
            written_back: 0,
            back: Vec::new(),
            state: state.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("convey-push-writer".into())
            .spawn(move || thread.run(rx))
            .map_err(Error::io("starting the writer"))?;
        Ok(Self {
            frame_limit: std::env::var("CONVEY_TEST_PUSH_FRAMES")
                .ok()
                .and_then(|v| v.parse().ok()),
            frames_fetched: AtomicU64::new(0),
            tx: Some(tx),
            thread: Some(thread),
            state,
        })
    }

    /// Plaintext bytes already on disk when this run started, or since.
    pub fn bytes(&self) -> u64 {
        self.state.bytes.load(Ordering::Relaxed)
    }

    /// Sealed bytes that came over a push connection in this run.
    pub fn fetched(&self) -> u64 {
        self.state.fetched.load(Ordering::Relaxed)
    }

    /// Is every frame on disk?
    pub fn complete(&self) -> bool {
        let have = self.state.have.lock().unwrap_or_else(|e| e.into_inner());
        (0..self.state.frames).all(|k| has(&have, k))
    }

    /// Has this run taken all the frames a test allows it over the push?
    pub fn limit_reached(&self) -> bool {
        self.frame_limit
            .is_some_and(|l| self.frames_fetched.load(Ordering::Relaxed) >= l)
    }

    /// Has the writing thread stopped for good (a full disk, a write error, corrupt data)?
    pub fn stopped(&self) -> Option<Stop> {
        self.state.stop.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Connect to the sender at `addr` (the local path selector), say the hello and what is
    /// already here, and write what arrives until the sender says it sent everything, the
    /// connection breaks, or it is silent for [`PUSH_SILENCE`].
    pub async fn fetch(
        &self,
        addr: SocketAddr,
        hello: &[u8; HELLO_LEN],
        mut progress: impl FnMut(u64),
    ) -> Stop {
        let broken = |why: &str| Stop::Broken(why.to_owned());
        let Some(tx) = self.tx.clone() else {
            return broken("the writer has stopped");
        };
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await;
        let Ok(Ok(mut conn)) = connected else {
            return broken("cannot reach the sender");
        };
        conn.set_nodelay(true).ok();
        let have = self.state.have.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut opening = hello.to_vec();
        let field = HaveField {
            len: u32::try_from(have.len()).unwrap_or(0),
            in_order: false,
            acked: false,
        };
        opening.extend_from_slice(&field.to_le_bytes());
        opening.extend_from_slice(&have);
        if conn.write_all(&opening).await.is_err() {
            return broken("the connection to the sender closed");
        }
        let mut input = BufReader::with_capacity(256 * 1024, conn);
        let plain_len = self.plain_len();
        loop {
            let mut head = [0u8; ITEM_HEADER_LEN];
            match tokio::time::timeout(PUSH_SILENCE, input.read_exact(&mut head)).await {
                Err(_) => return broken("the sender's push went silent"),
                Ok(Err(_)) => return broken("the connection to the sender closed"),
                Ok(Ok(_)) => {}
            }
            let item = match Item::parse(head, plain_len) {
                Ok(i) => i,
                Err(e) => return broken(&e.to_string()),
            };
            let sealed = match item {
                Item::KeepAlive => continue,
                Item::End => {
                    // Let the writer catch up (so `complete` is up to date), then close our
                    // end (the sender waits for it).
                    let (done_tx, done) = tokio::sync::oneshot::channel();
                    if tx.send(Job::Sync(done_tx)).await.is_ok() {
                        let _ = done.await;
                    }
                    let _ = input.into_inner().shutdown().await;
                    return broken("the sender sent everything it had");
                }
                Item::Frame { sealed, .. } => sealed,
            };
            let mut buf = vec![0u8; sealed];
            match tokio::time::timeout(PUSH_SILENCE, input.read_exact(&mut buf)).await {
                Ok(Ok(_)) => {}
                _ => return broken("the connection to the sender closed mid-frame"),
            }
            self.state.fetched.fetch_add(sealed as u64, Ordering::Relaxed);
            if tx.send(Job::Frame(item, buf)).await.is_err() {
                return self.stopped().unwrap_or_else(|| broken("the writer has stopped"));
            }
            progress(self.bytes());
            self.frames_fetched.fetch_add(1, Ordering::Relaxed);
            if self.limit_reached() {
                return broken("the test's frame limit was reached");
            }
        }
    }

    fn plain_len(&self) -> u64 {
        self.state.plain_len
    }

    /// Stop the writing thread once it has written what it was given.
    pub async fn finish(mut self) -> Pushed {
        drop(self.tx.take());
        let thread = self.thread.take();
        let joined = tokio::task::spawn_blocking(move || thread.map(JoinHandle::join)).await;
        match joined {
            Ok(Some(Ok(p))) => p,
            _ => Pushed {
                complete: false,
                sha256: None,
                stop: Some(Stop::Write("the writer thread failed".into())),
            },
        }
    }
}

impl Drop for PushSink {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct SinkThread {
    files: Arc<FileSet>,
    cipher: ContentCipher,
    plain_len: u64,
    have: Vec<u8>,
    record: File,
    /// Frames written since the bitfield on disk was brought up to date, and the bytes of
    /// the bitfield they changed.
    unrecorded: u64,
    dirty: Option<std::ops::Range<usize>>,
    /// Frames hashed so far, in order.
    hashed: u64,
    written_back: u64,
    back: Vec<u8>,
    hasher: FileHasher,
    state: Arc<Shared>,
}

impl SinkThread {
    fn frames(&self) -> u64 {
        self.state.frames
    }

    fn run(&mut self, mut rx: mpsc::Receiver<Job>) -> Pushed {
        let mut stop = self.hash_ready(None).err();
        while stop.is_none() {
            match rx.blocking_recv() {
                Some(Job::Frame(item, sealed)) => {
                    if let Err(s) = self.frame(item, sealed) {
                        stop = Some(s);
                    }
                }
                Some(Job::Sync(done)) => {
                    let _ = done.send(());
                }
                None => break,
            }
        }
        drop(rx);
        self.save_record();
        if let Some(s) = &stop {
            *self.state.stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.clone());
        }
        let complete = (0..self.frames()).all(|k| has(&self.have, k));
        Pushed {
            complete,
            sha256: (self.hashed == self.frames() && complete)
                .then(|| std::mem::replace(&mut self.hasher, FileHasher::new(0)).finish()),
            stop,
        }
    }

    fn frame(&mut self, item: Item, mut sealed: Vec<u8>) -> Result<(), Stop> {
        let Item::Frame {
            frame,
            first_chunk,
            code,
            ..
        } = item
        else {
            return Ok(());
        };
        if has(&self.have, frame) {
            return Ok(());
        }
        let last_frame = frame + 1 == self.frames();
        let count = sealed.len().div_ceil(CIPHER_CHUNK as usize);
        let mut plain = Vec::with_capacity(sealed.len());
        for (c, chunk) in sealed.chunks_mut(CIPHER_CHUNK as usize).enumerate() {
            let n = self
                .cipher
                .open_chunk_as(first_chunk + c as u64, last_frame && c + 1 == count, chunk)
                .map_err(|e| Stop::Broken(format!("a pushed {e}")))?;
            plain.extend_from_slice(&chunk[..n]);
        }
        let len = usize::try_from(frame_plain_len(self.plain_len, frame)).unwrap_or(0);
        let plain = if code == 0 {
            plain
        } else {
            codec::unpack(frame, &plain, len).map_err(|e| Stop::Corrupt(e.to_string()))?
        };
        if plain.len() != len {
            return Err(Stop::Broken("a pushed frame has the wrong length".into()));
        }
        self.files
            .write_all_at(frame * FRAME_PLAIN, &plain)
            .map_err(|e| {
                if is_disk_full(&e) {
                    Stop::DiskFull
                } else {
                    Stop::Write(format!("writing the received files: {e}"))
                }
            })?;
        if let Some(byte) = bits::set(&mut self.have, frame) {
            self.dirty = Some(match self.dirty.take() {
                Some(d) => d.start.min(byte)..d.end.max(byte + 1),
                None => byte..byte + 1,
            });
        }
        {
            let mut shared = self.state.have.lock().unwrap_or_else(|e| e.into_inner());
            bits::set(&mut shared, frame);
        }
        self.state.bytes.fetch_add(len as u64, Ordering::Relaxed);
        self.unrecorded += 1;
        if self.unrecorded >= RECORD_EVERY {
            self.save_record();
        }
        self.hash_ready(Some((frame, &plain)))
    }

    /// Bring the bitfield on disk up to date. Frames are marked only after their bytes were
    /// written, so a killed receiver never claims a frame it does not have.
    fn save_record(&mut self) {
        if let Some(d) = self.dirty.take()
            && let Some(bytes) = self.have.get(d.clone())
            && let Err(err) = self.record.write_all_at(bytes, d.start as u64)
        {
            tracing::debug!(%err, "could not record the frames received");
        }
        self.unrecorded = 0;
    }

    /// Hash the frames now in order: `just` from memory, the others read back from disk.
    fn hash_ready(&mut self, just: Option<(u64, &[u8])>) -> Result<(), Stop> {
        while self.hashed < self.frames() && has(&self.have, self.hashed) {
            let k = self.hashed;
            let at = k * FRAME_PLAIN;
            let plain = match just {
                Some((j, p)) if j == k => p,
                _ => {
                    let n = usize::try_from(frame_plain_len(self.plain_len, k)).unwrap_or(0);
                    self.back.resize(n, 0);
                    self.files
                        .read_exact_at(at, &mut self.back)
                        .map_err(|e| Stop::Write(format!("reading the received files back: {e}")))?;
                    &self.back[..]
                }
            };
            self.hasher.update(&self.files, at, plain);
            self.hashed += 1;
        }
        let hashed = (self.hashed * FRAME_PLAIN).min(self.plain_len);
        if hashed - self.written_back >= WRITEBACK_EVERY || hashed == self.plain_len {
            self.files
                .start_writeback(self.written_back, hashed - self.written_back);
            self.written_back = hashed;
        }
        Ok(())
    }
}
