//! Messages between a client and the relay's rendezvous endpoint (JSON text frames).
//! The relay only ever sees nameplates, opaque sealed bodies and info-hashes.

use serde::{Deserialize, Serialize};

use crate::Nameplate;

/// How often a client whose session is confirmed pings the relay on its rendezvous
/// connection (WebSocket pings; the relay's WebSocket layer answers each with a pong).
pub const KEEPALIVE_EVERY: core::time::Duration = core::time::Duration::from_secs(5);
/// How long either end of a connection that pings hears nothing before it takes the
/// connection as dead: a NAT or a load balancer that forgot it sends no close and no reset.
/// The client then connects again and meets its peer on the session's resume slot; the
/// relay lets the silent connection go, so that slot is free again and the peer is told.
pub const KEEPALIVE_SILENCE: core::time::Duration = core::time::Duration::from_secs(20);

/// Client to relay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ClientMsg {
    /// Pick a free nameplate and claim it as its host (the sender).
    Allocate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<Host>,
    },
    /// Claim a given nameplate: as a guest (a receiver), or with `host` as its host (a sender
    /// with a pre-agreed code, or a sender's next connection for its next receiver).
    Claim {
        nameplate: Nameplate,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<Host>,
    },
    /// An opaque body for the other side of this connection's pair (base64).
    Send { body: String },
    /// From the host (proven by its secret; no claim needed): no new guests on this
    /// nameplate (pairs already made carry on).
    Lock { nameplate: Nameplate, secret: String },
    /// Allow the bundled tracker to serve this info-hash (40 hex chars) while we are here.
    RegisterSwarm { info_hash: String },
    /// We are done; `mood` says how it went (`happy`, `scary` for a failed key confirmation, `errory`).
    Close { mood: Mood },
    #[serde(other)]
    Unknown,
}

/// What a host says about its nameplate when it claims it.
///
/// A nameplate pairs each guest with one host connection: the relay forwards between the
/// two of a pair and never between pairs. A single-use nameplate (`many` false, today's
/// rule) admits one pair and is burned. A `many` nameplate admits a new pair each time a
/// host connection presenting the same `secret` (random, chosen by the sender, unrelated to
/// the code) meets a guest, until the host sends [`ClientMsg::Lock`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Host {
    #[serde(default)]
    pub many: bool,
    /// Proves that a later host connection comes from the same sender (hex, at most 64).
    #[serde(default)]
    pub secret: String,
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
    /// Both sides of this nameplate are already connected, or its host closed it.
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
    /// The relay cannot reach the store it shares with other instances (Redis).
    Unavailable,
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
            host: None,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"claim","nameplate":7}"#
        );
        let a: ClientMsg = serde_json::from_str(r#"{"type":"allocate"}"#).unwrap();
        assert_eq!(a, ClientMsg::Allocate { host: None });
        let h: ClientMsg =
            serde_json::from_str(r#"{"type":"claim","nameplate":3,"host":{"many":true,"secret":"ab"}}"#)
                .unwrap();
        assert_eq!(
            h,
            ClientMsg::Claim {
                nameplate: Nameplate(3),
                host: Some(Host {
                    many: true,
                    secret: "ab".into()
                })
            }
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
