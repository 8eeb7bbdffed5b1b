//! Where ciphertext chunk `i` lives in the plaintext: the one description of the content's
//! layout that the sender's preparation, both sides' storage and the writer share.
//!
//! The plaintext is cut into frames of [`FRAME_PLAIN`] bytes (16 chunks' worth). A frame is
//! either *raw*, its 16 chunks holding its bytes as they are (what every frame was before
//! compression, so incompressible content costs nothing), or *packed*: compressed into
//! fewer whole chunks, which open only together. The map records one code per frame (0 for
//! raw, else the packed frame's chunk count) and travels inside the sealed offer; with no
//! packed frame it is not sent at all. Nothing here compresses: the codec lives with the
//! client (and any decoder of the same format will do).

use std::{ops::Range, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD};

use crate::content::{PLAIN_CHUNK, TAG_LEN};

/// Chunks of one raw frame.
pub const FRAME_CHUNKS: u64 = 16;
/// Plaintext bytes of every frame but the last.
pub const FRAME_PLAIN: u64 = FRAME_CHUNKS * PLAIN_CHUNK;

/// A chunk map that does not fit the content it claims to describe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("the chunk map is not valid base64")]
    Encoding,
    #[error("the chunk map has {got} frames where the content has {want}")]
    FrameCount { got: u64, want: u64 },
    #[error("frame {0} of the chunk map does not save a chunk")]
    NotSmaller(u64),
}

/// Where one chunk's bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The chunk holds plaintext `[offset, offset + len)` as it is.
    Raw { offset: u64, len: u64 },
    /// The chunk is part `part` of packed frame `frame`, which has `parts` chunks.
    Packed { frame: u64, part: u64, parts: u64 },
}

/// The layout of one offer's ciphertext: frame codes plus the index of each frame's first
/// chunk (for the lookup from chunk to frame). Cheap to clone: the tables are shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkMap {
    plain_len: u64,
    /// `None`: every frame raw (no compression, or nothing compressed).
    packed: Option<Arc<Packed>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Packed {
    codes: Vec<u8>,
    /// `first[k]` is frame `k`'s first chunk; one extra entry holds the chunk count.
    first: Vec<u64>,
}

impl ChunkMap {
    /// Every frame raw: chunk `i` holds plaintext `[i * PLAIN_CHUNK, ...)`.
    pub fn identity(plain_len: u64) -> Self {
        Self {
            plain_len,
            packed: None,
        }
    }

    /// Frames of `plain_len` bytes of plaintext.
    pub fn frame_count_for(plain_len: u64) -> u64 {
        plain_len.div_ceil(FRAME_PLAIN)
    }

    /// The map with frame `k` coded `codes[k]` (0 raw, else its chunk count). Every packed
    /// frame must be smaller than it is raw, so a map never makes the ciphertext longer.
    pub fn from_codes(plain_len: u64, codes: Vec<u8>) -> Result<Self, MapError> {
        let want = Self::frame_count_for(plain_len);
        if codes.len() as u64 != want {
            return Err(MapError::FrameCount {
                got: codes.len() as u64,
                want,
            });
        }
        if codes.iter().all(|&c| c == 0) {
            return Ok(Self::identity(plain_len));
        }
        let mut first = Vec::with_capacity(codes.len() + 1);
        let mut at = 0u64;
        for (k, &code) in codes.iter().enumerate() {
            first.push(at);
            let raw = raw_chunks(frame_len(plain_len, k as u64));
            let n = u64::from(code);
            if n >= raw {
                return Err(MapError::NotSmaller(k as u64));
            }
            at += if n == 0 { raw } else { n };
        }
        first.push(at);
        Ok(Self {
            plain_len,
            packed: Some(Arc::new(Packed { codes, first })),
        })
    }

    /// The sealed offer's form: base64 of the frame codes, or `None` when all are raw.
    pub fn to_wire(&self) -> Option<String> {
        self.packed.as_ref().map(|p| STANDARD.encode(&p.codes))
    }

    /// The map an offer describes (`None`: every frame raw).
    pub fn from_wire(plain_len: u64, wire: Option<&str>) -> Result<Self, MapError> {
        match wire {
            None => Ok(Self::identity(plain_len)),
            Some(w) => {
                // Decode no more than the content can have frames for.
                let want = Self::frame_count_for(plain_len);
                if (w.len() as u64 / 4).saturating_mul(3) > want.saturating_add(3) {
                    return Err(MapError::FrameCount {
                        got: w.len() as u64 / 4 * 3,
                        want,
                    });
                }
                let codes = STANDARD.decode(w).map_err(|_| MapError::Encoding)?;
                Self::from_codes(plain_len, codes)
            }
        }
    }

    pub fn is_identity(&self) -> bool {
        self.packed.is_none()
    }

    pub fn plain_len(&self) -> u64 {
        self.plain_len
    }

    pub fn frame_count(&self) -> u64 {
        Self::frame_count_for(self.plain_len)
    }

    /// Number of chunks; empty content still has one (empty, flagged-last) chunk.
    pub fn chunk_count(&self) -> u64 {
        match &self.packed {
            None => self.plain_len.div_ceil(PLAIN_CHUNK).max(1),
            Some(p) => p.first.last().copied().unwrap_or(0).max(1),
        }
    }

    /// Plaintext bytes sealed in chunk `i` (a packed chunk is always full).
    pub fn chunk_len(&self, i: u64) -> u64 {
        match self.place(i) {
            Place::Raw { len, .. } => len,
            Place::Packed { .. } => PLAIN_CHUNK,
        }
    }

    /// Sealed bytes plus one tag per chunk. Saturates instead of wrapping, so a hostile size
    /// can never come out small.
    pub fn cipher_len(&self) -> u64 {
        let count = self.chunk_count();
        let last = self.chunk_len(count - 1);
        (count - 1)
            .saturating_mul(PLAIN_CHUNK)
            .saturating_add(last)
            .saturating_add(TAG_LEN.saturating_mul(count))
    }

    /// Plaintext bytes of frame `k`.
    pub fn frame_len(&self, k: u64) -> u64 {
        frame_len(self.plain_len, k)
    }

    /// Where frame `k`'s plaintext starts in the content.
    pub fn frame_start(&self, k: u64) -> u64 {
        k.saturating_mul(FRAME_PLAIN)
    }

    /// Where part `part` of packed frame `frame` waits on a receiver's disk until the frame
    /// is complete: in the frame's own place (its compressed bytes are fewer than its
    /// plaintext), one chunk's worth per part.
    pub fn part_at(&self, frame: u64, part: u64) -> u64 {
        self.frame_start(frame) + part * PLAIN_CHUNK
    }

    /// Part `part`'s bytes within a packed frame.
    pub fn part_range(part: u64) -> Range<usize> {
        let at = (part * PLAIN_CHUNK) as usize;
        at..at + PLAIN_CHUNK as usize
    }

    /// The chunks of frame `k`.
    pub fn frame_chunks(&self, k: u64) -> Range<u64> {
        match &self.packed {
            None => {
                let start = k * FRAME_CHUNKS;
                start..(start + raw_chunks(self.frame_len(k))).min(self.chunk_count())
            }
            Some(p) => p.first[k as usize]..p.first[k as usize + 1],
        }
    }

    /// Where chunk `i` comes from.
    pub fn place(&self, i: u64) -> Place {
        let raw_at = |frame: u64, part: u64| {
            let offset = frame * FRAME_PLAIN + part * PLAIN_CHUNK;
            Place::Raw {
                offset,
                len: PLAIN_CHUNK.min(self.plain_len.saturating_sub(offset)),
            }
        };
        match &self.packed {
            None => raw_at(i / FRAME_CHUNKS, i % FRAME_CHUNKS),
            Some(p) => {
                let frame = p.first.partition_point(|&f| f <= i).saturating_sub(1) as u64;
                let part = i - p.first[frame as usize];
                match p.codes.get(frame as usize).copied().unwrap_or(0) {
                    0 => raw_at(frame, part),
                    n => Place::Packed {
                        frame,
                        part,
                        parts: u64::from(n),
                    },
                }
            }
        }
    }

    /// The plaintext chunk `i` completes, for hashing in order: a raw chunk its own bytes,
    /// a packed frame's first chunk the whole frame, its other chunks nothing.
    pub fn plain_range(&self, i: u64) -> Range<u64> {
        match self.place(i) {
            Place::Raw { offset, len } => offset..offset + len,
            Place::Packed { frame, part: 0, .. } => {
                let start = frame * FRAME_PLAIN;
                start..start + self.frame_len(frame)
            }
            Place::Packed { frame, .. } => {
                let end = frame * FRAME_PLAIN + self.frame_len(frame);
                end..end
            }
        }
    }

    /// Plaintext bytes that `cipher_bytes` of ciphertext stand for, for progress display.
    pub fn plain_progress(&self, cipher_bytes: u64) -> u64 {
        let total = self.cipher_len().max(1);
        let scaled = u128::from(cipher_bytes.min(total)) * u128::from(self.plain_len) / u128::from(total);
        u64::try_from(scaled).unwrap_or(self.plain_len)
    }
}

/// Plaintext bytes of frame `k` of `plain_len` bytes.
fn frame_len(plain_len: u64, k: u64) -> u64 {
    plain_len
        .saturating_sub(k.saturating_mul(FRAME_PLAIN))
        .min(FRAME_PLAIN)
}

/// Chunks `len` bytes take raw (an empty frame, which only empty content has, takes one).
fn raw_chunks(len: u64) -> u64 {
    len.div_ceil(PLAIN_CHUNK).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::CIPHER_CHUNK;

    #[test]
    fn identity_matches_fixed_chunks() {
        let m = ChunkMap::identity(PLAIN_CHUNK * 20 + 5);
        assert_eq!(m.chunk_count(), 21);
        assert_eq!(m.frame_count(), 2);
        assert_eq!(m.chunk_len(20), 5);
        assert_eq!(m.cipher_len(), 20 * CIPHER_CHUNK + 5 + TAG_LEN);
        assert_eq!(
            m.place(17),
            Place::Raw {
                offset: 17 * PLAIN_CHUNK,
                len: PLAIN_CHUNK
            }
        );
        assert_eq!(m.frame_chunks(1), 16..21);
        assert_eq!(m.to_wire(), None);
        let empty = ChunkMap::identity(0);
        assert_eq!(
            (empty.chunk_count(), empty.cipher_len(), empty.chunk_len(0)),
            (1, TAG_LEN, 0)
        );
    }

    #[test]
    fn packed_frames_shift_the_chunks_after_them() {
        // Three frames: raw, packed into 3 chunks, and a short raw tail of 2 chunks.
        let len = 2 * FRAME_PLAIN + PLAIN_CHUNK + 7;
        let m = ChunkMap::from_codes(len, vec![0, 3, 0]).unwrap();
        assert_eq!(m.chunk_count(), 16 + 3 + 2);
        assert_eq!(
            m.place(15),
            Place::Raw {
                offset: 15 * PLAIN_CHUNK,
                len: PLAIN_CHUNK
            }
        );
        assert_eq!(
            m.place(16),
            Place::Packed {
                frame: 1,
                part: 0,
                parts: 3
            }
        );
        assert_eq!(
            m.place(18),
            Place::Packed {
                frame: 1,
                part: 2,
                parts: 3
            }
        );
        assert_eq!(
            m.place(20),
            Place::Raw {
                offset: 2 * FRAME_PLAIN + PLAIN_CHUNK,
                len: 7
            }
        );
        assert_eq!(m.plain_range(16), FRAME_PLAIN..2 * FRAME_PLAIN);
        assert!(m.plain_range(17).is_empty());
        assert_eq!(m.frame_chunks(1), 16..19);
        assert_eq!(m.cipher_len(), 20 * CIPHER_CHUNK + 7 + TAG_LEN);
        let back = ChunkMap::from_wire(len, m.to_wire().as_deref()).unwrap();
        assert_eq!(back, m);
        // The ranges every chunk completes cover the plaintext once, in order.
        let mut at = 0;
        for i in 0..m.chunk_count() {
            let r = m.plain_range(i);
            assert_eq!(r.start, at);
            at = r.end;
        }
        assert_eq!(at, len);
    }

    #[test]
    fn hostile_maps_are_refused() {
        let len = FRAME_PLAIN * 2;
        assert_eq!(
            ChunkMap::from_codes(len, vec![3]),
            Err(MapError::FrameCount { got: 1, want: 2 })
        );
        assert_eq!(
            ChunkMap::from_codes(len, vec![0, 16]),
            Err(MapError::NotSmaller(1))
        );
        // A short last frame of 2 raw chunks cannot be "packed" into 2.
        assert_eq!(
            ChunkMap::from_codes(FRAME_PLAIN + PLAIN_CHUNK + 1, vec![1, 2]),
            Err(MapError::NotSmaller(1))
        );
        assert_eq!(ChunkMap::from_wire(len, Some("!!")), Err(MapError::Encoding));
        let huge = "A".repeat(1 << 20);
        assert!(matches!(
            ChunkMap::from_wire(len, Some(&huge)),
            Err(MapError::FrameCount { .. })
        ));
        assert!(ChunkMap::from_codes(len, vec![0, 0]).unwrap().is_identity());
    }
}
