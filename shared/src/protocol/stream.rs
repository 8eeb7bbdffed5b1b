//! The wire of a stream (`convey send -`): the receiver's first bytes on the connection, the
//! frame header of each sealed chunk, and the record header inside the sealed bytes. Here,
//! without I/O, so all three can be fuzzed.
//!
//! The opened chunks form one byte stream of records: a [`RECORD_HEADER_LEN`]-byte header
//! (kind, plaintext length, stored length; little-endian u32s) and the stored bytes, raw or
//! one zstd frame. A record holds at most [`MAX_RECORD`] bytes of plaintext, so a receiver
//! never expands a record past that, whatever it claims.
//!
//! The receiver dials an address the sender named, so the bytes it writes first must not
//! be the sender's choice (a sender could otherwise aim them at a local Redis or SMTP
//! server). They are a fixed protocol line followed by a value derived from the session
//! key: the sender can predict them, but not choose them.

use crate::crypto::SessionKey;

/// The fixed start of a stream connection.
pub const HELLO_PREFIX: &[u8] = b"convey-stream-v3\n";
/// Bytes of the key-derived proof after the prefix.
pub const PROOF_LEN: usize = 32;
/// Total length of the receiver's first bytes.
pub const HELLO_LEN: usize = HELLO_PREFIX.len() + PROOF_LEN;
/// Bytes of a frame header: flags, then the sealed chunk's length (big-endian u16).
pub const HEADER_LEN: usize = 3;
/// Flag bit: this is the last chunk.
pub const LAST: u8 = 1;

/// What the receiver writes first on a stream connection, and the sender expects.
pub fn hello(key: &SessionKey) -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[..HELLO_PREFIX.len()].copy_from_slice(HELLO_PREFIX);
    out[HELLO_PREFIX.len()..].copy_from_slice(key.derive("stream-hello").as_slice());
    out
}

/// One frame header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub last: bool,
    /// Bytes of the sealed chunk that follows.
    pub len: usize,
}

/// A header that must not be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the sender's stream chunk is too large")]
    TooLarge,
    #[error("the sender's stream frame has unknown flags")]
    Flags,
    #[error("the sender's stream record claims more than a record may hold")]
    Record,
}

/// Parse a frame header; `max` is the largest sealed chunk accepted.
pub fn parse_header(bytes: [u8; HEADER_LEN], max: usize) -> Result<Header, HeaderError> {
    if bytes[0] & !LAST != 0 {
        return Err(HeaderError::Flags);
    }
    let len = usize::from(u16::from_be_bytes([bytes[1], bytes[2]]));
    if len > max {
        return Err(HeaderError::TooLarge);
    }
    Ok(Header {
        last: bytes[0] & LAST != 0,
        len,
    })
}

/// The header for a sealed chunk of `len` bytes (at most `u16::MAX`).
pub fn header(last: bool, len: usize) -> Option<[u8; HEADER_LEN]> {
    let len = u16::try_from(len).ok()?;
    let [hi, lo] = len.to_be_bytes();
    Some([if last { LAST } else { 0 }, hi, lo])
}

/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 9;
/// Most plaintext bytes in one record.
pub const MAX_RECORD: usize = 256 * 1024;
/// Most stored bytes in one record (zstd's bound for the largest record).
pub const MAX_STORED: usize = MAX_RECORD + MAX_RECORD / 128 + 1024;

/// One record header, parsed and bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The stored bytes are one zstd frame (else the plaintext itself).
    pub compressed: bool,
    pub plain_len: usize,
    pub stored_len: usize,
}

impl Record {
    pub fn to_bytes(self) -> [u8; RECORD_HEADER_LEN] {
        let mut out = [0u8; RECORD_HEADER_LEN];
        out[0] = u8::from(self.compressed);
        out[1..5].copy_from_slice(&(self.plain_len as u32).to_le_bytes());
        out[5..9].copy_from_slice(&(self.stored_len as u32).to_le_bytes());
        out
    }

    /// Parse a record header; anything out of bounds, or a raw record whose lengths differ.
    pub fn parse(bytes: [u8; RECORD_HEADER_LEN]) -> Result<Self, HeaderError> {
        let word =
            |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let r = Self {
            compressed: match bytes[0] {
                0 => false,
                1 => true,
                _ => return Err(HeaderError::Flags),
            },
            plain_len: word(1),
            stored_len: word(5),
        };
        let fits = r.plain_len <= MAX_RECORD && r.stored_len <= MAX_STORED;
        if !fits || (!r.compressed && r.plain_len != r.stored_len) {
            return Err(HeaderError::Record);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_is_fixed_then_key_derived() {
        let a = SessionKey::from_slice(&[1; 32]).unwrap();
        let b = SessionKey::from_slice(&[2; 32]).unwrap();
        assert!(hello(&a).starts_with(HELLO_PREFIX));
        assert_ne!(hello(&a), hello(&b));
        assert_eq!(hello(&a), hello(&a));
    }

    #[test]
    fn headers_roundtrip_and_bound() {
        let h = header(true, 300).unwrap();
        assert_eq!(parse_header(h, 16_400).unwrap(), Header { last: true, len: 300 });
        assert_eq!(
            parse_header(header(false, 20_000).unwrap(), 16_400),
            Err(HeaderError::TooLarge)
        );
        assert_eq!(parse_header([0x80, 0, 1], 16_400), Err(HeaderError::Flags));
        assert!(header(false, 70_000).is_none());
    }

    #[test]
    fn records_roundtrip_and_bound() {
        let r = Record {
            compressed: true,
            plain_len: 1000,
            stored_len: 90,
        };
        assert_eq!(Record::parse(r.to_bytes()), Ok(r));
        let raw = Record {
            compressed: false,
            plain_len: 5,
            stored_len: 5,
        };
        assert_eq!(Record::parse(raw.to_bytes()), Ok(raw));
        let lying = Record {
            compressed: false,
            plain_len: 5,
            stored_len: 6,
        };
        assert_eq!(Record::parse(lying.to_bytes()), Err(HeaderError::Record));
        let bomb = Record {
            compressed: true,
            plain_len: MAX_RECORD + 1,
            stored_len: 10,
        };
        assert_eq!(Record::parse(bomb.to_bytes()), Err(HeaderError::Record));
        let mut odd = r.to_bytes();
        odd[0] = 7;
        assert_eq!(Record::parse(odd), Err(HeaderError::Flags));
    }
}
