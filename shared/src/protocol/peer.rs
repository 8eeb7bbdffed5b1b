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
    Answer { accept: bool, reason: Option<String> },
    /// Receiver to sender: the transfer ended (ok, or the error the receiver saw).
    Done { ok: bool, message: Option<String> },
    #[serde(other)]
    Unknown,
}

/// The sender's offer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Offer {
    pub abilities: Vec<String>,
    pub manifest: Manifest,
    /// The key that decrypts the content.
    pub content_key: ContentKey,
    /// The .torrent describing the ciphertext (base64 of the bencoded metainfo).
    pub torrent: String,
    /// Addresses where the sender's BitTorrent listener may be reached directly.
    pub direct_hints: Vec<SocketAddr>,
}
