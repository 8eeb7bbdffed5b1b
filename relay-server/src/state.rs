//! Shared state handed to every request handler.

use std::{sync::Arc, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    Config,
    limits::{AccessToken, CodeRate},
    metrics::Metrics,
    rendezvous::{Mailboxes, Nameplates, SharedNameplates},
    shared::Shared,
    tracker::{SwarmStore, Swarms, TrackerSettings},
    tunnel::{TunnelLimits, Tunnels},
};

/// The two steps of a graceful shutdown.
#[derive(Debug, Clone)]
pub(crate) struct Stopping {
    /// Cancelled first: no new sessions; sessions that have not paired yet are closed.
    pub(crate) draining: CancellationToken,
    /// Cancelled when the grace period is over: everything still open is cut.
    pub(crate) now: CancellationToken,
}

#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) nameplates: Nameplates,
    /// The store shared with other instances, if any (also behind `nameplates` and `swarms`).
    pub(crate) shared: Option<Arc<Shared>>,
    pub(crate) swarms: Arc<SwarmStore>,
    pub(crate) tunnels: Arc<Tunnels>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) code_rate: Arc<CodeRate>,
    pub(crate) access_token: Option<AccessToken>,
    pub(crate) trust_forwarded_for: bool,
    pub(crate) tunnel_limits: TunnelLimits,
    pub(crate) tracker: TrackerSettings,
    pub(crate) nameplate_ttl: Duration,
    pub(crate) idle: Duration,
    pub(crate) max_message_bytes: usize,
    /// UDP port of the STUN service, told to clients in the welcome.
    pub(crate) stun_port: Option<u16>,
    pub(crate) stopping: Stopping,
    /// Every upgraded connection's task, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
}

impl AppState {
    /// State for `config`; nameplates and swarms live in `shared` when several instances
    /// share them, else in this process.
    pub(crate) fn new(config: &Config, stopping: Stopping, shared: Option<Arc<Shared>>) -> Self {
        let (nameplates, swarms) = match shared.clone() {
            None => (
                Arc::new(Mailboxes::new(config.max_nameplates, config.random_nameplates)) as Nameplates,
                SwarmStore::Memory(Swarms::new(config.open_tracker)),
            ),
            Some(store) => (
                Arc::new(SharedNameplates {
                    store: store.clone(),
                    max: config.max_nameplates,
                }) as Nameplates,
                SwarmStore::Shared {
                    store,
                    open: config.open_tracker,
                },
            ),
        };
        Self {
            shared,
            nameplates,
            swarms: Arc::new(swarms),
            tunnels: Arc::default(),
            metrics: Arc::default(),
            code_rate: Arc::new(CodeRate::new(config.rate_per_minute, config.rate_burst)),
            access_token: config.access_token.clone(),
            trust_forwarded_for: config.trust_forwarded_for,
            tunnel_limits: TunnelLimits {
                max_bytes: config.tunnel_max_bytes,
                max_time: Duration::from_secs(config.tunnel_max_secs),
                wait: Duration::from_secs(config.tunnel_wait_secs.max(1)),
            },
            tracker: TrackerSettings {
                interval: config.announce_interval(),
                max_numwant: config.tracker_max_numwant,
            },
            nameplate_ttl: config.nameplate_ttl(),
            idle: config.idle(),
            max_message_bytes: config.max_message_bytes.max(1024),
            stun_port: None,
            stopping,
            tasks: TaskTracker::new(),
        }
    }
}

impl AppState {
    /// Whether a request may do what a private relay reserves for token holders (always,
    /// on a relay without a token).
    pub(crate) fn admits(&self, headers: &axum::http::HeaderMap) -> bool {
        self.access_token.as_ref().is_none_or(|t| t.admits(headers))
    }
}
