//! The page's end of a push: the bytes of the push connection (through the relay's tunnel)
//! go in, in any slicing; each frame is opened with the content cipher, unpacked if the
//! sender packed it, checked to come in order, hashed per file, and handed on as the
//! download's bytes (one file as it is, several as a tar archive).

use convey_shared::{
    bits,
    chunk_map::ChunkMap,
    content::{CIPHER_CHUNK, ContentCipher, ContentKey},
    manifest::CheckedManifest,
    protocol::push::{HELLO_LEN, HaveField, ITEM_HEADER_LEN, Item, frame_plain_len, have_len},
};
use sha2::{Digest, Sha256};

use crate::archive::Archive;

/// Why a push cannot go on: the download must fail, never look complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFailed(pub String);

impl std::fmt::Display for PushFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the page writes first on a push connection: the hello, then which frames it holds
/// (the first `held`, on a connection that replaces one that failed; none at first) and
/// "frames in order only" (it streams them into a download), and, to a sender that takes
/// them, that it acknowledges the frames it used (its download cannot push back).
pub fn opening(hello: &[u8; HELLO_LEN], plain_len: u64, acked: bool, held: u64) -> Vec<u8> {
    let frames = ChunkMap::frame_count_for(plain_len);
    let bits = have_len(frames);
    let mut out = hello.to_vec();
    let field = HaveField {
        len: u32::try_from(bits).unwrap_or(0),
        in_order: true,
        acked,
    };
    out.extend_from_slice(&field.to_le_bytes());
    let mut have = vec![0u8; bits];
    for k in 0..held.min(frames) {
        bits::set(&mut have, k);
    }
    out.extend_from_slice(&have);
    out
}

/// Reads a push, frame after frame.
pub struct PushReader {
    cipher: ContentCipher,
    plain_len: u64,
    frames: u64,
    next_frame: u64,
    /// Bytes received and not yet used.
    pending: Vec<u8>,
    /// The header of the frame whose sealed bytes are awaited.
    awaiting: Option<Item>,
    hashers: Vec<Sha256>,
    digests: Vec<[u8; 32]>,
    layout: convey_shared::layout::Layout,
    archive: Option<Archive>,
    /// Plaintext bytes handed on.
    done: u64,
    ended: bool,
}

impl std::fmt::Debug for PushReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushReader")
            .field("next_frame", &self.next_frame)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl PushReader {
    /// Read the push of `content` sealed with `key`; `archive` wraps the files in a tar
    /// archive (several files, or folders), stamped with `mtime`.
    pub fn new(content: &CheckedManifest, key: &ContentKey, archive: bool, mtime: u64) -> Self {
        let plain_len = content.layout.total();
        let files = content.layout.file_count();
        Self {
            cipher: ContentCipher::uncompressed(key, plain_len),
            plain_len,
            frames: ChunkMap::frame_count_for(plain_len),
            next_frame: 0,
            pending: Vec::new(),
            awaiting: None,
            hashers: (0..files).map(|_| Sha256::new()).collect(),
            digests: Vec::with_capacity(files),
            layout: content.layout.clone(),
            archive: archive.then(|| Archive::new(content, mtime)),
            done: 0,
            ended: false,
        }
    }

    /// Plaintext bytes received so far.
    pub fn received(&self) -> u64 {
        self.done
    }

    /// Frames handed on so far (they come in order).
    pub fn frames_done(&self) -> u64 {
        self.next_frame
    }

    /// Has the sender said it sent everything, with every frame in?
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// SHA-256 of each file, once every frame is in.
    pub fn digests(&self) -> Option<&[[u8; 32]]> {
        (self.ended && self.digests.len() == self.hashers.len()).then_some(&self.digests[..])
    }

    /// A new connection carries the push on: drop what arrived of a frame not yet whole
    /// (the sender sends it again, from its start).
    pub fn restart(&mut self) {
        self.pending.clear();
        self.awaiting = None;
    }

    /// Take the next bytes of the connection; returns the download's next bytes.
    pub fn feed(&mut self, data: &[u8]) -> Result<Vec<u8>, PushFailed> {
        let mut out = Vec::new();
        if self.ended {
            return Ok(out);
        }
        self.pending.extend_from_slice(data);
        let mut used = 0;
        loop {
            let rest = &self.pending[used..];
            match self.awaiting {
                None => {
                    let Some(head) = rest.get(..ITEM_HEADER_LEN) else {
                        break;
                    };
                    let mut bytes = [0u8; ITEM_HEADER_LEN];
                    bytes.copy_from_slice(head);
                    used += ITEM_HEADER_LEN;
                    match Item::parse(bytes, self.plain_len).map_err(|e| PushFailed(e.to_string()))? {
                        Item::KeepAlive => {}
                        Item::End => {
                            if self.next_frame != self.frames {
                                return Err(PushFailed(
                                    "the sender ended its push before sending every frame".into(),
                                ));
                            }
                            self.finish(&mut out);
                            self.ended = true;
                            break;
                        }
                        frame @ Item::Frame { .. } => self.awaiting = Some(frame),
                    }
                }
                Some(Item::Frame {
                    frame,
                    first_chunk,
                    code,
                    sealed,
                }) => {
                    if rest.len() < sealed {
                        break;
                    }
                    let mut body = rest[..sealed].to_vec();
                    used += sealed;
                    self.awaiting = None;
                    if frame != self.next_frame {
                        return Err(PushFailed(format!(
                            "the sender sent frame {frame} where frame {} was due",
                            self.next_frame
                        )));
                    }
                    let plain = self.open(frame, first_chunk, code, &mut body)?;
                    self.emit(&plain, &mut out);
                    self.next_frame += 1;
                }
                Some(_) => self.awaiting = None,
            }
        }
        self.pending.drain(..used);
        Ok(out)
    }

    fn open(&self, frame: u64, first_chunk: u64, code: u8, sealed: &mut [u8]) -> Result<Vec<u8>, PushFailed> {
        let last_frame = frame + 1 == self.frames;
        let count = sealed.len().div_ceil(CIPHER_CHUNK as usize);
        let mut plain = Vec::with_capacity(sealed.len());
        for (c, chunk) in sealed.chunks_mut(CIPHER_CHUNK as usize).enumerate() {
            let n = self
                .cipher
                .open_chunk_as(first_chunk + c as u64, last_frame && c + 1 == count, chunk)
                .map_err(|e| PushFailed(format!("a received {e}; the download was stopped")))?;
            plain.extend_from_slice(&chunk[..n]);
        }
        let len = usize::try_from(frame_plain_len(self.plain_len, frame)).unwrap_or(0);
        let plain = if code == 0 {
            plain
        } else {
            unpack(frame, &plain, len)?
        };
        if plain.len() != len {
            return Err(PushFailed(format!("received frame {frame} has the wrong length")));
        }
        Ok(plain)
    }

    /// Hash `plain` (the next bytes of the content) into its files and hand it on.
    fn emit(&mut self, plain: &[u8], out: &mut Vec<u8>) {
        let at = self.done;
        let mut from = 0;
        for seg in self.layout.segments(at, plain.len()) {
            let part = &plain[from..from + seg.len];
            if let Some(a) = &mut self.archive {
                a.data(seg.file, part, out);
            } else {
                out.extend_from_slice(part);
            }
            self.hashers[seg.file].update(part);
            from += seg.len;
        }
        self.done += plain.len() as u64;
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        self.digests = std::mem::take(&mut self.hashers)
            .into_iter()
            .map(|h| h.finalize().into())
            .collect();
        self.hashers = vec![Sha256::new(); self.digests.len()];
        if let Some(a) = &mut self.archive {
            a.end(out);
        }
    }
}

/// A packed frame: `[compressed length: u32 LE][zstd frame][zeros]`, which must give exactly
/// `plain_len` bytes.
fn unpack(frame: u64, packed: &[u8], plain_len: usize) -> Result<Vec<u8>, PushFailed> {
    use std::io::Read;
    let corrupt = |why: &str| PushFailed(format!("compressed frame {frame} is corrupt: {why}"));
    let len = packed
        .get(..4)
        .map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize)
        .ok_or_else(|| corrupt("shorter than its header"))?;
    let mut body = packed
        .get(4..4usize.saturating_add(len))
        .ok_or_else(|| corrupt("its length runs past its chunks"))?;
    let decoder = ruzstd::decoding::StreamingDecoder::new(&mut body).map_err(|e| corrupt(&e.to_string()))?;
    let mut plain = Vec::with_capacity(plain_len);
    // One byte more than allowed, to tell a frame that decodes too long.
    decoder
        .take(plain_len as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| corrupt(&e.to_string()))?;
    if plain.len() != plain_len {
        return Err(corrupt("it decodes to the wrong length"));
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use convey_shared::{
        chunk_map::{FRAME_CHUNKS, FRAME_PLAIN},
        content::{PLAIN_CHUNK, TAG_LEN},
        manifest::{FileEntry, Manifest},
    };

    use super::*;

    fn content(sizes: &[u64]) -> CheckedManifest {
        Manifest {
            files: sizes
                .iter()
                .enumerate()
                .map(|(i, size)| FileEntry {
                    path: format!("f{i}"),
                    size: *size,
                    sha256: "0".repeat(64),
                    mode: 0o644,
                })
                .collect(),
            dirs: Vec::new(),
        }
        .check()
        .expect("manifest")
    }

    fn plain(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// The push of `data` as the sender writes it, raw frames only.
    fn pushed(key: &ContentKey, data: &[u8]) -> Vec<u8> {
        let cipher = ContentCipher::uncompressed(key, data.len() as u64);
        let sealed = cipher.seal_in_memory(data);
        let frames = ChunkMap::frame_count_for(data.len() as u64);
        let frame_cipher = FRAME_CHUNKS * CIPHER_CHUNK;
        let mut out = Vec::new();
        for k in 0..frames {
            let start = (k * frame_cipher) as usize;
            let end = ((k + 1) * frame_cipher).min(sealed.len() as u64) as usize;
            let item = Item::Frame {
                frame: k,
                first_chunk: k * FRAME_CHUNKS,
                code: 0,
                sealed: end - start,
            };
            out.extend_from_slice(&item.to_bytes());
            out.extend_from_slice(&sealed[start..end]);
            if k == 0 {
                out.extend_from_slice(&Item::KeepAlive.to_bytes());
            }
        }
        out.extend_from_slice(&Item::End.to_bytes());
        out
    }

    fn read_all(reader: &mut PushReader, wire: &[u8], slice: usize) -> Result<Vec<u8>, PushFailed> {
        let mut out = Vec::new();
        for part in wire.chunks(slice) {
            out.extend(reader.feed(part)?);
        }
        Ok(out)
    }

    #[test]
    fn a_push_goes_on_over_a_new_connection_after_the_frames_handed_on() {
        let sizes = [3 * FRAME_PLAIN - 11];
        let c = content(&sizes);
        let data = plain(sizes[0] as usize);
        let key = ContentKey::generate();
        let wire = pushed(&key, &data);
        // Frame 1's header follows frame 0 and the keep-alive after it.
        let frame1 = 2 * ITEM_HEADER_LEN + (FRAME_CHUNKS * CIPHER_CHUNK) as usize;
        let mut reader = PushReader::new(&c, &key, false, 0);
        // The first path fails part way through frame 1.
        let mut out = reader.feed(&wire[..frame1 + 1000]).expect("first path");
        assert_eq!(reader.frames_done(), 1);
        reader.restart();
        // The new connection's opening holds frame 0 only; the sender goes on from frame 1.
        let opening = opening(&[7; HELLO_LEN], sizes[0], true, reader.frames_done());
        let field = HaveField::parse(u32::from_le_bytes(
            opening[HELLO_LEN..HELLO_LEN + 4].try_into().expect("field"),
        ));
        assert!(field.in_order && field.acked);
        assert_eq!(&opening[HELLO_LEN + 4..], &[0x80]);
        out.extend(read_all(&mut reader, &wire[frame1..], 4093).expect("second path"));
        assert_eq!(out, data);
        assert!(reader.ended());
    }

    #[test]
    fn frames_in_any_slicing_give_the_content_and_each_files_digest() {
        let sizes = [FRAME_PLAIN + 5, 0, 2 * FRAME_PLAIN - 3];
        let c = content(&sizes);
        let data = plain(sizes.iter().sum::<u64>() as usize);
        let key = ContentKey::generate();
        let wire = pushed(&key, &data);
        for slice in [1 << 20, 65_536, 4093, 22] {
            let mut reader = PushReader::new(&c, &key, false, 0);
            assert_eq!(read_all(&mut reader, &wire, slice).expect("read"), data);
            assert!(reader.ended());
            let mut at = 0;
            for (size, digest) in sizes.iter().zip(reader.digests().expect("digests")) {
                let file = &data[at..at + *size as usize];
                assert_eq!(digest[..], Sha256::digest(file)[..]);
                at += *size as usize;
            }
        }
    }

    #[test]
    fn a_flipped_byte_a_missing_frame_or_an_early_end_fails() {
        let c = content(&[3 * FRAME_PLAIN]);
        let data = plain(3 * FRAME_PLAIN as usize);
        let key = ContentKey::generate();
        let wire = pushed(&key, &data);
        let mut flipped = wire.clone();
        flipped[ITEM_HEADER_LEN + 1000] ^= 1;
        let err = read_all(&mut PushReader::new(&c, &key, false, 0), &flipped, 65_536).expect_err("flipped");
        assert!(err.0.contains("download was stopped"), "{err}");
        let frame = ITEM_HEADER_LEN + (FRAME_CHUNKS * CIPHER_CHUNK) as usize;
        // The second frame left out: the third comes where the second was due.
        let mut skipped = wire[..frame + ITEM_HEADER_LEN].to_vec();
        skipped.extend_from_slice(&wire[2 * frame + ITEM_HEADER_LEN..]);
        let err = read_all(&mut PushReader::new(&c, &key, false, 0), &skipped, 65_536).expect_err("skipped");
        assert!(err.0.contains("where frame 1 was due"), "{err}");
        let mut early = wire[..frame + ITEM_HEADER_LEN].to_vec();
        early.extend_from_slice(&Item::End.to_bytes());
        let mut reader = PushReader::new(&c, &key, false, 0);
        assert!(read_all(&mut reader, &early, 65_536).is_err());
        assert!(!reader.ended() && reader.digests().is_none());
    }

    #[test]
    fn a_packed_frame_from_the_senders_zstd_opens() {
        let len = FRAME_PLAIN as usize;
        let data: Vec<u8> = b"convey ".iter().copied().cycle().take(len).collect();
        let c = content(&[len as u64]);
        let key = ContentKey::generate();
        let z = zstd::bulk::compress(&data, 3).expect("compress");
        let chunks = (4 + z.len()).div_ceil(PLAIN_CHUNK as usize) as u64;
        let mut packed = (z.len() as u32).to_le_bytes().to_vec();
        packed.extend_from_slice(&z);
        packed.resize((chunks * PLAIN_CHUNK) as usize, 0);
        let cipher = ContentCipher::uncompressed(&key, len as u64);
        let mut sealed = Vec::new();
        for (i, part) in packed.chunks(PLAIN_CHUNK as usize).enumerate() {
            let at = sealed.len();
            sealed.extend_from_slice(part);
            sealed.resize(at + part.len() + TAG_LEN as usize, 0);
            cipher.seal_chunk_as(i as u64, i as u64 + 1 == chunks, &mut sealed[at..]);
        }
        let mut wire = Item::Frame {
            frame: 0,
            first_chunk: 0,
            code: u8::try_from(chunks).expect("code"),
            sealed: sealed.len(),
        }
        .to_bytes()
        .to_vec();
        wire.extend_from_slice(&sealed);
        wire.extend_from_slice(&Item::End.to_bytes());
        let mut reader = PushReader::new(&c, &key, false, 0);
        assert_eq!(read_all(&mut reader, &wire, 9999).expect("read"), data);
    }

    #[test]
    fn several_files_stream_as_a_tar_archive() {
        let sizes = [700, 0, FRAME_PLAIN + 1];
        let c = content(&sizes);
        let data = plain(sizes.iter().sum::<u64>() as usize);
        let key = ContentKey::generate();
        let mut reader = PushReader::new(&c, &key, true, 1_700_000_000);
        let tar = read_all(&mut reader, &pushed(&key, &data), 50_000).expect("read");
        assert_eq!(tar.len() % 512, 0);
        // Header, 700 bytes padded to 1024, empty file's header, header and data padded,
        // two zero blocks.
        let expect = 512 + 1024 + 512 + 512 + (FRAME_PLAIN + 1).div_ceil(512) * 512 + 1024;
        assert_eq!(tar.len() as u64, expect);
        assert_eq!(&tar[..2], b"f0");
        assert_eq!(&tar[257..262], b"ustar");
        assert_eq!(&tar[512..1212], &data[..700]);
        assert_eq!(&tar[1536..1538], b"f1");
    }
}
