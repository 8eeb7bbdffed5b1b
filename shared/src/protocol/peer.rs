//! Messages between the two peers, JSON inside the sealed [`crate::crypto::Channel`].
//! The first two messages on the mailbox are not here: they are the raw SPAKE2 message and
//! the key confirmation.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::{content::ContentKey, manifest::Manifest};

/// Abilities a peer announces, so later versions can add transports.
pub const ABILITY_BITTORRENT: &str = "bt-v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum PeerMsg {
    /// Sender to receiver: what is offered and how to fetch it.
    Offer(Box<Offer>),
    /// Receiver to sender: accepted, or declined with a reason.
    Answer {
        accept: bool,
        reason: Option<String>,
        /// The receiver's WebRTC answer (SDP as JSON), when it takes the WebRTC path.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rtc: Option<String>,
    },
    /// Receiver to sender: the transfer ended (ok, or the error the receiver saw).
    Done { ok: bool, message: Option<String> },
    /// Sender to receiver, between key confirmation and the offer: still hashing, still here.
    Preparing,
    /// Receiver of a swarm offer to the sender, every few seconds while it downloads: the
    /// pieces it holds (base64 of a BitTorrent-style bitfield, piece 0 in the high bit of
    /// the first byte). The sender says "you may close" once the receivers together hold
    /// every piece; it trusts admitted receivers for no more than that.
    Have { pieces: String },
    /// Sender to a receiver of a swarm offer: every receiver it waited for is done, so
    /// nobody needs this receiver's pieces any more.
    SwarmDone,
    /// Sender to the receiver of an [`OfferBody::Pushed`] offer, once its pass over the
    /// content is over: what the offer could not say yet.
    Prepared(Box<Prepared>),
    /// Receiver of a pushed offer to the sender: the push did not bring everything; seed the
    /// torrent so BitTorrent fetches the rest (the sender answers with a [`PeerMsg::Prepared`]
    /// that carries the torrent once it seeds).
    Fetch,
    #[serde(other)]
    Unknown,
}

impl PeerMsg {
    /// The message's type, for an error that must not quote the (peer-chosen) message.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Offer(_) => "offer",
            Self::Answer { .. } => "answer",
            Self::Done { .. } => "done",
            Self::Preparing => "preparing",
            Self::SwarmDone => "swarm-done",
            Self::Have { .. } => "have",
            Self::Prepared(_) => "prepared",
            Self::Fetch => "fetch",
            Self::Unknown => "a message of an unknown type",
        }
    }
}

/// The sender serves the relay's WebSocket tunnel for this session.
pub const ABILITY_TUNNEL: &str = "relay-tunnel-v2";

/// The sender's tunnel ends take resumable connections ([`crate::protocol::tunnel_resume`]):
/// the receiver's path selector keeps librqbit's connection open across a lost tunnel and
/// continues it through a new one.
pub const ABILITY_TUNNEL_RESUME: &str = "tunnel-resume-v1";

/// A files offer made to several receivers: each receiver announces to the relay's tracker
/// and serves the pieces it has verified to the others, and after its own download keeps
/// serving until the sender says [`PeerMsg::SwarmDone`] (bounded by its `--seed-for`).
pub const ABILITY_SWARM: &str = "swarm-v1";

/// Files pushed while the sender reads them ([`OfferBody::Pushed`], [`crate::protocol::push`]).
pub const ABILITY_PUSH: &str = "push-v1";

/// The sender of a push takes the receiver's acknowledgements and keeps at most
/// [`crate::protocol::push::WINDOW`] frames beyond them in flight
/// ([`crate::protocol::push::ACKED`]): a receiver that cannot push back on its connection
/// (the browser page, whose WebSocket and data channel take every message) stays bounded.
pub const ABILITY_PUSH_ACKS: &str = "push-acks-v1";

/// The sender of a push serves a peer route (a connection over the push's own paths that
/// carries the session's messages while the relay is away): the receiver opens one. The
/// page, which serves none, does not offer it.
pub const ABILITY_PEER_ROUTE: &str = "peer-route-v1";

/// The sender closes its session as soon as it has the receiver's verdict: a one-to-one
/// receiver (its verdict sent) waits for that goodbye before it leaves, so that a verdict
/// lost with a relay connection that died silently is sent again on the resume slot. The
/// page, which does not close its session on the verdict, does not offer it.
pub const ABILITY_GOODBYE: &str = "goodbye-v1";

/// The ability to receive a stream of unknown length.
pub const ABILITY_STREAM: &str = "stream-v3";

/// Longest text accepted in a text offer.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// The sender's offer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offer {
    pub abilities: Vec<String>,
    pub body: OfferBody,
    /// The sender's WebRTC offer (SDP as JSON, candidates included), when it offers that path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtc: Option<String>,
    /// In a swarm: the ciphertext offset this receiver should fetch first. Receivers that
    /// start apart hold different pieces early and can serve each other; a hint only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
}

/// What is offered and how to fetch it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OfferBody {
    /// Files and folders, as one encrypted torrent.
    Files {
        manifest: Manifest,
        /// The key that decrypts the content.
        content_key: ContentKey,
        /// The .torrent describing the ciphertext (base64 of the bencoded metainfo).
        torrent: String,
        /// Addresses where the sender's BitTorrent listener may be reached directly.
        direct_hints: Vec<SocketAddr>,
        /// Frames compressed before encryption; absent when none was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        packing: Option<Packing>,
    },
    /// Files and folders sent while the sender still reads them: sealed frames are pushed
    /// over one connection ([`crate::protocol::push`]) as they are read, and the digests,
    /// torrent and chunk map follow in [`PeerMsg::Prepared`] once the pass is over. The
    /// manifest's digests are placeholders until then.
    Pushed {
        manifest: Manifest,
        content_key: ContentKey,
        /// Addresses where the sender's push listener may be reached directly.
        direct_hints: Vec<SocketAddr>,
    },
    /// A short text, carried in the offer itself.
    Text { text: String },
    /// A stream of unknown length (the sender's stdin), sent as sealed chunks over TCP.
    Stream {
        content_key: ContentKey,
        direct_hints: Vec<SocketAddr>,
    },
}

/// What a pushed offer learns once the sender's pass is over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prepared {
    /// Lowercase hex SHA-256 of each file, in manifest order.
    pub sha256: Vec<String>,
    /// The .torrent of the ciphertext (base64), for what the push did not bring: absent
    /// until the receiver asked for it ([`PeerMsg::Fetch`]); the sender's pass for the push
    /// does not hash pieces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torrent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packing: Option<Packing>,
}

/// How a files offer's plaintext was compressed: the codec (format, library version, level,
/// frame size: a receiver serves re-created packed frames only if it names the same one) and
/// the frame codes of its [`crate::chunk_map::ChunkMap`] (base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packing {
    pub codec: String,
    pub frames: String,
}

/// Longest codec name accepted in an offer.
pub const MAX_CODEC_NAME: usize = 64;

/// May a receiver dial `addr`, named by the sender? Never an unspecified address (0.0.0.0,
/// `::`), port 0, a multicast or broadcast address. Loopback and private addresses are
/// dialled: a sender on the same machine or LAN is the common case, and what a receiver
/// writes first is never the sender's choice (a BitTorrent handshake, or the stream's
/// fixed hello in [`crate::protocol::stream`]).
pub fn is_dialable(addr: &SocketAddr) -> bool {
    let ip_ok = match addr.ip() {
        std::net::IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        std::net::IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    };
    ip_ok && addr.port() != 0
}

/// The sender's hints a receiver will dial: dialable ones, each once, at most `max`.
pub fn dialable_hints(hints: Vec<SocketAddr>, max: usize) -> Vec<SocketAddr> {
    let mut seen = std::collections::HashSet::new();
    hints
        .into_iter()
        .filter(|a| is_dialable(a) && seen.insert(*a))
        .take(max)
        .collect()
}
