//! The wire of a stream (`convey send -`): the receiver's first bytes on the connection, and
//! the frame header of each sealed chunk. Here, without I/O, so both can be fuzzed.
//!
//! The receiver dials an address the sender named, so the bytes it writes first must not
//! be the sender's choice (a sender could otherwise aim them at a local Redis or SMTP
//! server). They are a fixed protocol line followed by a value derived from the session
//! key: the sender can predict them, but not choose them.

use crate::crypto::SessionKey;

/// The fixed start of a stream connection.
pub const HELLO_PREFIX: &[u8] = b"convey-stream-v2\n";
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
}
