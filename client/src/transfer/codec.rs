//! The frame codec: zstd at a fixed level, decided per frame by the content alone, so the
//! same files always give the same packed frames (and the same torrent), and any holder of
//! the plaintext can re-create the ciphertext a peer asks for.
//!
//! A packed frame is `[compressed length: u32 LE][zstd frame][zeros]`, filling its chunks;
//! see [`convey_shared::chunk_map`] for where frames sit.

use std::{
    cell::RefCell,
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use convey_shared::{
    chunk_map::{ChunkMap, FRAME_CHUNKS},
    content::PLAIN_CHUNK,
};

use super::files::FileSet;

/// zstd's level: fixed, never chosen by the machine's speed, so output is reproducible.
const LEVEL: i32 = 3;
/// Bytes of a frame compressed first to decide whether the whole frame is worth it.
const SAMPLE: usize = 16 * 1024;
/// A frame is packed only if its sample shrinks below this share (in percent), as croc does.
const WORTH_PERCENT: usize = 98;
const HEADER: usize = 4;

/// What the offer names, so a receiver knows whether it re-creates the same bytes: the
/// format, the library version (its output may change between versions), level and frame.
pub fn codec_id() -> String {
    format!(
        "zstd-{}-level-{LEVEL}-frame-{FRAME_CHUNKS}",
        zstd::zstd_safe::version_number()
    )
}

/// A packed frame that does not decode to what the chunk map says.
#[derive(Debug, Clone, thiserror::Error)]
#[error("compressed frame {frame} is corrupt: {why}")]
pub struct CodecError {
    pub frame: u64,
    pub why: String,
}

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

fn compress(data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
    COMPRESSOR.with(|c| {
        let mut slot = c.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Compressor::new(LEVEL)?);
        }
        let compressor = slot
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no zstd context"))?;
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(data.len()));
        compressor.compress_to_buffer(data, out)?;
        Ok(())
    })
}

/// Decompress one zstd frame that must hold exactly `len` bytes; more is an error, never
/// written anywhere (no bombs).
fn decompress_exact(data: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(len);
    zstd::bulk::Decompressor::new()
        .and_then(|mut d| d.decompress_to_buffer(data, &mut out))
        .map_err(|e| format!("it decodes to more than {len} bytes or is not zstd ({e})"))?;
    if out.len() != len {
        return Err(format!("it holds {} bytes, not {len}", out.len()));
    }
    Ok(out)
}

/// Does the first 16 KiB of `plain` shrink below 98 % (`out` is scratch)?
fn worth_trying(plain: &[u8], out: &mut Vec<u8>) -> std::io::Result<bool> {
    let sample = &plain[..plain.len().min(SAMPLE)];
    compress(sample, out)?;
    Ok(out.len() * 100 < sample.len() * WORTH_PERCENT)
}

/// Pack `plain` (one frame) into whole chunks, or `None` when it is not worth it: its
/// sample does not shrink below 98 %, or packing would not save a chunk.
pub fn pack(plain: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let raw_chunks = (plain.len() as u64).div_ceil(PLAIN_CHUNK).max(1);
    if raw_chunks < 2 {
        return Ok(None);
    }
    let mut out = Vec::new();
    if !worth_trying(plain, &mut out)? {
        return Ok(None);
    }
    compress(plain, &mut out)?;
    let chunks = ((HEADER + out.len()) as u64).div_ceil(PLAIN_CHUNK);
    if chunks >= raw_chunks {
        return Ok(None);
    }
    let len = u32::try_from(out.len()).map_err(std::io::Error::other)?;
    let mut packed = Vec::with_capacity((chunks * PLAIN_CHUNK) as usize);
    packed.extend_from_slice(&len.to_le_bytes());
    packed.extend_from_slice(&out);
    packed.resize((chunks * PLAIN_CHUNK) as usize, 0);
    Ok(Some(packed))
}

/// The plaintext of packed frame `frame`, which must be exactly `plain_len` bytes: a frame
/// that would decode to more is refused before it is written anywhere (no bombs).
pub fn unpack(frame: u64, packed: &[u8], plain_len: usize) -> Result<Vec<u8>, CodecError> {
    let fail = |why: &str| CodecError {
        frame,
        why: why.to_owned(),
    };
    let head: [u8; HEADER] = packed
        .get(..HEADER)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| fail("shorter than its header"))?;
    let len = u32::from_le_bytes(head) as usize;
    let body = packed
        .get(HEADER..HEADER.saturating_add(len))
        .ok_or_else(|| fail("its length runs past its chunks"))?;
    decompress_exact(body, plain_len).map_err(|why| fail(&why))
}

/// A stream record's stored form: one zstd frame when the sample and the whole shrink
/// (below 98 %), else `None` (send it raw).
pub fn compress_record(plain: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    if !worth_trying(plain, &mut out)? {
        return Ok(None);
    }
    compress(plain, &mut out)?;
    Ok((out.len() * 100 < plain.len() * WORTH_PERCENT).then_some(out))
}

/// A compressed stream record's plaintext, which must be exactly `plain_len` bytes.
pub fn decompress_record(stored: &[u8], plain_len: usize) -> Result<Vec<u8>, String> {
    decompress_exact(stored, plain_len).map_err(|why| format!("a compressed stream record is corrupt: {why}"))
}

/// Packed frames recently re-created from plaintext, so serving a frame's 16 KiB chunks one
/// request at a time compresses it once, not once per chunk.
#[derive(Debug, Default)]
pub struct FrameCache {
    recent: Mutex<VecDeque<(u64, Arc<Vec<u8>>)>>,
}

/// Frames kept (each at most 256 KiB).
const CACHED: usize = 16;

impl FrameCache {
    /// Packed frame `frame`, from the cache or made by `make` (its plaintext, re-packed).
    fn get_or(
        &self,
        frame: u64,
        make: impl FnOnce() -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<Arc<Vec<u8>>> {
        {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, p)) = recent.iter().find(|(k, _)| *k == frame) {
                return Ok(p.clone());
            }
        }
        let packed = Arc::new(make()?);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= CACHED {
            recent.pop_front();
        }
        recent.push_back((frame, packed.clone()));
        Ok(packed)
    }

    /// Packed frame `frame` of `map`, from the cache or re-created from its plaintext in
    /// `files`.
    pub fn packed(&self, files: &FileSet, map: &ChunkMap, frame: u64) -> anyhow::Result<Arc<Vec<u8>>> {
        self.get_or(frame, || {
            let mut plain = vec![0u8; usize::try_from(map.frame_len(frame))?];
            files
                .read_exact_at(map.frame_start(frame), &mut plain)
                .context("reading the plaintext")?;
            repack(map, frame, &plain)
        })
    }

    /// Drop frame `frame` (its plaintext on disk changed).
    pub fn forget(&self, frame: u64) {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(k, _)| *k != frame);
    }
}

/// Re-create packed frame `frame` of `map` from its plaintext; the result must fill the
/// frame's chunks exactly, or these are not the bytes the sender packed.
fn repack(map: &ChunkMap, frame: u64, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
    let want = map.frame_chunks(frame).count() as u64 * PLAIN_CHUNK;
    match pack(plain)? {
        Some(p) if p.len() as u64 == want => Ok(p),
        _ => anyhow::bail!("frame {frame} does not re-create the sender's compressed bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use convey_shared::chunk_map::FRAME_PLAIN;

    fn text(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| b"the quick brown fox "[i % 20] ^ ((i / 997) as u8 & 1))
            .collect()
    }

    #[test]
    fn text_packs_deterministically_and_unpacks() {
        let plain = text(FRAME_PLAIN as usize);
        let a = pack(&plain).unwrap().expect("text compresses");
        assert_eq!(Some(a.clone()), pack(&plain).unwrap(), "same input, same bytes");
        assert_eq!(a.len() as u64 % PLAIN_CHUNK, 0);
        assert!((a.len() as u64) < FRAME_PLAIN / 4);
        assert_eq!(unpack(0, &a, plain.len()).unwrap(), plain);
    }

    #[test]
    fn random_data_and_tiny_frames_stay_raw() {
        let mut noise = vec![0u8; FRAME_PLAIN as usize];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut noise);
        assert!(pack(&noise).unwrap().is_none());
        assert!(pack(&text(100)).unwrap().is_none(), "one chunk cannot shrink");
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let zeros = vec![0u8; FRAME_PLAIN as usize];
        let packed = pack(&zeros).unwrap().unwrap();
        // The frame says it holds a whole frame; a map that claims fewer bytes refuses it.
        let err = unpack(3, &packed, 1000).unwrap_err();
        assert_eq!(err.frame, 3);
        // A bomb: a megabyte of zeros in a few bytes, offered as a frame of 16 chunks.
        let bomb = zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap();
        let mut hostile = (bomb.len() as u32).to_le_bytes().to_vec();
        hostile.extend_from_slice(&bomb);
        assert!(unpack(0, &hostile, FRAME_PLAIN as usize).is_err());
        let mut long = packed.clone();
        long[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(unpack(0, &long, FRAME_PLAIN as usize).is_err());
        assert!(unpack(0, &[1, 2], 10).is_err());
        assert!(unpack(0, &[4, 0, 0, 0, 9, 9, 9, 9], 10).is_err());
    }
}
