//! Relay settings: every flag has a `CONVEY_RELAY_*` environment twin, so a container needs
//! only environment variables.

use std::{net::SocketAddr, time::Duration};

/// Default listen address of a stand-alone relay.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:4790";
/// Default seconds a lone side waits on a nameplate before it expires.
pub const DEFAULT_NAMEPLATE_TTL_SECS: u64 = 3600;
/// Default tracker announce interval, seconds.
pub const DEFAULT_ANNOUNCE_INTERVAL_SECS: u64 = 30;
/// Default cap on open nameplates.
pub const DEFAULT_MAX_NAMEPLATES: usize = 10_000;
/// Default bytes one session may move through the WebSocket tunnel (64 GiB).
pub const DEFAULT_TUNNEL_MAX_BYTES: u64 = 64 << 30;
/// Default seconds one session may use the WebSocket tunnel (6 hours).
pub const DEFAULT_TUNNEL_MAX_SECS: u64 = 6 * 3600;
/// Default STUN address (UDP); `off` disables STUN.
pub const DEFAULT_STUN_LISTEN: &str = "0.0.0.0:3478";
/// Default seconds one end of a tunnel waits for the other.
pub const DEFAULT_TUNNEL_WAIT_SECS: u64 = 300;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on for HTTP and WebSocket (rendezvous, tracker, health).
    #[arg(long, env = "CONVEY_RELAY_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Seconds a side may wait alone on a nameplate before it is told the code expired.
    #[arg(long, env = "CONVEY_RELAY_NAMEPLATE_TTL", default_value_t = DEFAULT_NAMEPLATE_TTL_SECS)]
    pub nameplate_ttl_secs: u64,

    /// Tracker announce interval handed to peers, in seconds.
    #[arg(long, env = "CONVEY_RELAY_ANNOUNCE_INTERVAL", default_value_t = DEFAULT_ANNOUNCE_INTERVAL_SECS)]
    pub announce_interval_secs: u64,

    /// Most nameplates open at once; further allocations are refused.
    #[arg(long, env = "CONVEY_RELAY_MAX_NAMEPLATES", default_value_t = DEFAULT_MAX_NAMEPLATES)]
    pub max_nameplates: usize,

    /// Bytes one transfer may move through the WebSocket tunnel (both directions).
    #[arg(long, env = "CONVEY_RELAY_TUNNEL_MAX_BYTES", default_value_t = DEFAULT_TUNNEL_MAX_BYTES)]
    pub tunnel_max_bytes: u64,

    /// Seconds one transfer may use the WebSocket tunnel.
    #[arg(long, env = "CONVEY_RELAY_TUNNEL_MAX_SECS", default_value_t = DEFAULT_TUNNEL_MAX_SECS)]
    pub tunnel_max_secs: u64,

    /// UDP address of the STUN service WebRTC peers use to learn their public address, or
    /// `off`.
    #[arg(long, env = "CONVEY_RELAY_STUN_LISTEN", default_value = DEFAULT_STUN_LISTEN, value_parser = parse_stun)]
    pub stun_listen: StunListen,

    /// Seconds one end of a tunnel waits for the other end.
    #[arg(long, env = "CONVEY_RELAY_TUNNEL_WAIT_SECS", default_value_t = DEFAULT_TUNNEL_WAIT_SECS)]
    pub tunnel_wait_secs: u64,
}

impl Config {
    /// A config listening on `addr` with every other setting at its default.
    pub fn with_listen(listen: SocketAddr) -> Self {
        Self {
            listen,
            nameplate_ttl_secs: DEFAULT_NAMEPLATE_TTL_SECS,
            announce_interval_secs: DEFAULT_ANNOUNCE_INTERVAL_SECS,
            max_nameplates: DEFAULT_MAX_NAMEPLATES,
            tunnel_max_bytes: DEFAULT_TUNNEL_MAX_BYTES,
            tunnel_max_secs: DEFAULT_TUNNEL_MAX_SECS,
            tunnel_wait_secs: DEFAULT_TUNNEL_WAIT_SECS,
            stun_listen: StunListen(None),
        }
    }

    pub fn nameplate_ttl(&self) -> Duration {
        Duration::from_secs(self.nameplate_ttl_secs)
    }

    pub fn announce_interval(&self) -> Duration {
        Duration::from_secs(self.announce_interval_secs.max(1))
    }
}

/// Where STUN listens, if anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunListen(pub Option<SocketAddr>);

fn parse_stun(s: &str) -> Result<StunListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(StunListen(None));
    }
    s.parse()
        .map(|a| StunListen(Some(a)))
        .map_err(|_| format!("{s:?} is neither an address like 0.0.0.0:3478 nor `off`"))
}
