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
    /// What is offered (receiver only). `kind` is `files`, `text` or `stream`; `names` are
    /// the first top-level names, escaped; `bytes` is `null` for a stream.
    Offer {
        kind: String,
        files: usize,
        bytes: Option<u64>,
        names: Vec<String>,
    },
    /// The path the bytes take: `direct` (BitTorrent or TCP between the peers) or
    /// `relay-message` (a text inside the encrypted offer).
    Transport { path: String },
    /// Plaintext bytes moved so far; `total` is `null` for a stream.
    Progress { bytes: u64, total: Option<u64> },
    /// A resumed transfer found this many bytes already received and verified (receiver).
    Resumed { bytes: u64 },
    /// Sender of `--receivers` more than one: what happened to receiver `index` (numbered
    /// from 1 in arrival order). `state` is `connected` (key confirmed), `accepted`,
    /// `done` (received and verified), `declined`, `failed` (`message` says why) or
    /// `wrong-code` (a failed try: `tries` of `allowed` used). `done` counts finished receivers
    /// and `of` is the target (`null` for `any`).
    Receiver {
        index: u32,
        state: String,
        message: Option<String>,
        done: u32,
        of: Option<u32>,
        tries: u32,
        allowed: u32,
    },
    /// Sender of `--receivers` more than one: receiver `index` reports holding `bytes` of the
    /// `total` (from its piece reports, every 2 s while it downloads).
    ReceiverProgress { index: u32, bytes: u64, total: u64 },
    /// Sender of several receivers: by their reports, the receivers together hold every
    /// piece, so the sender may stop and they finish from each other.
    AllHeld,
    /// The code was closed to new receivers (after too many failed tries, or once enough
    /// receivers accepted).
    Closed { reason: String },
    /// Receiver of files: ciphertext bytes fetched in this run from the sender and from
    /// other receivers of the same transfer.
    Sources { from_sender: u64, from_receivers: u64 },
    /// Receiver of a transfer to several receivers: received and installed, now serving the
    /// others until the sender says all are done, for at most `seconds`.
    Seeding { seconds: u64 },
    /// Finished: plaintext bytes, seconds since the offer was accepted, and (receiver of
    /// files) the ciphertext bytes that actually crossed the network in this run.
    Done {
        bytes: u64,
        seconds: f64,
        fetched: Option<u64>,
    },
}

/// Where events go.
pub type EventSink = Arc<dyn Fn(Event) + Send + Sync>;

/// A sink that drops everything.
pub fn ignore_events() -> EventSink {
    Arc::new(|_| {})
}
