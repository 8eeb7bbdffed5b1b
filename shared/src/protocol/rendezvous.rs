//! Messages between a client and the relay's rendezvous endpoint (JSON text frames).
//! The relay only ever sees nameplates, opaque sealed bodies and info-hashes.

use serde::{Deserialize, Serialize};

use crate::Nameplate;

/// Client to relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMsg {
    /// Pick a free nameplate and claim it.
    Allocate,
    /// Claim a given nameplate (receivers, and senders with a pre-agreed code).
    Claim { nameplate: Nameplate },
    /// An opaque body for the other side (base64).
    Send { body: String },
    /// Allow the bundled tracker to serve this info-hash (40 hex chars) while we are here.
    RegisterSwarm { info_hash: String },
    /// We are done; `mood` says how it went (`happy`, `scary` for a failed key confirmation, `errory`).
    Close { mood: Mood },
    #[serde(other)]
    Unknown,
}

/// How a session ended, reported to the relay for its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mood {
    Happy,
    Scary,
    Errory,
    #[serde(other)]
    Unknown,
}

/// Relay to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ServerMsg {
    Welcome {
        motd: Option<String>,
        /// UDP port of the relay's STUN service, on the relay's host.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stun_port: Option<u16>,
    },
    /// The nameplate is ours; `peer_present` says whether the other side is already there.
    Claimed {
        nameplate: Nameplate,
        peer_present: bool,
    },
    PeerJoined,
    /// A body from the other side.
    Message {
        body: String,
    },
    /// The other side closed or vanished.
    PeerLeft {
        mood: Option<Mood>,
    },
    SwarmRegistered {
        info_hash: String,
    },
    /// A request was refused; `kind` is machine-readable, `message` is for humans.
    Error {
        kind: ErrorKind,
        message: String,
    },
    #[serde(other)]
    Unknown,
}

/// Machine-readable reasons a relay refuses something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Both sides of this nameplate are already connected.
    InUse,
    /// No free nameplate right now.
    Exhausted,
    /// Waited too long for the other side.
    Expired,
    /// Protocol misuse (wrong order, bad field, too large).
    BadRequest,
    /// Too many new codes from this address; try later.
    RateLimited,
    /// A private relay: opening a code needs its access token.
    Unauthorized,
    /// The connection said nothing for too long.
    Idle,
    /// The relay is shutting down.
    ShuttingDown,
    #[serde(other)]
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_stable() {
        let m = ClientMsg::Claim {
            nameplate: Nameplate(7),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"claim","nameplate":7}"#
        );
        let s: ServerMsg = serde_json::from_str(r#"{"type":"error","kind":"in-use","message":"x"}"#).unwrap();
        assert_eq!(
            s,
            ServerMsg::Error {
                kind: ErrorKind::InUse,
                message: "x".into()
            }
        );
    }

    #[test]
    fn unknown_messages_are_tolerated() {
        let s: ServerMsg = serde_json::from_str(r#"{"type":"from-the-future","x":1}"#).unwrap();
        assert_eq!(s, ServerMsg::Unknown);
        let c: ClientMsg = serde_json::from_str(r#"{"type":"nope"}"#).unwrap();
        assert_eq!(c, ClientMsg::Unknown);
    }
}
