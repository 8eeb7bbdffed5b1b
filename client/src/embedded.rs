//! The embedded relay: with no relay configured, `convey send` runs one in its own process,
//! so a new user needs nothing but the binary. `convey receive` with no relay configured
//! looks for it on this machine's default port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use convey_relay::{Config, Server};

use crate::{Error, RelayAddr, error::Result};

/// The port an embedded relay tries first, and where `convey receive` looks by default.
pub const DEFAULT_PORT: u16 = 4790;

/// Where a receiver with no relay configured looks on this machine.
pub const DEFAULT_LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT);

/// The relay a receiver uses on this machine when none is configured.
pub fn default_relay() -> RelayAddr {
    RelayAddr::from_socket(DEFAULT_LOCAL)
}

/// A relay running inside this process.
#[derive(Debug)]
pub struct EmbeddedRelay {
    server: Server,
}

impl EmbeddedRelay {
    /// Listen on all interfaces on [`DEFAULT_PORT`], or on any free port if it is taken.
    /// Nameplates are random (10-999), so two senders on one LAN rarely share one.
    pub async fn start() -> Result<Self> {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let config = |port| {
            let mut c = Config::with_listen(SocketAddr::new(any, port));
            c.random_nameplates = true;
            c
        };
        let server = match Server::spawn(config(DEFAULT_PORT)).await {
            Ok(s) => s,
            Err(_) => Server::spawn(config(0))
                .await
                .map_err(|e| Error::Refused(format!("cannot start the embedded relay: {e}")))?,
        };
        Ok(Self { server })
    }

    pub fn port(&self) -> u16 {
        self.server.local_addr().port()
    }

    /// How this process reaches its own relay.
    pub fn local_addr(&self) -> RelayAddr {
        RelayAddr::from_socket(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port()))
    }

    /// How another machine may reach it: the first non-loopback IPv4 address, if any.
    pub fn lan_addr(&self) -> Option<RelayAddr> {
        if_addrs::get_if_addrs()
            .ok()?
            .into_iter()
            .map(|i| i.ip())
            .find(|ip| matches!(ip, IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_link_local()))
            .map(|ip| RelayAddr::from_socket(SocketAddr::new(ip, self.port())))
    }

    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
