//! Relay settings in one struct. Every flag has a `CONVEY_RELAY_*` environment twin, so a
//! container needs only environment variables, and a key in an optional TOML file
//! ([`file`]); the command line beats the environment, which beats the file.

pub mod file;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use crate::limits::AccessToken;

/// Default listen address of a stand-alone relay.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:4790";
/// Default seconds a lone side waits on a nameplate before it expires.
pub const DEFAULT_NAMEPLATE_TTL_SECS: u64 = 3600;
/// Default seconds a rendezvous connection may stay silent (pings included).
pub const DEFAULT_IDLE_SECS: u64 = 300;
/// Default tracker announce interval, seconds.
pub const DEFAULT_ANNOUNCE_INTERVAL_SECS: u64 = 30;
/// Default cap on peers in one tracker reply.
pub const DEFAULT_TRACKER_MAX_NUMWANT: usize = 200;
/// Default cap on open nameplates.
pub const DEFAULT_MAX_NAMEPLATES: usize = 10_000;
/// Default new codes (allocations and claims) one IP address may open per minute.
pub const DEFAULT_RATE_PER_MINUTE: u32 = 60;
/// Default burst of new codes one IP address may open at once.
pub const DEFAULT_RATE_BURST: u32 = 20;
/// Default cap on one rendezvous WebSocket message (and frame), bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = convey_shared::protocol::MAX_MESSAGE_BYTES + 4096;
/// Default bytes one session may move through the WebSocket tunnel (64 GiB).
pub const DEFAULT_TUNNEL_MAX_BYTES: u64 = 64 << 30;
/// Default seconds one session may use the WebSocket tunnel (6 hours).
pub const DEFAULT_TUNNEL_MAX_SECS: u64 = 6 * 3600;
/// Default STUN address (UDP); `off` disables STUN.
pub const DEFAULT_STUN_LISTEN: &str = "[::]:3478";
/// Default seconds one end of a tunnel waits for the other.
pub const DEFAULT_TUNNEL_WAIT_SECS: u64 = 300;
/// Default seconds running sessions get to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// TOML file with any of these settings, keys named like the flags
    /// (`nameplate-ttl-secs = 600`); flags and environment win over it.
    #[arg(long, env = "CONVEY_RELAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on for HTTP and WebSocket (rendezvous, tracker, tunnel, health,
    /// metrics).
    #[arg(long, env = "CONVEY_RELAY_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Seconds a side may wait alone on a nameplate before it is told the code expired.
    #[arg(long, env = "CONVEY_RELAY_NAMEPLATE_TTL", default_value_t = DEFAULT_NAMEPLATE_TTL_SECS)]
    pub nameplate_ttl_secs: u64,

    /// Seconds a rendezvous connection may go without sending anything (the relay pings
    /// it, and clients answer), or without claiming a code, before it is closed. One that
    /// pings the relay itself (a confirmed session's does) gets at most 20 s.
    #[arg(long, env = "CONVEY_RELAY_IDLE_SECS", default_value_t = DEFAULT_IDLE_SECS)]
    pub idle_secs: u64,

    /// Most nameplates open at once; further allocations are refused.
    #[arg(long, env = "CONVEY_RELAY_MAX_NAMEPLATES", default_value_t = DEFAULT_MAX_NAMEPLATES)]
    pub max_nameplates: usize,

    /// Hand out random nameplates from 10-999 instead of the lowest free one, so that two
    /// relays on one LAN rarely hand out the same number (a sender's embedded relay does
    /// this). In-memory state only; with --redis-url the lowest free one is used.
    #[arg(long, env = "CONVEY_RELAY_RANDOM_NAMEPLATES")]
    pub random_nameplates: bool,

    /// New codes (allocations, and claims of a nameplate) one IP address may open per
    /// minute; 0 disables the limit.
    #[arg(long, env = "CONVEY_RELAY_RATE_PER_MINUTE", default_value_t = DEFAULT_RATE_PER_MINUTE)]
    pub rate_per_minute: u32,

    /// How many of those one IP address may open at once before the per-minute rate
    /// applies.
    #[arg(long, env = "CONVEY_RELAY_RATE_BURST", default_value_t = DEFAULT_RATE_BURST)]
    pub rate_burst: u32,

    /// Take the client's address from the last `X-Forwarded-For` entry (set this only
    /// behind a reverse proxy that writes that header).
    #[arg(long, env = "CONVEY_RELAY_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Make the relay private: opening a code and the sender's end of a tunnel need this
    /// token (clients: `--relay-token` or `CONVEY_RELAY_TOKEN`). A side joining a code
    /// that is already open needs only the code.
    #[arg(long, env = "CONVEY_RELAY_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: Option<AccessToken>,

    /// Largest rendezvous WebSocket message (and frame) accepted, in bytes.
    #[arg(long, env = "CONVEY_RELAY_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Tracker announce interval handed to peers, in seconds.
    #[arg(long, env = "CONVEY_RELAY_ANNOUNCE_INTERVAL", default_value_t = DEFAULT_ANNOUNCE_INTERVAL_SECS)]
    pub announce_interval_secs: u64,

    /// Most peers handed out in one tracker reply, whatever `numwant` asks for.
    #[arg(long, env = "CONVEY_RELAY_TRACKER_MAX_NUMWANT", default_value_t = DEFAULT_TRACKER_MAX_NUMWANT)]
    pub tracker_max_numwant: usize,

    /// Serve any info-hash, not only those of transfers on this relay: a general tracker
    /// for your own network. Off by default.
    #[arg(long, env = "CONVEY_RELAY_OPEN_TRACKER")]
    pub open_tracker: bool,

    /// Bytes one transfer may move through the WebSocket tunnel (both directions).
    #[arg(long, env = "CONVEY_RELAY_TUNNEL_MAX_BYTES", default_value_t = DEFAULT_TUNNEL_MAX_BYTES)]
    pub tunnel_max_bytes: u64,

    /// Seconds one transfer may use the WebSocket tunnel.
    #[arg(long, env = "CONVEY_RELAY_TUNNEL_MAX_SECS", default_value_t = DEFAULT_TUNNEL_MAX_SECS)]
    pub tunnel_max_secs: u64,

    /// Seconds one end of a tunnel waits for the other end.
    #[arg(long, env = "CONVEY_RELAY_TUNNEL_WAIT_SECS", default_value_t = DEFAULT_TUNNEL_WAIT_SECS)]
    pub tunnel_wait_secs: u64,

    /// UDP address of the STUN service WebRTC peers use to learn their public address, or
    /// `off`.
    #[arg(long, env = "CONVEY_RELAY_STUN_LISTEN", default_value = DEFAULT_STUN_LISTEN, value_parser = parse_stun)]
    pub stun_listen: StunListen,

    /// Keep nameplates and tracker swarms in this Redis (`redis://host:6379/0`), so several
    /// relay instances behind one load balancer pair sides that reach different instances.
    /// Without it, state is in this process.
    #[arg(long, env = "CONVEY_RELAY_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// Log lines as `text` (key=value fields) or `json` (one object a line, for log
    /// collectors). Logs never carry a code's words, a key or a token.
    #[arg(long, env = "CONVEY_RELAY_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Seconds running transfers get to finish after SIGTERM before they are cut.
    #[arg(long, env = "CONVEY_RELAY_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,
}

impl Config {
    /// A config listening on `addr` with every other setting at its default.
    pub fn with_listen(listen: SocketAddr) -> Self {
        Self {
            config: None,
            listen,
            nameplate_ttl_secs: DEFAULT_NAMEPLATE_TTL_SECS,
            idle_secs: DEFAULT_IDLE_SECS,
            max_nameplates: DEFAULT_MAX_NAMEPLATES,
            random_nameplates: false,
            rate_per_minute: DEFAULT_RATE_PER_MINUTE,
            rate_burst: DEFAULT_RATE_BURST,
            trust_forwarded_for: false,
            access_token: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            announce_interval_secs: DEFAULT_ANNOUNCE_INTERVAL_SECS,
            tracker_max_numwant: DEFAULT_TRACKER_MAX_NUMWANT,
            open_tracker: false,
            tunnel_max_bytes: DEFAULT_TUNNEL_MAX_BYTES,
            tunnel_max_secs: DEFAULT_TUNNEL_MAX_SECS,
            tunnel_wait_secs: DEFAULT_TUNNEL_WAIT_SECS,
            stun_listen: StunListen(None),
            redis_url: None,
            log_format: LogFormat::Text,
            shutdown_grace_secs: DEFAULT_SHUTDOWN_GRACE_SECS,
        }
    }

    pub fn nameplate_ttl(&self) -> Duration {
        Duration::from_secs(self.nameplate_ttl_secs)
    }

    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_secs.max(1))
    }

    pub fn announce_interval(&self) -> Duration {
        Duration::from_secs(self.announce_interval_secs.max(1))
    }
}

/// How the relay binary writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
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
