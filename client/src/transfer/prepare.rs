//! One streaming pass over the content: SHA-256 of each file's plaintext, each frame packed
//! (compressed) where that pays, and the SHA-1 piece hashes of the ciphertext, computed
//! chunk by chunk and thrown away. Memory stays constant however large the files are.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
};

use convey_shared::{
    chunk_map::{ChunkMap, FRAME_PLAIN},
    content::{CIPHER_CHUNK, ContentCipher, ContentKey, PLAIN_CHUNK, TAG_LEN, piece_length_for},
};
use serde_bytes::ByteBuf;
use sha1::{Digest, Sha1};
use sha2::Sha256;

use super::{
    codec,
    files::FileSet,
    push_send::{PushFrame, Tap},
};
use crate::{Error, error::Result};

pub use convey_shared::torrent::{Info, TORRENT_NAME};

/// Content ready to be offered.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub info: Info,
    pub info_hash: [u8; 20],
    pub size: u64,
    /// Lowercase hex SHA-256 of each file, in layout order.
    pub sha256: Vec<String>,
    pub key: ContentKey,
    /// Which frames were compressed, and so where each chunk lives.
    pub map: ChunkMap,
    /// The piece hashes were computed: `info` and `info_hash` describe the torrent (a pass
    /// for a push leaves them out).
    pub pieces: bool,
}

impl Prepared {
    pub fn info_hash_hex(&self) -> String {
        hex::encode(self.info_hash)
    }

    /// The bencoded .torrent, optionally with an `announce` URL (for third-party clients).
    pub fn torrent_bytes(&self, announce: Option<&str>) -> Vec<u8> {
        self.info.torrent_bytes(announce)
    }

    /// The cipher (and layout) of this content.
    pub fn cipher(&self) -> ContentCipher {
        ContentCipher::new(&self.key, self.map.clone())
    }
}

/// Threads that compress frames while the caller reads the files.
const PACK_WORKERS: usize = 2;

/// A frame read, and (when compressing) its packed form if packing was worth it.
type Packed = (u64, Vec<u8>, std::io::Result<Option<Vec<u8>>>);

/// Worker: pack each frame the reader hands over, until the reader is done.
fn pack_frames(
    compress: bool,
    jobs: &Mutex<mpsc::Receiver<(u64, Vec<u8>)>>,
    done: &mpsc::SyncSender<Packed>,
) {
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((k, plain)) = job else { return };
        let packed = if compress { codec::pack(&plain) } else { Ok(None) };
        if done.send((k, plain, packed)).is_err() {
            return;
        }
    }
}

/// The in-order end of the pipeline: numbers and seals each frame's chunks, hashes the
/// ciphertext into pieces, and records each frame's code.
struct Collector {
    cipher: ContentCipher,
    frames: u64,
    piece_length: u64,
    codes: Vec<u8>,
    next_chunk: u64,
    piece: Sha1,
    in_piece: u64,
    pieces: Vec<u8>,
    buf: Vec<u8>,
    /// Where sealed frames go while a receiver's push is attached.
    tap: Option<Arc<Tap>>,
    /// Compute the SHA-1 piece hashes (the torrent); without them only the digests and
    /// the chunk map come out.
    hash_pieces: bool,
    /// Frame buffers handed back to the reader, so a pass allocates a few, not one a frame.
    recycle: mpsc::SyncSender<Vec<u8>>,
}

impl Collector {
    fn frame(&mut self, k: u64, plain: &[u8], packed: Option<Vec<u8>>) {
        let (code, data) = match &packed {
            Some(p) => (p.len() as u64 / PLAIN_CHUNK, p.as_slice()),
            None => (0, plain),
        };
        self.codes
            .push(u8::try_from(code).expect("a packed frame has fewer chunks than a raw one (16)"));
        let last_frame = k + 1 == self.frames;
        let chunks = data.len().div_ceil(PLAIN_CHUNK as usize);
        let first_chunk = self.next_chunk;
        let mut sealed = self
            .tap
            .as_ref()
            .filter(|t| t.wants())
            .map(|_| Vec::with_capacity(data.len() + chunks * TAG_LEN as usize));
        for (c, part) in data.chunks(PLAIN_CHUNK as usize).enumerate() {
            self.chunk(part, last_frame && c + 1 == chunks);
            if let Some(s) = sealed.as_mut() {
                s.extend_from_slice(&self.buf);
            }
        }
        if let (Some(tap), Some(sealed)) = (&self.tap, sealed) {
            tap.offer(PushFrame {
                frame: k,
                first_chunk,
                code: u8::try_from(code).unwrap_or(0),
                sealed,
            });
        }
    }

    fn chunk(&mut self, part: &[u8], last: bool) {
        self.buf.clear();
        self.buf.extend_from_slice(part);
        self.buf.resize(part.len() + TAG_LEN as usize, 0);
        self.cipher.seal_chunk_as(self.next_chunk, last, &mut self.buf);
        self.next_chunk += 1;
        if !self.hash_pieces {
            return;
        }
        let mut at = 0;
        while at < self.buf.len() {
            let n = ((self.piece_length - self.in_piece) as usize).min(self.buf.len() - at);
            self.piece.update(&self.buf[at..at + n]);
            self.in_piece += n as u64;
            at += n;
            if self.in_piece == self.piece_length {
                self.end_piece();
            }
        }
    }

    fn end_piece(&mut self) {
        let digest: [u8; 20] = std::mem::take(&mut self.piece).finalize().into();
        self.pieces.extend_from_slice(&digest);
        self.in_piece = 0;
    }

    /// Take frames in order as the workers finish them.
    fn run(mut self, results: mpsc::Receiver<Packed>) -> Result<Self> {
        let mut waiting = BTreeMap::new();
        let mut next = 0u64;
        while next < self.frames {
            let Ok((k, plain, packed)) = results.recv() else {
                return Err(Error::Transfer("cancelled".into()));
            };
            waiting.insert(k, (plain, packed));
            while let Some((plain, packed)) = waiting.remove(&next) {
                let packed = packed.map_err(Error::io("compressing the files to send"))?;
                self.frame(next, &plain, packed);
                let _ = self.recycle.try_send(plain);
                next += 1;
            }
        }
        if self.frames == 0 {
            self.chunk(&[], true); // empty content: one empty, last chunk
        }
        if self.in_piece > 0 {
            self.end_piece();
        }
        Ok(self)
    }
}

/// For tests only: `CONVEY_TEST_READ_BPS` slows the pass to that many bytes per second, as
/// a slow disk would, so a test can see bytes move before the pass is over.
struct ReadThrottle {
    started: std::time::Instant,
    bps: Option<u64>,
}

impl ReadThrottle {
    fn from_env() -> Self {
        Self {
            started: std::time::Instant::now(),
            bps: std::env::var("CONVEY_TEST_READ_BPS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|b| *b > 0),
        }
    }

    /// Wait until reading from `offset` on keeps to the rate.
    fn wait(&self, offset: u64) {
        if let Some(bps) = self.bps {
            let due = std::time::Duration::from_secs_f64(offset as f64 / bps as f64);
            if let Some(left) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(left);
            }
        }
    }
}

/// SHA-256 of each file of a stream that is read in order.
struct FileDigests {
    done: Vec<String>,
    current: Sha256,
}

impl FileDigests {
    fn update(&mut self, file: usize, data: &[u8]) {
        while self.done.len() < file {
            self.done
                .push(hex::encode(std::mem::take(&mut self.current).finalize()));
        }
        self.current.update(data);
    }

    fn finish(mut self, files: usize) -> Vec<String> {
        while self.done.len() < files {
            self.done
                .push(hex::encode(std::mem::take(&mut self.current).finalize()));
        }
        self.done
    }
}

/// Read the content once and describe its encryption under `key` as a torrent, packing
/// frames that compress when `compress`. Stops early with an error when `cancel` is set.
pub fn prepare(content: &FileSet, key: ContentKey, compress: bool, cancel: &AtomicBool) -> Result<Prepared> {
    pass(content, key, compress, cancel, (None, true))
}

/// [`prepare`] for a push: each sealed frame goes to `tap` while a push is attached to it
/// (the tap is closed when the pass ends, however it ends), and no piece hashes are
/// computed: a push that brings everything never needs the torrent, and one that does not
/// gets it from [`prepare`] then ([`Prepared::pieces`] says which).
pub fn prepare_pushed(
    content: &FileSet,
    key: ContentKey,
    compress: bool,
    cancel: &AtomicBool,
    tap: Arc<Tap>,
) -> Result<Prepared> {
    let prepared = pass(content, key, compress, cancel, (Some(tap.clone()), false));
    tap.close();
    prepared
}

fn pass(
    content: &FileSet,
    key: ContentKey,
    compress: bool,
    cancel: &AtomicBool,
    (tap, hash_pieces): (Option<Arc<Tap>>, bool),
) -> Result<Prepared> {
    let layout = content.layout();
    let size = layout.total();
    let frames = ChunkMap::frame_count_for(size);
    // From the uncompressed length, which bounds the compressed one: known before packing.
    let piece_length = piece_length_for(ChunkMap::identity(size).cipher_len());
    let mut digests = FileDigests {
        done: Vec::with_capacity(layout.file_count()),
        current: Sha256::new(),
    };
    let (recycle, recycled) = mpsc::sync_channel::<Vec<u8>>(PACK_WORKERS * 4);
    let collector = Collector {
        cipher: ContentCipher::uncompressed(&key, size),
        frames,
        piece_length,
        codes: Vec::with_capacity(usize::try_from(frames).unwrap_or(0)),
        next_chunk: 0,
        piece: Sha1::new(),
        in_piece: 0,
        pieces: Vec::new(),
        buf: Vec::with_capacity(CIPHER_CHUNK as usize),
        tap,
        hash_pieces,
        recycle,
    };

    // This thread reads and computes the SHA-256s; workers pack; the collector seals and
    // hashes pieces in order.
    let (jobs_tx, jobs_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(PACK_WORKERS);
    let (done_tx, done_rx) = mpsc::sync_channel::<Packed>(PACK_WORKERS * 2);
    let jobs_rx = Mutex::new(jobs_rx);
    let collected = std::thread::scope(|scope| -> Result<Collector> {
        let collecting = scope.spawn(move || collector.run(done_rx));
        for _ in 0..PACK_WORKERS {
            let done = done_tx.clone();
            let jobs = &jobs_rx;
            scope.spawn(move || pack_frames(compress, jobs, &done));
        }
        drop(done_tx);
        // Owned here: dropping it when the reader is done stops the workers.
        let jobs = jobs_tx;
        let mut read = || -> Result<()> {
            let throttle = ReadThrottle::from_env();
            for k in 0..frames {
                throttle.wait(k * FRAME_PLAIN);
                if cancel.load(Ordering::Relaxed) {
                    return Err(Error::Transfer("cancelled".into()));
                }
                let offset = k * FRAME_PLAIN;
                let len = FRAME_PLAIN.min(size - offset);
                let mut buf = recycled.try_recv().unwrap_or_default();
                buf.resize(usize::try_from(len).expect("frame fits in memory"), 0);
                content.read_exact_at(offset, &mut buf).map_err(Error::io(
                    "reading the files to send (did one shrink while being sent?)",
                ))?;
                let mut at = 0;
                for seg in layout.segments(offset, buf.len()) {
                    digests.update(seg.file, &buf[at..at + seg.len]);
                    at += seg.len;
                }
                if jobs.send((k, buf)).is_err() {
                    break;
                }
            }
            Ok(())
        };
        let read = read();
        drop(jobs);
        let collected = collecting
            .join()
            .map_err(|_| Error::Transfer("the piece hasher failed".into()))?;
        read?;
        collected
    })?;
    let map = ChunkMap::from_codes(size, collected.codes)
        .map_err(|e| Error::Transfer(format!("building the chunk map: {e}")))?;
    let info = Info {
        length: map.cipher_len(),
        name: TORRENT_NAME.to_owned(),
        piece_length,
        pieces: ByteBuf::from(collected.pieces),
        private: 1,
    };
    Ok(Prepared {
        info_hash: info.info_hash(),
        info,
        size,
        sha256: digests.finish(layout.file_count()),
        key,
        map,
        pieces: hash_pieces,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use convey_shared::layout::Layout;
    use std::{io::Write, path::Path};

    fn one_file(path: &Path, size: u64) -> FileSet {
        FileSet::new(vec![path.to_owned()], Layout::new([size]).unwrap(), false)
    }

    #[test]
    fn torrent_roundtrips_and_is_deterministic() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&vec![42u8; 300_000]).unwrap();
        let key = ContentKey::from_bytes([5; 32]);
        let no = AtomicBool::new(false);
        let set = one_file(f.path(), 300_000);
        let a = prepare(&set, key.clone(), true, &no).unwrap();
        let b = prepare(&set, key, true, &no).unwrap();
        assert!(prepare(&set, a.key.clone(), true, &AtomicBool::new(true)).is_err());
        assert_eq!(a.info_hash, b.info_hash);
        assert_eq!(a.info.length, a.map.cipher_len());
        assert!(!a.map.is_identity(), "a run of one byte compresses");
        assert_eq!(a.info.pieces.len(), 20, "packed, it fits one 256 KiB piece");
        let (info, hash) = convey_shared::torrent::parse(&a.torrent_bytes(None)).unwrap();
        assert_eq!((hash, info.name.as_str()), (a.info_hash, TORRENT_NAME));
        assert_eq!(
            convey_shared::torrent::parse(&a.torrent_bytes(Some("http://x/announce")))
                .unwrap()
                .1,
            a.info_hash
        );
    }

    #[test]
    fn piece_hashes_and_digest_match_a_sequential_computation() {
        // Enough pieces for both workers to interleave, and a short last chunk and piece.
        let data: Vec<u8> = (0..3_000_123u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        let key = ContentKey::from_bytes([9; 32]);
        let p = prepare(
            &one_file(f.path(), data.len() as u64),
            key.clone(),
            false,
            &AtomicBool::new(false),
        )
        .unwrap();

        let ciphertext = ContentCipher::uncompressed(&key, data.len() as u64).seal_in_memory(&data);
        let expected: Vec<u8> = ciphertext
            .chunks(p.info.piece_length as usize)
            .flat_map(|piece| <[u8; 20]>::from(Sha1::digest(piece)))
            .collect();
        assert!(expected.len() > 20 * 8, "several pieces");
        assert_eq!(p.info.pieces.as_ref(), expected.as_slice());
        assert_eq!(p.sha256, [hex::encode(Sha256::digest(&data))]);
    }

    #[test]
    fn digests_each_file_of_a_folder() {
        let d = tempfile::tempdir().unwrap();
        let parts: [&[u8]; 4] = [b"", b"first", b"", &[7u8; 40_000]];
        let paths: Vec<_> = (0..4).map(|i| d.path().join(i.to_string())).collect();
        for (p, c) in paths.iter().zip(parts) {
            std::fs::write(p, c).unwrap();
        }
        let set = FileSet::new(paths, Layout::new(parts.map(|c| c.len() as u64)).unwrap(), false);
        let p = prepare(
            &set,
            ContentKey::from_bytes([1; 32]),
            true,
            &AtomicBool::new(false),
        )
        .unwrap();
        let want: Vec<String> = parts.iter().map(|c| hex::encode(Sha256::digest(c))).collect();
        assert_eq!(p.sha256, want);
        assert_eq!(p.size, 40_005);
    }
}
