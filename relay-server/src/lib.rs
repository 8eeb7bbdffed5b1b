//! The convey relay: pairs two peers on a nameplate, forwards their sealed messages, and
//! runs the BitTorrent tracker for the swarms those peers register. It never sees the words
//! of a code, the session key, file names or contents.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
mod http;
pub mod limits;
mod listener;
mod metrics;
mod page;
mod rendezvous;
mod server;
mod shared;
mod state;
mod stun;
mod tracker;
mod tunnel;

pub use config::Config;
pub use server::{Server, SpawnError};
