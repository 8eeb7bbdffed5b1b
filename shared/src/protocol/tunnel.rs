//! The relay's WebSocket tunnel, the transport of last resort: both peers connect to
//! `/v1/tunnel/{token}/{side}` and the relay splices the two connections' binary messages.
//! The token is derived from the session key, so the relay learns nothing from it and nobody
//! without the code can join the tunnel.

use crate::crypto::SessionKey;

/// Path prefix of the tunnel endpoint.
pub const TUNNEL_PATH: &str = "/v1/tunnel";
/// Largest WebSocket message either side sends through the tunnel.
pub const MAX_TUNNEL_MESSAGE: usize = 1 << 20;
/// Bytes of a tunnel token (hex in the URL).
pub const TOKEN_BYTES: usize = 32;

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
