//! convey's shared vocabulary: codes, wire messages, the PAKE and the content cipher.
//!
//! Protocol overview, in the order a transfer happens:
//! 1. **Rendezvous** ([`protocol::rendezvous`]): both sides open a WebSocket to the relay and
//!    claim the same nameplate (the number in the code). The relay forwards opaque messages.
//! 2. **PAKE** ([`pake`]): symmetric SPAKE2 keyed by the words of the code; explicit key
//!    confirmation before anything else is sent.
//! 3. **Offer** ([`protocol::peer`]): sealed with keys derived from the session key
//!    ([`crypto`]), the sender sends the manifest, the torrent and the content key.
//! 4. **Transport**: the receiver downloads the ciphertext ([`content`]) with BitTorrent.
//!
//! This crate does no I/O, so every parser and state machine here is testable in isolation.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod bits;
pub mod chunk_map;
pub mod code;
pub mod content;
pub mod crypto;
pub mod display;
pub mod layout;
pub mod manifest;
pub mod pake;
pub mod protocol;
pub mod session;
pub mod torrent;
pub mod wordlist;

pub use code::{Code, Nameplate, ParseCodeError};
