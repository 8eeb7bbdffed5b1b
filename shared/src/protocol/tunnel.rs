//! The relay's WebSocket tunnel, the transport of last resort: both peers connect to
//! `/v2/tunnel/{token}/{side}` and the relay passes each binary frame one peer sends on to the
//! other. The token is derived from the session key, so the relay learns nothing from it and
//! nobody without the code can join the tunnel.
//!
//! The relay does not unmask. A client's frames are masked (RFC 6455 §5.3) with a fresh key
//! each; the relay sends each one on as a server frame (unmasked, as the RFC requires) whose
//! payload is that 4-byte key followed by the frame's payload still masked, and the receiving
//! peer unmasks ([`unmask_relayed`]). So the relay never touches a payload byte: it writes
//! each payload on straight from its read buffer.

use crate::crypto::SessionKey;

/// Path prefix of the tunnel endpoint.
pub const TUNNEL_PATH: &str = "/v2/tunnel";
/// Largest WebSocket message either side sends through the tunnel.
pub const MAX_TUNNEL_MESSAGE: usize = 1 << 20;
/// A browser cannot set `Authorization` on a WebSocket, so the page presents a private
/// relay's access token as a WebSocket sub-protocol: this prefix, then the token in hex
/// (a sub-protocol is an HTTP token, which some of a token's characters are not).
pub const ACCESS_TOKEN_PROTOCOL: &str = "convey-token.";
/// The sub-protocol a tunnel end may ask for (a browser offering the token protocol must
/// offer one the relay answers with).
pub const TUNNEL_PROTOCOL: &str = "convey-tunnel";
/// Bytes of a tunnel token (hex in the URL).
pub const TOKEN_BYTES: usize = 32;
/// How often the relay pings a `listen` end that waits for its partner. The end says nothing
/// else while it waits, so without this neither side would notice it had died silently (a
/// NAT that forgot it), and the next `dial` end would be paired with a dead one.
pub const WAITING_PING: std::time::Duration = std::time::Duration::from_secs(1);
/// A waiting `listen` end the relay heard nothing from (no pong) this long is dead: the
/// relay drops it. The sender, pinged before, takes it as dead one [`WAITING_PING`] later
/// (so the relay has dropped it first) and opens another. Short enough that a receiver
/// resuming a lost tunnel (it redials 6 s into a silence) meets the new end.
pub const WAITING_SILENT: std::time::Duration = std::time::Duration::from_secs(4);

/// Which end of a tunnel a connection is: the sender `listen`s (it serves BitTorrent), the
/// receiver `dial`s. The relay pairs one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunnelSide {
    Listen,
    Dial,
}

impl TunnelSide {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Listen => "listen",
            Self::Dial => "dial",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "listen" => Some(Self::Listen),
            "dial" => Some(Self::Dial),
            _ => None,
        }
    }

    pub fn other(self) -> Self {
        match self {
            Self::Listen => Self::Dial,
            Self::Dial => Self::Listen,
        }
    }
}

/// Bytes the relay puts before each relayed payload: the sender's masking key.
pub const RELAYED_KEY_BYTES: usize = 4;

/// Unmask a message the relay passed on (masking key, then masked payload), in place; the
/// payload is what the other peer sent. `None` if the message is too short to hold a key.
pub fn unmask_relayed(msg: &mut [u8]) -> Option<&mut [u8]> {
    if msg.len() < RELAYED_KEY_BYTES {
        return None;
    }
    let (key, payload) = msg.split_at_mut(RELAYED_KEY_BYTES);
    let key = [key[0], key[1], key[2], key[3]];
    // Eight bytes at a time (the key repeats every 4, so twice per word), then the rest.
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut words = payload.chunks_exact_mut(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
    Some(payload)
}

/// The tunnel token of a session (hex).
pub fn tunnel_token(key: &SessionKey) -> String {
    hex::encode(key.derive("tunnel-token").as_slice())
}

/// Is `s` shaped like a tunnel token?
pub fn is_token(s: &str) -> bool {
    s.len() == TOKEN_BYTES * 2 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmasking_a_relayed_message_gives_back_what_the_peer_sent() {
        let sent: Vec<u8> = (0..1003u32).map(|i| (i * 7 % 256) as u8).collect();
        let key = [0x12, 0x9a, 0xff, 0x03];
        // What the sending client's WebSocket put on the wire (RFC 6455 §5.3).
        let mut msg = key.to_vec();
        msg.extend(sent.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        assert_ne!(&msg[4..], &sent[..]);
        assert_eq!(unmask_relayed(&mut msg).map(|p| p.to_vec()), Some(sent));
        assert_eq!(unmask_relayed(&mut [1, 2, 3]), None);
        assert_eq!(unmask_relayed(&mut [1, 2, 3, 4]).map(|p| p.len()), Some(0));
    }

    #[test]
    fn tokens_are_per_session_and_well_formed() {
        let a = SessionKey::from_slice(&[1; 32]).unwrap();
        let b = SessionKey::from_slice(&[2; 32]).unwrap();
        assert!(is_token(&tunnel_token(&a)));
        assert_ne!(tunnel_token(&a), tunnel_token(&b));
        assert!(!is_token("abc") && !is_token(&"g".repeat(64)));
        for side in [TunnelSide::Listen, TunnelSide::Dial] {
            assert_eq!(TunnelSide::parse(side.as_str()), Some(side));
            assert_eq!(side.other().other(), side);
        }
    }
}
