//! What a transfer reports while it runs. The library only emits events; the binary decides
//! how to show them (text, progress, JSON lines).

use std::sync::Arc;

use serde::Serialize;

/// One step of a transfer.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Event {
    /// The code the receiver needs (sender only), printed before any hashing starts.
    Code { code: String },
    /// Waiting for the other side to show up.
    Waiting,
    /// Key confirmation succeeded: the peer knows the code.
    Connected,
    /// The content is being encrypted and hashed (sender only).
    Preparing { bytes: u64 },
    /// What is offered.
    Offer {
        files: usize,
        bytes: u64,
        names: Vec<String>,
    },
    /// The path the bytes take.
    Transport { path: String },
    /// Plaintext bytes moved so far.
    Progress { bytes: u64, total: u64 },
    /// Finished: bytes moved and seconds from offer accepted to verified.
    Done { bytes: u64, seconds: f64 },
}

/// Where events go.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// A sink that drops everything.
pub fn ignore_events() -> EventSink {
    Arc::new(|_| {})
}
