//! The peer route: a second way for a session's sealed messages to travel, over a
//! connection between the peers themselves (direct TCP or a WebRTC data channel, through the
//! receiver's path selector), so that what the two sides say to each other (the sender's
//! digests, the receiver's verdict) still gets through when the relay is gone. Here, without
//! I/O, so it can be fuzzed.
//!
//! The receiver opens with a fixed line and a value derived from the session key (as a push
//! does, so the first bytes it writes to an address the sender named are never the sender's
//! choice). Then both sides write frames: a big-endian u64 message number, a big-endian u32
//! length and that many bytes. The first frame of each side is its resume hello (how many
//! sealed messages it has received, under a MAC), the rest are sealed messages numbered as
//! the channel numbers them, so one that arrived over the relay too is dropped, and one out
//! of place fails to open.

use crate::{crypto::SessionKey, protocol::MAX_MESSAGE_BYTES};

/// The fixed start of a peer route.
pub const HELLO_PREFIX: &[u8] = b"convey-ctrl-v1\n";
/// Total length of the receiver's hello (the same as a push's, so one read tells them apart).
pub const HELLO_LEN: usize = HELLO_PREFIX.len() + 32;
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 12;
/// The number a side's hello frame carries (no sealed message has it).
pub const HELLO_NUMBER: u64 = u64::MAX;
/// Longest frame body: a sealed message the relay would carry, with room for its tag.
pub const MAX_BODY: usize = MAX_MESSAGE_BYTES + 64;

/// What the receiver writes first on a peer route, and the sender expects.
pub fn hello(key: &SessionKey) -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[..HELLO_PREFIX.len()].copy_from_slice(HELLO_PREFIX);
    out[HELLO_PREFIX.len()..].copy_from_slice(key.derive("route-hello").as_slice());
    out
}

/// A frame's header.
pub fn header(number: u64, len: usize) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..8].copy_from_slice(&number.to_be_bytes());
    out[8..].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    out
}

/// The number and body length a header announces, if the length is one a peer may send.
pub fn parse_header(h: &[u8; HEADER_LEN]) -> Option<(u64, usize)> {
    let mut number = [0u8; 8];
    number.copy_from_slice(&h[..8]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&h[8..]);
    let len = usize::try_from(u32::from_be_bytes(len)).ok()?;
    (len <= MAX_BODY).then_some((u64::from_be_bytes(number), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_oversized_bodies_are_refused() {
        assert_eq!(parse_header(&header(7, 300)), Some((7, 300)));
        assert_eq!(parse_header(&header(HELLO_NUMBER, 0)), Some((HELLO_NUMBER, 0)));
        assert_eq!(parse_header(&header(1, MAX_BODY + 1)), None);
        assert_eq!(parse_header(&[0xff; HEADER_LEN]), None);
    }

    #[test]
    fn the_route_hello_is_not_the_push_hello() {
        let key = SessionKey::from_slice(&[3; 32]).expect("32 bytes");
        assert_eq!(HELLO_LEN, super::super::push::HELLO_LEN);
        assert_ne!(hello(&key), super::super::push::hello(&key));
        assert_ne!(
            hello(&key),
            hello(&SessionKey::from_slice(&[4; 32]).expect("32 bytes"))
        );
    }
}
