//! The receiver's writer thread. librqbit's thread only queues each received ciphertext
//! chunk (its piece check reads the kept copy); this thread authenticates and decrypts the
//! chunks into the staging files, hashes every file's plaintext in order as soon as the
//! chunks before it are in, and starts write-back of what it has hashed. Opening and
//! writing thus run beside the network on the other core, and when the last piece arrives
//! the files are already hashed and mostly on disk: the receiver's verify pass and final
//! flush, which used to take as long as the download, shrink to the tail. Parts of a
//! compressed frame wait on disk in the frame's place until the frame is complete.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use bytes::Bytes;
use convey_shared::{
    chunk_map::{ChunkMap, Place},
    content::{CIPHER_CHUNK, ContentCipher, PLAIN_CHUNK, TAG_LEN},
};
use sha2::{Digest, Sha256};

use super::{
    codec::{self, FrameCache},
    files::FileSet,
};

/// Chunks queued for the writer (4 MiB); librqbit waits when the writer falls behind.
const QUEUE: usize = 256;
/// Write-back is started every this many hashed bytes.
pub(crate) const WRITEBACK_EVERY: u64 = 32 << 20;

/// Which chunks hold authenticated plaintext on disk, and which were handed to the writer.
#[derive(Debug)]
pub struct ChunkSet {
    bits: Vec<AtomicU64>,
    queued: Vec<AtomicU64>,
    /// Ciphertext of chunks queued but not yet written, for reads in between.
    kept: Mutex<HashMap<u64, Bytes>>,
    /// Something arrived (or may be on disk from an earlier attempt).
    any: AtomicBool,
    /// Chunks in all.
    count: u64,
    /// Packed frames not complete yet: which of their parts are on disk, as they arrived,
    /// in the frame's place (the compressed bytes are smaller than the plaintext they
    /// become, so they fit). Held while a part's slot is read, and while a complete frame
    /// is written over its parts.
    staged: Mutex<HashMap<u64, u16>>,
    /// Packed frames re-created for reads.
    pub(crate) frames: FrameCache,
}

impl ChunkSet {
    /// `n` chunks, all unwritten, or all possibly written (`full`, when resuming).
    pub fn new(n: u64, full: bool) -> Self {
        let words = usize::try_from(n.div_ceil(64)).expect("chunk bitmap fits in memory");
        let fill = if full { u64::MAX } else { 0 };
        Self {
            bits: (0..words).map(|_| AtomicU64::new(fill)).collect(),
            queued: (0..words).map(|_| AtomicU64::new(0)).collect(),
            kept: Mutex::default(),
            any: AtomicBool::new(full),
            count: n,
            staged: Mutex::default(),
            frames: FrameCache::default(),
        }
    }

    fn clear(&self, i: u64) {
        self.bits[(i / 64) as usize].fetch_and(!(1 << (i % 64)), Ordering::Release);
    }

    fn forget_kept(&self, i: u64) {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).remove(&i);
    }

    /// If chunk `i` is a part of a packed frame that sits on disk as it arrived, read that
    /// part (`buf`: one chunk's bytes) and say so.
    pub fn read_staged(
        &self,
        i: u64,
        files: &FileSet,
        map: &ChunkMap,
        buf: &mut [u8],
    ) -> std::io::Result<bool> {
        let Place::Packed { frame, part, .. } = map.place(i) else {
            return Ok(false);
        };
        let staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
        if staged.get(&frame).is_some_and(|m| m & (1 << part) != 0) {
            files.read_exact_at(map.part_at(frame, part), buf)?;
            return Ok(true);
        }
        Ok(false)
    }

    pub fn set(&self, i: u64) {
        self.bits[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::Release);
    }

    pub fn get(&self, i: u64) -> bool {
        self.bits[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// Chunk `i` arrived and is queued for the writer.
    pub fn mark_queued(&self, i: u64) {
        self.queued[(i / 64) as usize].fetch_or(1 << (i % 64), Ordering::Release);
        self.any.store(true, Ordering::Release);
    }

    /// Keep chunk `i`'s ciphertext until the writer has written it (at most `max` chunks).
    pub fn keep(&self, i: u64, ciphertext: &Bytes, max: usize) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() < max {
            kept.insert(i, ciphertext.clone());
        }
    }

    /// Chunk `i`'s ciphertext, while it is not on disk yet.
    pub fn kept(&self, i: u64) -> Option<Bytes> {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&i)
            .cloned()
    }

    /// Was chunk `i` queued for the writer (it may not be on disk yet)?
    pub fn queued(&self, i: u64) -> bool {
        self.queued[(i / 64) as usize].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// The share of `total` plaintext bytes not on disk yet, in proportion to the chunks.
    pub fn missing_share(&self, total: u64) -> u64 {
        let chunks = self.count.max(1);
        let have: u64 = self
            .bits
            .iter()
            .map(|w| u64::from(w.load(Ordering::Acquire).count_ones()))
            .sum();
        let have = have.min(chunks);
        let missing = u128::from(chunks.saturating_sub(have)) * u128::from(total) / u128::from(chunks);
        u64::try_from(missing).unwrap_or(total)
    }
}

enum Job {
    Chunk(u64, Bytes),
    Finish,
}

/// What the writer found once everything was in.
#[derive(Debug)]
pub struct Written {
    /// SHA-256 of every file, in manifest order, when the writer saw all of them arrive
    /// (not when resuming: what was on disk before was not hashed).
    pub sha256: Option<Vec<[u8; 32]>>,
    /// A compressed frame that never decoded, when the sender's data was corrupt.
    pub corrupt: Option<String>,
}

/// Handle to the writer thread.
#[derive(Debug)]
pub struct Writer {
    tx: mpsc::SyncSender<Job>,
    /// The first write error; later chunks are refused with it.
    failed: Arc<Mutex<Option<String>>>,
    /// A write failed because the disk is full (or the quota used up).
    disk_full: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<Written>>>,
}

impl Writer {
    /// Start writing into `files`; `hash` when the files start empty (not resuming).
    pub fn spawn(
        files: Arc<FileSet>,
        cipher: ContentCipher,
        written: Arc<ChunkSet>,
        hash: bool,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let failed = Arc::new(Mutex::new(None));
        let disk_full = Arc::new(AtomicBool::new(false));
        let mut state = WriterThread {
            disk_full: disk_full.clone(),
            hasher: hash.then(|| FileHasher::new(files.layout().file_count())),
            files,
            cipher,
            written,
            failed: failed.clone(),
            next: 0,
            written_back: 0,
            back: Vec::new(),
            decode_error: None,
        };
        let thread = std::thread::Builder::new()
            .name("convey-writer".into())
            .spawn(move || state.run(rx))?;
        Ok(Self {
            tx,
            failed,
            disk_full,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Did writing fail for want of space?
    pub fn disk_full(&self) -> bool {
        self.disk_full.load(Ordering::Acquire)
    }

    /// Queue ciphertext chunk `i` (waits while the queue is full). Fails once writing failed.
    pub fn queue(&self, i: u64, ciphertext: Bytes) -> anyhow::Result<()> {
        if let Some(e) = self.failed.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            anyhow::bail!("{e}");
        }
        self.tx
            .send(Job::Chunk(i, ciphertext))
            .map_err(|_| anyhow::anyhow!("the writer has stopped"))
    }

    /// Write what is queued, stop, and report; `Err` with the first write error.
    pub async fn finish(&self) -> Result<Written, String> {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(thread) = thread else {
            return Err("the writer was already finished".into());
        };
        let tx = self.tx.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let _ = tx.send(Job::Finish);
            thread.join()
        })
        .await;
        let written = match joined {
            Ok(Ok(w)) => w,
            _ => return Err("the writer thread failed".into()),
        };
        match self.failed.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Paths that never called `finish` (a failed download): stop the thread.
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = self.tx.send(Job::Finish);
            let _ = thread.join();
        }
    }
}

struct WriterThread {
    disk_full: Arc<AtomicBool>,
    files: Arc<FileSet>,
    cipher: ContentCipher,
    written: Arc<ChunkSet>,
    failed: Arc<Mutex<Option<String>>>,
    hasher: Option<FileHasher>,
    /// The first chunk not hashed yet.
    next: u64,
    /// Plaintext bytes whose write-back has been started.
    written_back: u64,
    /// Plaintext read back for hashing.
    back: Vec<u8>,
    /// Why the last packed frame that failed to decode did (a frame still missing at the
    /// end says this).
    decode_error: Option<String>,
}

impl WriterThread {
    fn run(&mut self, rx: mpsc::Receiver<Job>) -> Written {
        let mut buf = [0u8; CIPHER_CHUNK as usize];
        while let Ok(Job::Chunk(i, ciphertext)) = rx.recv() {
            if self.failed.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                continue; // drain: librqbit hears the error on its next write
            }
            let n = ciphertext.len();
            buf[..n].copy_from_slice(&ciphertext);
            drop(ciphertext);
            if self.cipher.open_chunk(i, &mut buf[..n]).is_err() {
                // Forged or corrupted: keep nothing. Its piece fails librqbit's check and is
                // fetched again (and the peer that sent it dropped).
                tracing::debug!(chunk = i, "dropping a block that failed authentication");
                continue;
            }
            let plain = &buf[..n - TAG_LEN as usize];
            let placed = match self.cipher.map().place(i) {
                Place::Raw { offset, .. } => self.write_raw(i, offset, plain),
                Place::Packed { frame, part, parts } => self.stage(i, (frame, part, parts), plain),
            };
            if let Err(e) = placed {
                *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
            }
        }
        let complete = self.next == self.cipher.chunk_count();
        let staged = !self.lock_staged().is_empty();
        Written {
            sha256: self.hasher.take().filter(|_| complete).map(FileHasher::finish),
            corrupt: self.decode_error.take().filter(|_| staged),
        }
    }

    fn write_raw(&mut self, i: u64, offset: u64, plain: &[u8]) -> Result<(), String> {
        // A chunk written again replaces one whose piece failed librqbit's check: a
        // co-receiver holds the content key, so its forged block passes the AEAD check
        // and only the piece hash catches it. If the forged bytes were hashed already,
        // the streaming digests are void; the final check then reads the files again.
        if self.written.get(i) && i < self.next {
            self.hasher = None;
        }
        self.files.write_all_at(offset, plain).map_err(self.write_err())?;
        self.written.set(i);
        self.written.forget_kept(i);
        self.hash_ready(i, plain)
            .map_err(|e| format!("reading the received files back: {e}"))
    }

    /// Put part `part` of packed frame `frame` in its place; once all `parts` are there,
    /// decode the frame and write its plaintext over them.
    fn stage(&mut self, i: u64, (frame, part, parts): (u64, u64, u64), data: &[u8]) -> Result<(), String> {
        let map = self.cipher.map().clone();
        let start = map.frame_start(frame);
        let write_err = self.write_err();
        let is_staged = self.lock_staged().contains_key(&frame);
        if !is_staged && self.written.get(i) {
            // The frame looks complete on disk (decoded earlier, or a resumed start that
            // assumes everything is there). If it re-creates this part, nothing changes.
            if self.on_disk_part_is(frame, part, data) {
                self.written.forget_kept(i);
                return Ok(());
            }
            // It does not: what is on disk is not this frame (an unfinished earlier attempt,
            // or a frame decoded from a forged part). Collect its parts again.
            if map.frame_chunks(frame).start < self.next {
                self.hasher = None;
            }
            for c in map.frame_chunks(frame) {
                self.written.clear(c);
            }
            self.written.frames.forget(frame);
        }
        self.files
            .write_all_at(map.part_at(frame, part), data)
            .map_err(&write_err)?;
        let written = self.written.clone();
        let mut staged = written.staged.lock().unwrap_or_else(|e| e.into_inner());
        let mask = staged.entry(frame).or_insert(0);
        *mask |= 1 << part;
        let complete = u64::from(mask.count_ones()) == parts;
        self.written.forget_kept(i);
        if !complete {
            return Ok(());
        }
        let mut packed = vec![0u8; (parts * PLAIN_CHUNK) as usize];
        self.files.read_exact_at(start, &mut packed).map_err(&write_err)?;
        let plain = match codec::unpack(frame, &packed, map.frame_len(frame) as usize) {
            Ok(p) => p,
            Err(e) => {
                // Wait for a replacement part (the piece check fails); if none comes, the
                // transfer ends incomplete and says why.
                tracing::debug!(%e, "a compressed frame did not decode");
                self.decode_error = Some(e.to_string());
                return Ok(());
            }
        };
        self.files.write_all_at(start, &plain).map_err(&write_err)?;
        staged.remove(&frame);
        drop(staged);
        self.written.frames.forget(frame);
        let chunks = map.frame_chunks(frame);
        let first = chunks.start;
        for c in chunks {
            self.written.set(c);
        }
        self.hash_ready(first, &plain)
            .map_err(|e| format!("reading the received files back: {e}"))
    }

    /// Turns a write error into the writer's message, noting a full disk.
    fn write_err(&self) -> impl Fn(std::io::Error) -> String + use<> {
        let full = self.disk_full.clone();
        move |e| {
            if is_disk_full(&e) {
                full.store(true, Ordering::Release);
            }
            format!("writing the received files: {e}")
        }
    }

    fn lock_staged(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u16>> {
        self.written.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Does the plaintext on disk re-create `data` as part `part` of packed frame `frame`?
    fn on_disk_part_is(&self, frame: u64, part: u64, data: &[u8]) -> bool {
        let packed = self.written.frames.packed(&self.files, self.cipher.map(), frame);
        packed.is_ok_and(|p| p.get(ChunkMap::part_range(part)) == Some(data))
    }

    /// Hash the chunks that are now in order, from `just` (what chunk `i` completes) or read
    /// back from the files, and start write-back of what is hashed.
    fn hash_ready(&mut self, i: u64, just: &[u8]) -> std::io::Result<()> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(());
        };
        let map = self.cipher.map();
        while self.next < self.cipher.chunk_count() && self.written.get(self.next) {
            let range = map.plain_range(self.next);
            let plain = if self.next == i {
                just
            } else {
                let n = usize::try_from(range.end - range.start).unwrap_or(0);
                self.back.resize(n, 0);
                self.files.read_exact_at(range.start, &mut self.back)?;
                &self.back[..]
            };
            hasher.update(&self.files, range.start, plain);
            self.next += 1;
        }
        let hashed = if self.next == self.cipher.chunk_count() {
            self.cipher.plain_len()
        } else {
            map.plain_range(self.next).start
        };
        if hashed - self.written_back >= WRITEBACK_EVERY || hashed == self.cipher.plain_len() {
            self.files
                .start_writeback(self.written_back, hashed - self.written_back);
            self.written_back = hashed;
        }
        Ok(())
    }
}

/// Did a write fail for want of space (no space left, or the quota used up)?
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    let full_codes = [rustix::io::Errno::NOSPC, rustix::io::Errno::DQUOT].map(|c| c.raw_os_error());
    e.raw_os_error().is_some_and(|c| full_codes.contains(&c)) || e.kind() == std::io::ErrorKind::StorageFull
}

/// SHA-256 of each file of the stream, fed in stream order.
pub(crate) struct FileHasher {
    done: Vec<[u8; 32]>,
    current: Sha256,
    count: usize,
}

impl FileHasher {
    pub(crate) fn new(count: usize) -> Self {
        Self {
            done: Vec::with_capacity(count),
            current: Sha256::new(),
            count,
        }
    }

    /// Close files before `file` (empty files in between get the empty digest).
    fn advance_to(&mut self, file: usize) {
        while self.done.len() < file.min(self.count) {
            let h = std::mem::take(&mut self.current);
            self.done.push(h.finalize().into());
        }
    }

    /// `plain` sits at stream offset `at`.
    pub(crate) fn update(&mut self, files: &FileSet, at: u64, plain: &[u8]) {
        let mut from = 0;
        for seg in files.layout().segments(at, plain.len()) {
            self.advance_to(seg.file);
            self.current.update(&plain[from..from + seg.len]);
            from += seg.len;
        }
    }

    pub(crate) fn finish(mut self) -> Vec<[u8; 32]> {
        self.advance_to(self.count);
        self.done
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use convey_shared::{content::ContentKey, layout::Layout};

    use super::*;

    /// Three files (one empty) as one stream, sealed in memory.
    fn setup(dir: &std::path::Path) -> (Arc<FileSet>, ContentCipher, Vec<u8>, Vec<Vec<u8>>) {
        let sizes = [40_000u64, 0, 20_000];
        let plain: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let paths: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("f{i}"))).collect();
        for (p, s) in paths.iter().zip(sizes) {
            std::fs::File::create(p).unwrap().set_len(s).unwrap();
        }
        let files = Arc::new(FileSet::new(paths, Layout::new(sizes).unwrap(), true));
        let cipher = ContentCipher::uncompressed(&ContentKey::from_bytes([9; 32]), plain.len() as u64);
        let sealed = cipher.seal_in_memory(&plain);
        let chunks = sealed.chunks(CIPHER_CHUNK as usize).map(<[u8]>::to_vec).collect();
        (files, cipher, plain, chunks)
    }

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    #[tokio::test]
    async fn opens_out_of_order_chunks_drops_forgeries_and_hashes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let (files, cipher, plain, chunks) = setup(dir.path());
        let written = Arc::new(ChunkSet::new(cipher.chunk_count(), false));
        let writer = Writer::spawn(files.clone(), cipher.clone(), written.clone(), true).unwrap();
        let mut forged = chunks[1].clone();
        forged[100] ^= 1;
        writer.queue(1, Bytes::from(forged)).unwrap();
        for i in (0..chunks.len()).rev() {
            writer.queue(i as u64, Bytes::from(chunks[i].clone())).unwrap();
        }
        let done = writer.finish().await.unwrap();
        let sha256 = done.sha256.expect("every chunk arrived, so every file is hashed");
        assert_eq!(
            sha256,
            vec![sha(&plain[..40_000]), sha(b""), sha(&plain[40_000..])]
        );
        let on_disk: Vec<u8> = (0..3)
            .flat_map(|i| std::fs::read(dir.path().join(format!("f{i}"))).unwrap())
            .collect();
        assert_eq!(
            on_disk, plain,
            "the forged chunk was dropped, the real one written"
        );
        assert!((0..cipher.chunk_count()).all(|i| written.get(i)));
    }

    #[tokio::test]
    async fn packed_frames_arriving_out_of_order_decode_into_place() {
        use convey_shared::chunk_map::{ChunkMap, FRAME_PLAIN};
        let dir = tempfile::tempdir().unwrap();
        // Two compressible frames and a short random tail, across two files.
        let mut plain: Vec<u8> = (0..2 * FRAME_PLAIN as usize)
            .map(|i| b"abcabd"[i % 6] ^ (i / 4000) as u8)
            .collect();
        plain.extend((0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        let sizes = [300_000u64, plain.len() as u64 - 300_000];
        let paths: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("f{i}"))).collect();
        for (p, s) in paths.iter().zip(sizes) {
            std::fs::File::create(p).unwrap().set_len(s).unwrap();
        }
        let files = Arc::new(FileSet::new(paths, Layout::new(sizes).unwrap(), true));
        let mut codes = Vec::new();
        let mut payload = Vec::new();
        for frame in plain.chunks(FRAME_PLAIN as usize) {
            match codec::pack(frame).unwrap() {
                Some(p) => {
                    codes.push((p.len() as u64 / PLAIN_CHUNK) as u8);
                    payload.extend_from_slice(&p);
                }
                None => {
                    codes.push(0);
                    payload.extend_from_slice(frame);
                }
            }
        }
        let map = ChunkMap::from_codes(plain.len() as u64, codes).unwrap();
        assert!(!map.is_identity());
        let cipher = ContentCipher::new(&ContentKey::from_bytes([4; 32]), map.clone());
        let chunks: Vec<Vec<u8>> = payload
            .chunks(PLAIN_CHUNK as usize)
            .enumerate()
            .map(|(i, part)| {
                let mut b = part.to_vec();
                b.resize(part.len() + TAG_LEN as usize, 0);
                cipher.seal_chunk(i as u64, &mut b);
                b
            })
            .collect();
        assert_eq!(chunks.len() as u64, map.chunk_count());
        let written = Arc::new(ChunkSet::new(cipher.chunk_count(), false));
        let writer = Writer::spawn(files, cipher.clone(), written.clone(), true).unwrap();
        let mut forged = chunks[1].clone();
        forged[7] ^= 1;
        writer.queue(1, Bytes::from(forged)).unwrap();
        for i in (0..chunks.len()).rev() {
            writer.queue(i as u64, Bytes::from(chunks[i].clone())).unwrap();
        }
        let done = writer.finish().await.unwrap();
        assert!(done.corrupt.is_none());
        assert_eq!(done.sha256.expect("hashed").len(), 2);
        let on_disk: Vec<u8> = (0..2)
            .flat_map(|i| std::fs::read(dir.path().join(format!("f{i}"))).unwrap())
            .collect();
        assert!(on_disk == plain, "every frame decoded into its place");
        assert!((0..cipher.chunk_count()).all(|i| written.get(i)));
    }

    #[tokio::test]
    async fn a_missing_chunk_leaves_the_files_unhashed() {
        let dir = tempfile::tempdir().unwrap();
        let (files, cipher, _, chunks) = setup(dir.path());
        let written = Arc::new(ChunkSet::new(cipher.chunk_count(), false));
        let writer = Writer::spawn(files, cipher, written.clone(), true).unwrap();
        for (i, c) in chunks.iter().enumerate().skip(1) {
            writer.queue(i as u64, Bytes::from(c.clone())).unwrap();
        }
        assert!(writer.finish().await.unwrap().sha256.is_none());
        assert!(!written.get(0));
    }

    #[tokio::test]
    async fn a_write_error_is_reported_and_refuses_further_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (_, cipher, _, chunks) = setup(dir.path());
        // Files that cannot be opened for writing: they do not exist.
        let gone: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("missing/f{i}"))).collect();
        let files = Arc::new(FileSet::new(
            gone,
            Layout::new([40_000, 0, 20_000]).unwrap(),
            true,
        ));
        let written = Arc::new(ChunkSet::new(cipher.chunk_count(), false));
        let writer = Writer::spawn(files, cipher, written, true).unwrap();
        writer.queue(0, Bytes::from(chunks[0].clone())).unwrap();
        let mut refused = false;
        for _ in 0..200 {
            if writer.queue(1, Bytes::from(chunks[1].clone())).is_err() {
                refused = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(refused, "once a write failed, librqbit hears it");
        let err = writer.finish().await.unwrap_err();
        assert!(err.contains("writing the received files"), "{err}");
    }
}
