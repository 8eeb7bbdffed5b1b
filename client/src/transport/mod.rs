//! How the bytes get between the peers. BitTorrent's peer wire protocol (and the stream of a
//! pipe) runs unchanged over whichever byte stream the peers manage to open: a direct TCP
//! connection, a WebRTC data channel ([`rtc`]), or the relay's WebSocket tunnel. The receiver hands librqbit a local address
//! ([`select::PathSelector`]) behind which it opens the best path that works; the sender
//! keeps a tunnel end open towards its own listener ([`serve::TunnelServer`]).

pub mod rtc;
mod rtc_runtime;
pub mod select;
pub mod serve;
pub(crate) mod task;
pub mod tunnel;
mod tunnel_resume;

use std::str::FromStr;

/// Which paths a side may use (`--transport`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Direct first, then WebRTC, then the relay's tunnel, racing where it saves time.
    #[default]
    Auto,
    /// Only a direct TCP connection between the peers.
    Direct,
    /// Only a WebRTC data channel (UDP, NAT traversal with the relay's STUN).
    Webrtc,
    /// Only the relay's WebSocket tunnel.
    Relay,
}

impl Transport {
    /// Every choice, in the order `--help` names them.
    const ALL: [Self; 4] = [Self::Auto, Self::Direct, Self::Webrtc, Self::Relay];

    pub fn allows_direct(self) -> bool {
        matches!(self, Self::Auto | Self::Direct)
    }

    pub fn allows_relay(self) -> bool {
        matches!(self, Self::Auto | Self::Relay)
    }

    pub fn allows_webrtc(self) -> bool {
        matches!(self, Self::Auto | Self::Webrtc)
    }

    /// Its `--transport` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Direct => "direct",
            Self::Webrtc => "webrtc",
            Self::Relay => "relay",
        }
    }
}

impl FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("{s:?} is not a transport; use auto, direct, webrtc or relay"))
    }
}

/// This machine's loopback address for local listeners (the path selector, the sender's
/// own tunnel and channel ends): 127.0.0.1, or ::1 on a host whose loopback has no IPv4.
pub fn loopback() -> std::net::IpAddr {
    static LOOPBACK: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();
    *LOOPBACK.get_or_init(|| {
        let v4 = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        if std::net::UdpSocket::bind((v4, 0)).is_ok() {
            v4
        } else {
            std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        }
    })
}

/// Names of the paths, as shown in progress and `transport` events.
pub mod path {
    pub const DIRECT: &str = "direct";
    pub const WEBRTC: &str = "webrtc";
    pub const RELAY: &str = "relay";
}
