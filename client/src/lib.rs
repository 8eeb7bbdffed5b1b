//! convey: send files with a short code, end-to-end encrypted, peer to peer over BitTorrent.
//!
//! The library runs whole transfers ([`send()`], [`receive()`]) and reports progress as
//! [`Event`]s; it never prints. The `convey` binary is a thin shell around it.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod backoff;
pub mod embedded;
mod error;
mod events;
pub mod lan;
mod many;
mod peer_route;
mod receive;
mod receive_push;
mod relay_addr;
mod relay_link;
mod rendezvous;
mod seed;
mod send;
mod send_push;
mod session;
mod tls;
pub mod transfer;
pub mod transport;

pub use convey_shared::Code;
pub use convey_shared::display::safe as display_safe;
pub use error::Error;
pub use events::{Event, EventSink, ignore_events};
pub use receive::{
    AcceptFn, OfferSummary, PEER_SILENCE, ReceiveOptions, ReceiveReport, Received, SEED_FOR, receive,
};
pub use relay_addr::{ParseRelayError, RelayAddr};
pub use send::{MAX_RECEIVERS, Payload, Receivers, SendOptions, SendReport, send};
pub use transport::Transport;
