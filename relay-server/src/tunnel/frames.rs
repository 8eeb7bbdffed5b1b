//! The few parts of WebSocket framing (RFC 6455 §5) the tunnel needs: reading a client frame's
//! header, and writing server frame headers and close frames. Payloads are never parsed here:
//! the relay passes them on still masked (see `convey_shared::protocol::tunnel`).

use convey_shared::protocol::tunnel::{MAX_TUNNEL_MESSAGE, RELAYED_KEY_BYTES};

pub(crate) const OP_CONTINUATION: u8 = 0x0;
pub(crate) const OP_TEXT: u8 = 0x1;
pub(crate) const OP_BINARY: u8 = 0x2;
pub(crate) const OP_CLOSE: u8 = 0x8;
pub(crate) const OP_PING: u8 = 0x9;
pub(crate) const OP_PONG: u8 = 0xA;

/// Largest client frame payload accepted.
pub(crate) const MAX_FRAME: u64 = MAX_TUNNEL_MESSAGE as u64 + 1024;
/// Longest client frame header: 2 bytes, 8 of extended length, 4 of masking key.
pub(crate) const MAX_HEADER: usize = 14;

/// A client frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) opcode: u8,
    pub(crate) len: u64,
    pub(crate) mask: [u8; 4],
}

/// How many header bytes a frame starting with `first_two` has in all.
pub(crate) fn header_len(first_two: [u8; 2]) -> usize {
    let ext = match first_two[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if first_two[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// Parse a whole client frame header (`buf` holds exactly [`header_len`] bytes).
pub(crate) fn parse_client_header(buf: &[u8]) -> Result<Header, &'static str> {
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err("the tunnel negotiates no WebSocket extensions");
    }
    if b1 & 0x80 == 0 {
        return Err("client frames must be masked");
    }
    let opcode = b0 & 0x0F;
    let fin = b0 & 0x80 != 0;
    let (len, rest) = match b1 & 0x7F {
        126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), &buf[4..]),
        127 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(l), &buf[10..])
        }
        n => (u64::from(n), &buf[2..]),
    };
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG if fin && len <= 125 => {}
        OP_CLOSE | OP_PING | OP_PONG => return Err("malformed control frame"),
        _ => return Err("unknown WebSocket opcode"),
    }
    if len > MAX_FRAME {
        return Err("tunnel message too large");
    }
    Ok(Header {
        opcode,
        len,
        mask: [rest[0], rest[1], rest[2], rest[3]],
    })
}

/// The start of the server frame that passes on a client frame's `len` payload bytes: the
/// header of a whole binary message, then the client's masking key. Returns the bytes and
/// how many of them are used.
pub(crate) fn relayed_frame_start(len: u64, mask: [u8; 4]) -> ([u8; 14], usize) {
    let total = len + RELAYED_KEY_BYTES as u64;
    let mut out = [0u8; 14];
    out[0] = 0x80 | OP_BINARY;
    let mut n = 2;
    if total < 126 {
        out[1] = total as u8;
    } else if let Ok(short) = u16::try_from(total) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        n = 4;
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&total.to_be_bytes());
        n = 10;
    }
    out[n..n + 4].copy_from_slice(&mask);
    (out, n + 4)
}

/// A server ping frame with no payload.
pub(crate) const PING_FRAME: [u8; 2] = [0x80 | OP_PING, 0];

/// A server close frame with status 1008 (policy) and `reason`, cut to fit a control frame.
pub(crate) fn close_frame(reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = vec![0x80 | OP_CLOSE, (cut + 2) as u8];
    out.extend_from_slice(&1008u16.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..cut]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(b0: u8, len: u64) -> Vec<u8> {
        let mut f = vec![b0];
        if len < 126 {
            f.push(0x80 | len as u8);
        } else if len <= 0xFFFF {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&len.to_be_bytes());
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f
    }

    #[test]
    fn client_headers_of_every_length_form_parse() {
        for len in [0u64, 125, 126, 65535, 65536, MAX_FRAME] {
            let f = client_frame(0x82, len);
            assert_eq!(header_len([f[0], f[1]]), f.len());
            assert_eq!(
                parse_client_header(&f),
                Ok(Header {
                    opcode: OP_BINARY,
                    len,
                    mask: [1, 2, 3, 4]
                })
            );
        }
    }

    #[test]
    fn frames_the_tunnel_does_not_pass_are_refused() {
        assert!(parse_client_header(&client_frame(0x82, MAX_FRAME + 1)).is_err());
        assert!(parse_client_header(&client_frame(0xC2, 1)).is_err(), "RSV1");
        assert!(
            parse_client_header(&client_frame(0x83, 1)).is_err(),
            "reserved opcode"
        );
        assert!(
            parse_client_header(&client_frame(0x09, 1)).is_err(),
            "fragmented ping"
        );
        assert!(
            parse_client_header(&client_frame(0x89, 126)).is_err(),
            "long ping"
        );
        assert!(parse_client_header(&[0x82, 0x01]).is_err(), "unmasked");
    }

    #[test]
    fn relayed_frames_are_whole_binary_messages_carrying_the_key() {
        for (len, header) in [(0u64, 2), (121, 2), (122, 4), (65531, 4), (65532, 10)] {
            let (start, n) = relayed_frame_start(len, [9, 8, 7, 6]);
            assert_eq!(n, header + 4);
            assert_eq!(start[0], 0x82);
            assert_eq!(start[1] & 0x80, 0, "server frames are not masked");
            let total = match start[1] {
                126 => u64::from(u16::from_be_bytes([start[2], start[3]])),
                127 => u64::from_be_bytes(start[2..10].try_into().unwrap()),
                l => u64::from(l),
            };
            assert_eq!(total, len + 4);
            assert_eq!(&start[n - 4..n], &[9, 8, 7, 6]);
        }
    }

    #[test]
    fn close_frames_fit_a_control_frame() {
        let f = close_frame(&"é".repeat(100));
        assert!(f.len() <= 127);
        assert_eq!(f[1] as usize, f.len() - 2);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
