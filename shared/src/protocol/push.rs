//! The wire of a push (files sent while the sender still reads them): the receiver's first
//! bytes on the connection and the frames the sender writes. Here, without I/O, so both can
//! be fuzzed.
//!
//! The receiver opens with a fixed line and a value derived from the session key (so the
//! bytes it writes to an address the sender named are never the sender's choice, as for a
//! stream), then the frames it already holds: a little-endian u32 length and a bitfield,
//! frame `k` in bit `0x80 >> (k % 8)` of byte `k / 8`; a receiver that can only take frames
//! in order (the browser page, which streams them into a download) sets [`IN_ORDER`] in the
//! length. The sender then writes items, each a
//! [`ITEM_HEADER_LEN`]-byte header: kind, frame index and first chunk index (little-endian
//! u64s), the frame's code in the chunk map, and the length of the sealed chunks that
//! follow. A frame's sealed chunks are the content cipher's, numbered from that first chunk,
//! so the receiver keeps what it got whatever carries the rest later.

use crate::{
    chunk_map::{FRAME_CHUNKS, FRAME_PLAIN},
    content::{CIPHER_CHUNK, PLAIN_CHUNK, TAG_LEN},
    crypto::SessionKey,
};

/// The fixed start of a push connection.
pub const HELLO_PREFIX: &[u8] = b"convey-push-v1\n";
/// Bytes of the key-derived proof after the prefix.
pub const PROOF_LEN: usize = 32;
/// Total length of the receiver's hello.
pub const HELLO_LEN: usize = HELLO_PREFIX.len() + PROOF_LEN;
/// Set in the have-bitfield's length by a receiver that takes frames only in order: the
/// sender then sends no frame before every frame ahead of it (it waits for its pass to end
/// rather than hand over the frames the pass seals after a later start).
pub const IN_ORDER: u32 = 1 << 31;
/// Set in the have-bitfield's length by a receiver that acknowledges as it goes (only to a
/// sender that offered [`crate::protocol::peer::ABILITY_PUSH_ACKS`]): after its opening it
/// writes, whenever it has used more frames, [`ACK_LEN`] bytes, the little-endian count of
/// frames it holds, and the sender keeps at most [`WINDOW`] frames beyond that count in
/// flight. A receiver that cannot apply back-pressure on its connection (the browser page:
/// a WebSocket or a data channel takes every message) so holds a bounded amount.
pub const ACKED: u32 = 1 << 30;
/// Frames a sender keeps in flight beyond an acknowledging receiver's count.
pub const WINDOW: u64 = 24;
/// Bytes of one acknowledgement.
pub const ACK_LEN: usize = 8;

/// The little-endian u32 before the have-bitfield in a push opening: the bitfield's length
/// and how the receiver takes frames. One reading and one writing of it for every receiver
/// and sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HaveField {
    /// Bytes of bitfield that follow (0: the receiver holds nothing).
    pub len: u32,
    /// Frames only in order ([`IN_ORDER`]).
    pub in_order: bool,
    /// With acknowledgements ([`ACKED`]).
    pub acked: bool,
}

impl HaveField {
    pub fn parse(field: u32) -> Self {
        Self {
            len: field & !(IN_ORDER | ACKED),
            in_order: field & IN_ORDER != 0,
            acked: field & ACKED != 0,
        }
    }

    pub fn to_le_bytes(self) -> [u8; 4] {
        let flags = if self.in_order { IN_ORDER } else { 0 } | if self.acked { ACKED } else { 0 };
        (self.len | flags).to_le_bytes()
    }
}

/// An acknowledgement: the receiver holds `frames` frames.
pub fn ack(frames: u64) -> [u8; ACK_LEN] {
    frames.to_le_bytes()
}

/// Bytes of an item header.
pub const ITEM_HEADER_LEN: usize = 22;
/// Most sealed bytes one frame item carries (a raw frame of 16 full chunks).
pub const MAX_FRAME_SEALED: usize = (FRAME_CHUNKS * CIPHER_CHUNK) as usize;

const KIND_FRAME: u8 = 0;
const KIND_KEEP_ALIVE: u8 = 1;
const KIND_END: u8 = 2;

/// What the receiver writes first on a push connection, and the sender expects.
pub fn hello(key: &SessionKey) -> [u8; HELLO_LEN] {
    let mut out = [0u8; HELLO_LEN];
    out[..HELLO_PREFIX.len()].copy_from_slice(HELLO_PREFIX);
    out[HELLO_PREFIX.len()..].copy_from_slice(key.derive("push-hello").as_slice());
    out
}

/// Bytes of the have-bitfield for content of `frames` frames.
pub fn have_len(frames: u64) -> usize {
    usize::try_from(frames.div_ceil(8)).unwrap_or(usize::MAX)
}

/// One item of the sender's push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// Frame `frame`, sealed as chunks from `first_chunk`, `code` as in the chunk map (0 raw,
    /// else packed into that many chunks); `sealed` bytes follow.
    Frame {
        frame: u64,
        first_chunk: u64,
        code: u8,
        sealed: usize,
    },
    /// Nothing to send just now (the sender is reading frames the receiver already has).
    KeepAlive,
    /// The sender has sent every frame the receiver lacked.
    End,
}

impl Item {
    pub fn to_bytes(self) -> [u8; ITEM_HEADER_LEN] {
        let mut out = [0u8; ITEM_HEADER_LEN];
        match self {
            Self::Frame {
                frame,
                first_chunk,
                code,
                sealed,
            } => {
                out[0] = KIND_FRAME;
                out[1..9].copy_from_slice(&frame.to_le_bytes());
                out[9..17].copy_from_slice(&first_chunk.to_le_bytes());
                out[17] = code;
                out[18..22].copy_from_slice(&u32::try_from(sealed).unwrap_or(u32::MAX).to_le_bytes());
            }
            Self::KeepAlive => out[0] = KIND_KEEP_ALIVE,
            Self::End => out[0] = KIND_END,
        }
        out
    }

    /// Parse an item header for content of `plain_len` bytes: a frame beyond the content, a
    /// code that does not save a chunk, a first chunk no layout could give, or a length
    /// other than the frame's sealed length is refused before anything is read.
    pub fn parse(bytes: [u8; ITEM_HEADER_LEN], plain_len: u64) -> Result<Self, PushError> {
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        match bytes[0] {
            KIND_KEEP_ALIVE if bytes[1..].iter().all(|b| *b == 0) => return Ok(Self::KeepAlive),
            KIND_END if bytes[1..].iter().all(|b| *b == 0) => return Ok(Self::End),
            KIND_FRAME => {}
            _ => return Err(PushError::Kind),
        }
        let (frame, first_chunk, code) = (u64_at(1), u64_at(9), bytes[17]);
        let sealed = u32::from_le_bytes([bytes[18], bytes[19], bytes[20], bytes[21]]) as usize;
        let frames = plain_len.div_ceil(FRAME_PLAIN);
        if frame >= frames {
            return Err(PushError::Frame);
        }
        // Every frame before this one takes between 1 and 16 chunks.
        if first_chunk < frame || first_chunk > frame.saturating_mul(FRAME_CHUNKS) {
            return Err(PushError::Frame);
        }
        if sealed != frame_sealed_len(plain_len, frame, code).ok_or(PushError::Code)? {
            return Err(PushError::Length);
        }
        Ok(Self::Frame {
            frame,
            first_chunk,
            code,
            sealed,
        })
    }
}

/// Plaintext bytes of frame `k` of content of `plain_len` bytes.
pub fn frame_plain_len(plain_len: u64, k: u64) -> u64 {
    plain_len
        .saturating_sub(k.saturating_mul(FRAME_PLAIN))
        .min(FRAME_PLAIN)
}

/// Sealed bytes of frame `k` with `code`, or `None` when the code cannot be (a packed frame
/// must take fewer chunks than the raw one).
pub fn frame_sealed_len(plain_len: u64, k: u64, code: u8) -> Option<usize> {
    let plain = frame_plain_len(plain_len, k);
    let raw_chunks = plain.div_ceil(PLAIN_CHUNK).max(1);
    let len = match u64::from(code) {
        0 => plain + raw_chunks * TAG_LEN,
        c if c < raw_chunks => c * CIPHER_CHUNK,
        _ => return None,
    };
    usize::try_from(len).ok()
}

/// An item header that must not be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error("the sender's push item is of an unknown kind")]
    Kind,
    #[error("the sender's push names a frame or chunk outside the content")]
    Frame,
    #[error("the sender's push gives a frame a code that does not save a chunk")]
    Code,
    #[error("the sender's push gives a frame a length other than its sealed length")]
    Length,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_is_fixed_then_key_derived_and_not_the_streams() {
        let a = SessionKey::from_slice(&[1; 32]).unwrap();
        let b = SessionKey::from_slice(&[2; 32]).unwrap();
        assert!(hello(&a).starts_with(HELLO_PREFIX));
        assert_ne!(hello(&a), hello(&b));
        assert_ne!(
            &hello(&a)[HELLO_PREFIX.len()..],
            &crate::protocol::stream::hello(&a)[17..]
        );
    }

    #[test]
    fn the_have_field_carries_its_length_and_flags_apart() {
        for (in_order, acked) in [(false, false), (true, false), (false, true), (true, true)] {
            let field = HaveField {
                len: 513,
                in_order,
                acked,
            };
            let bytes = field.to_le_bytes();
            assert_eq!(HaveField::parse(u32::from_le_bytes(bytes)), field);
        }
        assert_eq!(
            (IN_ORDER | 7).to_le_bytes(),
            HaveField {
                len: 7,
                in_order: true,
                acked: false
            }
            .to_le_bytes()
        );
        assert_eq!(
            (ACKED | IN_ORDER).to_le_bytes(),
            HaveField {
                len: 0,
                in_order: true,
                acked: true
            }
            .to_le_bytes()
        );
    }

    #[test]
    fn items_roundtrip_and_are_bounded() {
        let len = 3 * FRAME_PLAIN + 100;
        let raw = Item::Frame {
            frame: 1,
            first_chunk: 16,
            code: 0,
            sealed: MAX_FRAME_SEALED,
        };
        assert_eq!(Item::parse(raw.to_bytes(), len), Ok(raw));
        let packed = Item::Frame {
            frame: 2,
            first_chunk: 19,
            code: 3,
            sealed: 3 * CIPHER_CHUNK as usize,
        };
        assert_eq!(Item::parse(packed.to_bytes(), len), Ok(packed));
        let tail = Item::Frame {
            frame: 3,
            first_chunk: 40,
            code: 0,
            sealed: 100 + TAG_LEN as usize,
        };
        assert_eq!(Item::parse(tail.to_bytes(), len), Ok(tail));
        for item in [Item::KeepAlive, Item::End] {
            assert_eq!(Item::parse(item.to_bytes(), len), Ok(item));
        }
        let refused = |item: Item| Item::parse(item.to_bytes(), len);
        let frame = |frame, first_chunk, code, sealed| Item::Frame {
            frame,
            first_chunk,
            code,
            sealed,
        };
        assert_eq!(
            refused(frame(4, 40, 0, 116)),
            Err(PushError::Frame),
            "past the end"
        );
        assert_eq!(refused(frame(2, 1, 0, MAX_FRAME_SEALED)), Err(PushError::Frame));
        assert_eq!(refused(frame(2, 33, 0, MAX_FRAME_SEALED)), Err(PushError::Frame));
        assert_eq!(refused(frame(1, 16, 16, MAX_FRAME_SEALED)), Err(PushError::Code));
        assert_eq!(
            refused(frame(3, 40, 1, CIPHER_CHUNK as usize)),
            Err(PushError::Code),
            "1 chunk saves none"
        );
        assert_eq!(
            refused(frame(1, 16, 0, MAX_FRAME_SEALED + 1)),
            Err(PushError::Length)
        );
        let mut odd = Item::KeepAlive.to_bytes();
        odd[5] = 1;
        assert_eq!(Item::parse(odd, len), Err(PushError::Kind));
        odd[0] = 9;
        assert_eq!(Item::parse(odd, len), Err(PushError::Kind));
    }
}
