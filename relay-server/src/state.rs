//! Shared state handed to every request handler.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    Config,
    metrics::Metrics,
    rendezvous::Mailboxes,
    tracker::Swarms,
    tunnel::{TunnelLimits, Tunnels},
};

#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) mailboxes: Arc<Mailboxes>,
    pub(crate) swarms: Arc<Swarms>,
    pub(crate) tunnels: Arc<Tunnels>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tunnel_limits: TunnelLimits,
    pub(crate) nameplate_ttl: Duration,
    /// UDP port of the STUN service, told to clients in the welcome.
    pub(crate) stun_port: Option<u16>,
    pub(crate) announce_interval: Duration,
    /// Cancelled at shutdown; every long-lived handler watches it.
    pub(crate) shutdown: CancellationToken,
}

impl AppState {
    pub(crate) fn new(config: &Config, shutdown: CancellationToken) -> Self {
        Self {
            mailboxes: Arc::new(Mailboxes::new(config.max_nameplates)),
            swarms: Arc::new(Swarms::default()),
            tunnels: Arc::default(),
            metrics: Arc::default(),
            tunnel_limits: TunnelLimits {
                max_bytes: config.tunnel_max_bytes,
                max_time: Duration::from_secs(config.tunnel_max_secs),
                wait: Duration::from_secs(config.tunnel_wait_secs.max(1)),
            },
            nameplate_ttl: config.nameplate_ttl(),
            stun_port: None,
            announce_interval: config.announce_interval(),
            shutdown,
        }
    }
}
