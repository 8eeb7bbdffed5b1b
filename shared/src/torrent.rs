//! The ciphertext torrent: its metainfo (BEP 3 single-file, BEP 27 private), how to
//! bencode it, and the receiver's check of a torrent from the network against what the
//! manifest says the ciphertext must be. No I/O, so it can be fuzzed on its own.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha1::{Digest, Sha1};

use crate::content::CIPHER_CHUNK;

/// The opaque name the torrent carries instead of the real file name.
pub const TORRENT_NAME: &str = "convey-payload";
/// Largest piece length accepted from a sender.
pub const MAX_PIECE_LENGTH: u64 = 64 * 1024 * 1024;

/// The torrent's `info` dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub length: u64,
    pub name: String,
    #[serde(rename = "piece length")]
    pub piece_length: u64,
    pub pieces: ByteBuf,
    pub private: u8,
}

#[derive(Debug, Serialize, Deserialize)]
struct Metainfo {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    announce: Option<String>,
    info: Info,
}

/// Why a torrent from the peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TorrentError {
    #[error("the sender's torrent is malformed: {0}")]
    Malformed(String),
    #[error("the offer's torrent does not match its manifest")]
    Mismatch,
}

impl Info {
    /// The SHA-1 info-hash.
    pub fn info_hash(&self) -> [u8; 20] {
        let encoded = serde_bencode::to_bytes(self).expect("info dict always bencodes");
        Sha1::digest(&encoded).into()
    }

    /// The bencoded .torrent, optionally with an `announce` URL (for third-party clients).
    pub fn torrent_bytes(&self, announce: Option<&str>) -> Vec<u8> {
        let m = Metainfo {
            announce: announce.map(str::to_owned),
            info: self.clone(),
        };
        serde_bencode::to_bytes(&m).expect("torrent metainfo always bencodes")
    }

    /// Does this describe a ciphertext of `cipher_len` bytes the way convey builds it:
    /// private, whole chunks per piece, a bounded piece length, one hash per piece?
    pub fn check(&self, cipher_len: u64) -> Result<(), TorrentError> {
        let pieces = cipher_len.div_ceil(self.piece_length.max(1));
        let ok = self.length == cipher_len
            && self.piece_length != 0
            && self.piece_length.is_multiple_of(CIPHER_CHUNK)
            && self.piece_length <= MAX_PIECE_LENGTH
            && Some(self.pieces.len() as u64) == pieces.checked_mul(20)
            && self.private == 1;
        if ok { Ok(()) } else { Err(TorrentError::Mismatch) }
    }
}

/// Parse a .torrent received from the peer: its info and info-hash.
pub fn parse(bytes: &[u8]) -> Result<(Info, [u8; 20]), TorrentError> {
    let m: Metainfo = serde_bencode::from_bytes(bytes).map_err(|e| TorrentError::Malformed(e.to_string()))?;
    let hash = m.info.info_hash();
    Ok((m.info, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(length: u64, piece_length: u64) -> Info {
        Info {
            length,
            name: TORRENT_NAME.into(),
            piece_length,
            pieces: ByteBuf::from(vec![0u8; (length.div_ceil(piece_length) * 20) as usize]),
            private: 1,
        }
    }

    #[test]
    fn roundtrips_and_checks() {
        let i = info(3 * CIPHER_CHUNK, CIPHER_CHUNK * 2);
        let (back, hash) = parse(&i.torrent_bytes(Some("http://x/announce"))).unwrap();
        assert_eq!(back, i);
        assert_eq!(hash, i.info_hash());
        assert!(i.check(3 * CIPHER_CHUNK).is_ok());
        assert_eq!(i.check(3 * CIPHER_CHUNK + 1), Err(TorrentError::Mismatch));
        let mut public = i.clone();
        public.private = 0;
        assert!(public.check(3 * CIPHER_CHUNK).is_err());
        let mut odd = i;
        odd.piece_length += 1;
        assert!(odd.check(3 * CIPHER_CHUNK).is_err());
        assert!(matches!(parse(b"garbage"), Err(TorrentError::Malformed(_))));
    }
}
