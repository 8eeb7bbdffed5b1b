//! One streaming pass over the content: SHA-256 of each file's plaintext, and the SHA-1
//! piece hashes of the ciphertext, which is computed piece by piece and thrown away. Memory
//! stays constant however large the files are.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use convey_shared::content::{CIPHER_CHUNK, ContentCipher, ContentKey, TAG_LEN, piece_length_for};
use serde_bytes::ByteBuf;
use sha1::{Digest, Sha1};
use sha2::Sha256;

use super::files::FileSet;
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
}

impl Prepared {
    pub fn info_hash_hex(&self) -> String {
        hex::encode(self.info_hash)
    }

    /// The bencoded .torrent, optionally with an `announce` URL (for third-party clients).
    pub fn torrent_bytes(&self, announce: Option<&str>) -> Vec<u8> {
        self.info.torrent_bytes(announce)
    }
}

/// Threads that seal and hash pieces while the caller reads the file.
const SEAL_WORKERS: usize = 2;

/// Worker: seal each piece's chunks and record the piece's SHA-1, until the reader is done.
fn seal_pieces(
    cipher: &ContentCipher,
    chunks_per_piece: u64,
    jobs: &Mutex<std::sync::mpsc::Receiver<(u64, Vec<u8>)>>,
    hashes: &Mutex<Vec<[u8; 20]>>,
) {
    let mut sealed = Vec::new();
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((p, plain)) = job else { return };
        sealed.clear();
        let first = p * chunks_per_piece;
        let last = (first + chunks_per_piece).min(cipher.chunk_count());
        let mut at = 0;
        for i in first..last {
            let n = usize::try_from(cipher.plain_chunk_len(i)).expect("chunk fits in memory");
            let start = sealed.len();
            sealed.extend_from_slice(&plain[at..at + n]);
            sealed.resize(start + n + TAG_LEN as usize, 0);
            cipher.seal_chunk(i, &mut sealed[start..]);
            at += n;
        }
        let digest: [u8; 20] = Sha1::digest(&sealed).into();
        hashes.lock().unwrap_or_else(|e| e.into_inner())[usize::try_from(p).expect("index fits")] = digest;
    }
}

/// Parse a .torrent received from the peer and return its info and info-hash.
pub fn parse_torrent(bytes: &[u8]) -> Result<(Info, [u8; 20])> {
    convey_shared::torrent::parse(bytes).map_err(|e| Error::Protocol(e.to_string()))
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

/// Read the content once and describe its encryption under `key` as a torrent. Stops early
/// with an error when `cancel` is set.
pub fn prepare(content: &FileSet, key: ContentKey, cancel: &AtomicBool) -> Result<Prepared> {
    let layout = content.layout();
    let size = layout.total();
    let cipher = ContentCipher::new(&key, size);
    let piece_length = piece_length_for(cipher.cipher_len());
    let chunks_per_piece = piece_length / CIPHER_CHUNK;
    let piece_count = cipher.chunk_count().div_ceil(chunks_per_piece);
    let mut digests = FileDigests {
        done: Vec::with_capacity(layout.file_count()),
        current: Sha256::new(),
    };
    let piece_hashes = Mutex::new(vec![
        [0u8; 20];
        usize::try_from(piece_count).expect("piece table fits")
    ]);

    // This thread reads and computes the SHA-256s; worker threads seal and SHA-1 whole pieces.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(u64, Vec<u8>)>(1);
    let rx = Mutex::new(rx);
    std::thread::scope(|scope| -> Result<()> {
        // Owned by this closure: dropping it when the reader is done stops the workers.
        let tx = tx;
        for _ in 0..SEAL_WORKERS {
            scope.spawn(|| seal_pieces(&cipher, chunks_per_piece, &rx, &piece_hashes));
        }
        let mut offset = 0u64;
        for p in 0..piece_count {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Transfer("cancelled".into()));
            }
            let first = p * chunks_per_piece;
            let last = (first + chunks_per_piece).min(cipher.chunk_count());
            let plain: u64 = (first..last).map(|i| cipher.plain_chunk_len(i)).sum();
            let mut buf = vec![0u8; usize::try_from(plain).expect("piece fits in memory")];
            content.read_exact_at(offset, &mut buf).map_err(Error::io(
                "reading the files to send (did one shrink while being sent?)",
            ))?;
            let mut at = 0;
            for seg in layout.segments(offset, buf.len()) {
                digests.update(seg.file, &buf[at..at + seg.len]);
                at += seg.len;
            }
            offset += plain;
            if tx.send((p, buf)).is_err() {
                break;
            }
        }
        Ok(())
    })?;
    let pieces: Vec<u8> = piece_hashes
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .concat();
    let info = Info {
        length: cipher.cipher_len(),
        name: TORRENT_NAME.to_owned(),
        piece_length,
        pieces: ByteBuf::from(pieces),
        private: 1,
    };
    Ok(Prepared {
        info_hash: info.info_hash(),
        info,
        size,
        sha256: digests.finish(layout.file_count()),
        key,
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
        let a = prepare(&set, key.clone(), &no).unwrap();
        let b = prepare(&set, key, &no).unwrap();
        assert!(prepare(&set, a.key.clone(), &AtomicBool::new(true)).is_err());
        assert_eq!(a.info_hash, b.info_hash);
        assert_eq!(a.info.length, ContentCipher::new(&a.key, 300_000).cipher_len());
        assert_eq!(a.info.pieces.len(), 40, "two 256 KiB pieces");
        let (info, hash) = parse_torrent(&a.torrent_bytes(None)).unwrap();
        assert_eq!((hash, info.name.as_str()), (a.info_hash, TORRENT_NAME));
        assert_eq!(
            parse_torrent(&a.torrent_bytes(Some("http://x/announce")))
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
            &AtomicBool::new(false),
        )
        .unwrap();

        let ciphertext = ContentCipher::new(&key, data.len() as u64).seal_in_memory(&data);
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
        let p = prepare(&set, ContentKey::from_bytes([1; 32]), &AtomicBool::new(false)).unwrap();
        let want: Vec<String> = parts.iter().map(|c| hex::encode(Sha256::digest(c))).collect();
        assert_eq!(p.sha256, want);
        assert_eq!(p.size, 40_005);
    }
}
