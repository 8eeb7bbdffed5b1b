//! The content cipher: ChaCha20-Poly1305 over fixed-size chunks.
//!
//! Chunk `i` is sealed with nonce `i || last-flag`, so the ciphertext is a deterministic
//! function of (key, plaintext), chunks can be sealed and opened independently and in any
//! order (BitTorrent delivers blocks out of order), and a stream cut at a chunk boundary
//! fails to authenticate because the last chunk carries the flag. A ciphertext chunk is
//! exactly one BitTorrent block (16 KiB), so every block a peer writes is a whole chunk.
//! Which plaintext each chunk seals is the [`ChunkMap`]'s business (raw or compressed frames).

use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit, Tag};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub use crate::chunk_map::ChunkMap;

/// Bytes of one ciphertext chunk: one BitTorrent block.
pub const CIPHER_CHUNK: u64 = 16 * 1024;
/// Poly1305 tag bytes per chunk.
pub const TAG_LEN: u64 = 16;
/// Bytes of plaintext in every chunk but the last.
pub const PLAIN_CHUNK: u64 = CIPHER_CHUNK - TAG_LEN;

/// The key that encrypts the content. Random per offer; travels only inside the sealed channel.
#[derive(Clone)]
pub struct ContentKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ContentKey(<redacted>)")
    }
}

impl ContentKey {
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut_slice());
        Self(k)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Serialize for ContentKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0.as_slice()))
    }
}

impl<'de> Deserialize<'de> for ContentKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Zeroizing::new(String::deserialize(d)?);
        let mut k = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut k).map_err(serde::de::Error::custom)?;
        Ok(Self::from_bytes(k))
    }
}

/// A chunk failed to authenticate: corrupted, forged, or from another key or position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("chunk {0} failed authentication")]
pub struct ChunkError(pub u64);

/// Layout and cipher for one plaintext of known length, laid out by a [`ChunkMap`].
#[derive(Clone)]
pub struct ContentCipher {
    aead: ChaCha20Poly1305,
    map: ChunkMap,
}

impl std::fmt::Debug for ContentCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentCipher")
            .field("plain_len", &self.map.plain_len())
            .finish_non_exhaustive()
    }
}

impl ContentCipher {
    pub fn new(key: &ContentKey, map: ChunkMap) -> Self {
        Self {
            aead: ChaCha20Poly1305::new(&(*key.0).into()),
            map,
        }
    }

    /// Every frame raw (no compression): chunk `i` holds plaintext from `i * PLAIN_CHUNK`.
    pub fn uncompressed(key: &ContentKey, plain_len: u64) -> Self {
        Self::new(key, ChunkMap::identity(plain_len))
    }

    pub fn map(&self) -> &ChunkMap {
        &self.map
    }

    pub fn plain_len(&self) -> u64 {
        self.map.plain_len()
    }

    /// Number of chunks; an empty stream still has one (empty, flagged-last) chunk.
    pub fn chunk_count(&self) -> u64 {
        self.map.chunk_count()
    }

    /// Sealed bytes plus one tag per chunk (saturating).
    pub fn cipher_len(&self) -> u64 {
        self.map.cipher_len()
    }

    /// Plaintext bytes that `cipher_bytes` of ciphertext stand for, for progress display.
    pub fn plain_progress(&self, cipher_bytes: u64) -> u64 {
        self.map.plain_progress(cipher_bytes)
    }

    /// Bytes sealed in chunk `i` (plaintext, or a packed frame's share).
    pub fn plain_chunk_len(&self, i: u64) -> u64 {
        self.map.chunk_len(i)
    }

    /// The whole ciphertext of a small in-memory plaintext (`data.len()` must equal
    /// `plain_len`). For reference computations; transfers stream chunk by chunk instead.
    /// Only for an uncompressed map.
    pub fn seal_in_memory(&self, data: &[u8]) -> Vec<u8> {
        assert!(self.map.is_identity(), "seal_in_memory needs an uncompressed map");
        assert_eq!(data.len() as u64, self.plain_len(), "seal_in_memory length");
        let mut out = Vec::with_capacity(usize::try_from(self.cipher_len()).unwrap_or(0));
        for i in 0..self.chunk_count() {
            let start = usize::try_from(i * PLAIN_CHUNK).expect("in-memory data");
            let len = usize::try_from(self.plain_chunk_len(i)).expect("in-memory data");
            let at = out.len();
            out.extend_from_slice(&data[start..start + len]);
            out.resize(at + len + TAG_LEN as usize, 0);
            self.seal_chunk(i, &mut out[at..]);
        }
        out
    }

    fn nonce(&self, i: u64) -> chacha20poly1305::Nonce {
        chunk_nonce(i, i + 1 == self.chunk_count())
    }

    /// Seal chunk `i` in place: `buf` holds the chunk's plaintext followed by room for the
    /// tag (`plain_chunk_len(i) + TAG_LEN` bytes) and ends up holding the ciphertext chunk.
    pub fn seal_chunk(&self, i: u64, buf: &mut [u8]) {
        let n = usize::try_from(self.plain_chunk_len(i)).expect("chunk fits in memory");
        assert_eq!(buf.len(), n + TAG_LEN as usize, "seal_chunk buffer size");
        self.seal_chunk_as(i, i + 1 == self.chunk_count(), buf);
    }

    /// Seal `buf` (data, then tag room) as chunk `i`, last or not, before the map is known
    /// (the sender's preparation builds the map as it goes).
    pub fn seal_chunk_as(&self, i: u64, last: bool, buf: &mut [u8]) {
        let (data, tag) = buf.split_at_mut(buf.len().saturating_sub(TAG_LEN as usize));
        let t = self
            .aead
            .encrypt_inout_detached(&chunk_nonce(i, last), &[], data.into())
            .expect("ChaCha20-Poly1305 encrypts any chunk of this size");
        tag.copy_from_slice(&t);
    }

    /// Open `buf` (a sealed chunk) in place as chunk `i`, last or not, before the map is
    /// known (a push carries frames with their place). Returns the opened length.
    pub fn open_chunk_as(&self, i: u64, last: bool, buf: &mut [u8]) -> Result<usize, ChunkError> {
        let n = buf.len().checked_sub(TAG_LEN as usize).ok_or(ChunkError(i))?;
        let (data, tag) = buf.split_at_mut(n);
        let tag = Tag::try_from(&*tag).map_err(|_| ChunkError(i))?;
        self.aead
            .decrypt_inout_detached(&chunk_nonce(i, last), &[], data.into(), &tag)
            .map_err(|_| ChunkError(i))?;
        Ok(n)
    }

    /// Open ciphertext chunk `i` in place; on success the first `plain_chunk_len(i)` bytes
    /// of `buf` hold the plaintext.
    pub fn open_chunk(&self, i: u64, buf: &mut [u8]) -> Result<(), ChunkError> {
        let n = usize::try_from(self.plain_chunk_len(i)).map_err(|_| ChunkError(i))?;
        if i >= self.chunk_count() || buf.len() != n + TAG_LEN as usize {
            return Err(ChunkError(i));
        }
        let (data, tag) = buf.split_at_mut(n);
        let tag = Tag::try_from(&*tag).map_err(|_| ChunkError(i))?;
        self.aead
            .decrypt_inout_detached(&self.nonce(i), &[], data.into(), &tag)
            .map_err(|_| ChunkError(i))
    }
}

/// Nonce of chunk `i`: its index, and whether it is the last chunk of the stream.
fn chunk_nonce(i: u64, last: bool) -> chacha20poly1305::Nonce {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&i.to_be_bytes());
    n[11] = u8::from(last);
    n.into()
}

/// The same chunk cipher for a stream whose length is unknown in advance (a pipe): the
/// sender marks the last chunk when it reaches the end, and the nonce authenticates the mark.
#[derive(Clone)]
pub struct StreamCipher {
    aead: ChaCha20Poly1305,
}

impl std::fmt::Debug for StreamCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamCipher")
    }
}

impl StreamCipher {
    pub fn new(key: &ContentKey) -> Self {
        Self {
            aead: ChaCha20Poly1305::new(&(*key.0).into()),
        }
    }

    /// Seal `plain` (at most [`PLAIN_CHUNK`] bytes) as chunk `i`; returns plaintext + tag.
    pub fn seal(&self, i: u64, last: bool, plain: &[u8]) -> Vec<u8> {
        assert!(plain.len() as u64 <= PLAIN_CHUNK, "stream chunk too large");
        let mut buf = Vec::with_capacity(plain.len() + TAG_LEN as usize);
        buf.extend_from_slice(plain);
        let tag = self
            .aead
            .encrypt_inout_detached(&chunk_nonce(i, last), &[], buf.as_mut_slice().into())
            .expect("ChaCha20-Poly1305 encrypts any chunk of this size");
        buf.extend_from_slice(&tag);
        buf
    }

    /// Open chunk `i` in place; returns the plaintext length.
    pub fn open(&self, i: u64, last: bool, buf: &mut [u8]) -> Result<usize, ChunkError> {
        if buf.len() < TAG_LEN as usize || buf.len() as u64 > CIPHER_CHUNK {
            return Err(ChunkError(i));
        }
        let (data, tag) = buf.split_at_mut(buf.len() - TAG_LEN as usize);
        let tag = Tag::try_from(&*tag).map_err(|_| ChunkError(i))?;
        self.aead
            .decrypt_inout_detached(&chunk_nonce(i, last), &[], data.into(), &tag)
            .map_err(|_| ChunkError(i))?;
        Ok(data.len())
    }
}

/// Torrent piece length for a ciphertext of `cipher_len` bytes: a power of two between
/// 256 KiB and 16 MiB aiming at about 2,000 pieces, always a whole number of chunks.
pub fn piece_length_for(cipher_len: u64) -> u64 {
    const MIN: u64 = 256 * 1024;
    const MAX: u64 = 16 * 1024 * 1024;
    (cipher_len / 2048).next_power_of_two().clamp(MIN, MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let k = ContentKey::generate();
        let empty = ContentCipher::uncompressed(&k, 0);
        assert_eq!((empty.chunk_count(), empty.cipher_len()), (1, 16));
        let one = ContentCipher::uncompressed(&k, PLAIN_CHUNK);
        assert_eq!((one.chunk_count(), one.cipher_len()), (1, CIPHER_CHUNK));
        let two = ContentCipher::uncompressed(&k, PLAIN_CHUNK + 1);
        assert_eq!(
            (two.chunk_count(), two.cipher_len(), two.plain_chunk_len(1)),
            (2, CIPHER_CHUNK + 17, 1)
        );
        assert_eq!(piece_length_for(1 << 30) % CIPHER_CHUNK, 0);
        assert_eq!(piece_length_for(10), 256 * 1024);
        assert_eq!(
            (empty.plain_progress(16), two.plain_progress(two.cipher_len())),
            (0, PLAIN_CHUNK + 1)
        );
        assert_eq!(two.plain_progress(u64::MAX), PLAIN_CHUNK + 1);
    }

    #[test]
    fn deterministic_roundtrip_and_tamper_detection() {
        let k = ContentKey::from_bytes([7; 32]);
        let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let c = ContentCipher::uncompressed(&k, data.len() as u64);
        let ct = c.seal_in_memory(&data);
        assert_eq!(ct, c.seal_in_memory(&data), "same key and data, same ciphertext");
        assert_eq!(ct.len() as u64, c.cipher_len());
        let mut plain = Vec::new();
        for (i, chunk) in ct.chunks(CIPHER_CHUNK as usize).enumerate() {
            let mut b = chunk.to_vec();
            c.open_chunk(i as u64, &mut b).unwrap();
            plain.extend_from_slice(&b[..c.plain_chunk_len(i as u64) as usize]);
        }
        assert_eq!(plain, data);

        let mut bad = ct[..CIPHER_CHUNK as usize].to_vec();
        bad[5] ^= 1;
        assert_eq!(c.open_chunk(0, &mut bad), Err(ChunkError(0)));
        let mut moved = ct[..CIPHER_CHUNK as usize].to_vec();
        assert!(
            c.open_chunk(1, &mut moved).is_err(),
            "a chunk only opens at its own index"
        );
    }

    #[test]
    fn stream_chunks_authenticate_their_index_and_end_mark() {
        let s = StreamCipher::new(&ContentKey::from_bytes([3; 32]));
        let mut c = s.seal(4, true, b"tail");
        let mut wrong_mark = c.clone();
        assert!(
            s.open(4, false, &mut wrong_mark).is_err(),
            "an end mark cannot be removed"
        );
        let mut wrong_index = c.clone();
        assert!(s.open(5, true, &mut wrong_index).is_err());
        assert_eq!(s.open(4, true, &mut c), Ok(4));
        assert_eq!(&c[..4], b"tail");
    }

    #[test]
    fn truncation_is_detected() {
        let k = ContentKey::from_bytes([1; 32]);
        let data = vec![9u8; (PLAIN_CHUNK * 3) as usize];
        let full = ContentCipher::uncompressed(&k, data.len() as u64);
        let ct = full.seal_in_memory(&data);
        // An attacker presents the first two chunks as a complete two-chunk stream.
        let short = ContentCipher::uncompressed(&k, PLAIN_CHUNK * 2);
        let mut second = ct[CIPHER_CHUNK as usize..2 * CIPHER_CHUNK as usize].to_vec();
        assert!(short.open_chunk(1, &mut second).is_err());
    }
}
