//! What a finished handshake gives a side: the sealed channel for [`PeerMsg`]s and every
//! value derived from the session key, computed once here instead of at each use.

use crate::{
    crypto::{Channel, SessionKey, Side},
    protocol::{MAX_MESSAGE_BYTES, peer::PeerMsg, push, resume::Slot, route, stream, tunnel::tunnel_token},
};

/// A confirmed session key, as the values the two sides use. The key itself is not kept:
/// only what is derived from it.
#[derive(Debug)]
pub struct Established {
    pub side: Side,
    channel: Channel,
    /// Names this session's WebSocket tunnel on the relay.
    pub tunnel_token: String,
    /// What a stream's receiver writes first on its connection.
    pub stream_hello: [u8; stream::HELLO_LEN],
    /// What a push's receiver writes first on its connection.
    pub push_hello: [u8; push::HELLO_LEN],
    /// What the receiver writes first on the peer route.
    pub route_hello: [u8; route::HELLO_LEN],
    /// Where the two sides meet again after losing the relay.
    pub slot: Slot,
}

/// A message that could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Too large for one message through the relay (base64 on the wire grows it by a third).
    #[error("this {kind} is {kib} KiB, more than the {max_kib} KiB one message through the relay carries")]
    TooBig {
        kind: &'static str,
        kib: usize,
        max_kib: usize,
    },
    /// Tampered, replayed, reordered, or from another session.
    #[error("a message from the peer failed authentication")]
    Forged,
    #[error("bad message from peer: {0}")]
    Malformed(String),
}

impl Established {
    pub(crate) fn new(key: &SessionKey, side: Side) -> Self {
        Self {
            side,
            channel: Channel::new(key, side),
            tunnel_token: tunnel_token(key),
            stream_hello: stream::hello(key),
            push_hello: push::hello(key),
            route_hello: route::hello(key),
            slot: Slot::new(key),
        }
    }

    /// Seal `msg` for the peer; refused if it would not fit through the relay.
    pub fn seal(&mut self, msg: &PeerMsg) -> Result<Vec<u8>, SealError> {
        let json = serde_json::to_vec(msg).expect("peer messages always serialize");
        let on_wire = json.len().div_ceil(3) * 4;
        if on_wire > MAX_MESSAGE_BYTES {
            return Err(SealError::TooBig {
                kind: msg.kind(),
                kib: on_wire / 1024,
                max_kib: MAX_MESSAGE_BYTES / 1024,
            });
        }
        Ok(self.channel.seal(&json))
    }

    /// Open the peer's next sealed message.
    pub fn open(&mut self, sealed: &[u8]) -> Result<PeerMsg, SealError> {
        let json = self.channel.open(sealed).map_err(|_| SealError::Forged)?;
        serde_json::from_slice(&json).map_err(|e| SealError::Malformed(e.to_string()))
    }
}
