//! Finding a sender on the local network. A sender's embedded relay advertises itself with
//! DNS-SD over multicast DNS (`_convey._tcp`): its port, the nameplate it holds and the
//! protocol, under a random instance and host name; never the words, never this machine's
//! host name. A receiver with no relay configured asks the relay on this machine and looks
//! on the LAN at the same time, and takes the one relay that holds its code's nameplate.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use convey_shared::{
    Nameplate,
    protocol::{NAMEPLATES_PATH, ProtocolVersion},
};
use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Error, RelayAddr, embedded, error::Result};

/// The DNS-SD service type convey's relays advertise.
pub const SERVICE_TYPE: &str = "_convey._tcp.local.";
/// How long a receiver looks on the LAN before it gives up.
pub const LOOK_FOR: Duration = Duration::from_secs(3);
/// After a first sender with the nameplate turned up, how long to listen for a second one.
const SETTLE: Duration = Duration::from_millis(500);
/// TXT keys: the nameplate held, and the protocol spoken.
const KEY_NAMEPLATE: &str = "np";
const KEY_PROTOCOL: &str = "proto";

/// A relay advertised on the LAN until [`Advertisement::stop`].
pub struct Advertisement {
    daemon: ServiceDaemon,
    fullname: String,
}

impl std::fmt::Debug for Advertisement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertisement")
            .field("fullname", &self.fullname)
            .finish_non_exhaustive()
    }
}

fn mdns_error(e: mdns_sd::Error) -> Error {
    Error::Io {
        context: "multicast DNS".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl Advertisement {
    /// Advertise the relay on `port` holding `nameplate`, on every interface's addresses.
    pub fn start(port: u16, nameplate: Nameplate) -> Result<Self> {
        let daemon = ServiceDaemon::new().map_err(mdns_error)?;
        let id = hex::encode(rand::random::<[u8; 6]>());
        let instance = format!("convey-{id}");
        let properties = [
            (KEY_NAMEPLATE, nameplate.0.to_string()),
            (KEY_PROTOCOL, ProtocolVersion::V1.subprotocol().to_owned()),
        ];
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &instance,
            &format!("{instance}.local."),
            "",
            port,
            &properties[..],
        )
        .map_err(mdns_error)?
        .enable_addr_auto();
        let fullname = info.get_fullname().to_owned();
        daemon.register(info).map_err(mdns_error)?;
        Ok(Self { daemon, fullname })
    }

    /// Stop advertising (the nameplate is taken); the responder stays until [`Self::stop`].
    pub fn withdraw(&self) {
        let _ = self.daemon.unregister(&self.fullname);
    }

    /// Say goodbye on the LAN (bounded) and stop the responder.
    pub async fn stop(self) {
        if let Ok(status) = self.daemon.unregister(&self.fullname) {
            let _ = tokio::time::timeout(Duration::from_secs(1), status.recv_async()).await;
        }
        if let Ok(status) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(Duration::from_secs(1), status.recv_async()).await;
        }
    }
}

/// What the relay on this machine's default port says of a nameplate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Local {
    /// A sender waits there: take it.
    Waiting,
    /// A relay answers but no sender waits (yet).
    Present,
    /// Nothing there.
    Absent,
}

/// Ask the relay at `addr` whether a sender waits on `nameplate` (bounded).
async fn ask_local(addr: SocketAddr, nameplate: Nameplate) -> Local {
    let asked = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!(
            "GET {NAMEPLATES_PATH}/{} HTTP/1.0\r\nHost: {addr}\r\n\r\n",
            nameplate.0
        );
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut reply = Vec::new();
        conn.take(4096).read_to_end(&mut reply).await.ok()?;
        let text = String::from_utf8_lossy(&reply);
        Some(
            if text.starts_with("HTTP/1.1 200") && text.contains("\"waiting\":true") {
                Local::Waiting
            } else {
                Local::Present
            },
        )
    };
    tokio::time::timeout(Duration::from_secs(1), asked)
        .await
        .ok()
        .flatten()
        .unwrap_or(Local::Absent)
}

/// The address to reach an advertised relay at: an IPv4 address first, then a global IPv6
/// one; never loopback or link-local (which would need a scope).
fn reachable(ips: impl Iterator<Item = IpAddr>, port: u16) -> Option<SocketAddr> {
    let mut ips: Vec<IpAddr> = ips
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified() && !v4.is_link_local(),
            IpAddr::V6(v6) => !v6.is_loopback() && !v6.is_unspecified() && !v6.is_unicast_link_local(),
        })
        .collect();
    ips.sort_by_key(|ip| (ip.is_ipv6(), *ip));
    ips.first().map(|ip| SocketAddr::new(*ip, port))
}

/// Relays on the LAN that advertise `nameplate`, by instance, looked for at most `window`
/// (and [`SETTLE`] more after the first, to see a second one holding the same number).
async fn browse(nameplate: Nameplate, window: Duration) -> Result<HashMap<String, SocketAddr>> {
    let daemon = ServiceDaemon::new().map_err(mdns_error)?;
    let events = daemon.browse(SERVICE_TYPE).map_err(mdns_error)?;
    let wanted = nameplate.0.to_string();
    let mut found = HashMap::new();
    let mut deadline = tokio::time::Instant::now() + window;
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.recv_async()).await {
        let ServiceEvent::ServiceResolved(service) = event else {
            continue;
        };
        let holds = service.txt_properties.get_property_val_str(KEY_NAMEPLATE) == Some(wanted.as_str())
            && service.txt_properties.get_property_val_str(KEY_PROTOCOL)
                == Some(ProtocolVersion::V1.subprotocol());
        let addr = reachable(service.addresses.iter().map(|a| a.to_ip_addr()), service.port);
        if let (true, Some(addr)) = (holds, addr)
            && found.insert(service.fullname.clone(), addr).is_none()
            && found.len() == 1
        {
            deadline = deadline.min(tokio::time::Instant::now() + SETTLE);
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    if let Ok(status) = daemon.shutdown() {
        let _ = tokio::time::timeout(Duration::from_secs(1), status.recv_async()).await;
    }
    Ok(found)
}

/// The relay to use for `nameplate` when none is configured: the relay on this machine's
/// default port if a sender waits there, else the one relay on the LAN that advertises the
/// nameplate (looked for during `window`; `None` skips the LAN), else this machine's relay
/// if one answers (the sender may come later). Two on the LAN with the nameplate, or none
/// anywhere, is an error that names `--relay`.
pub async fn locate(nameplate: Nameplate, window: Option<Duration>) -> Result<RelayAddr> {
    let Some(window) = window else {
        return Ok(embedded::default_relay());
    };
    let asked = ask_local(embedded::DEFAULT_LOCAL, nameplate);
    let looked = browse(nameplate, window);
    tokio::pin!(asked, looked);
    let (here, lan) = tokio::select! {
        // A sender waiting here needs no look on the LAN.
        here = &mut asked => match here {
            Local::Waiting => (here, Ok(HashMap::new())),
            _ => (here, looked.await),
        },
        lan = &mut looked => (asked.await, lan),
    };
    if here == Local::Waiting {
        return Ok(embedded::default_relay());
    }
    let lan = lan.unwrap_or_else(|err| {
        tracing::debug!(%err, "cannot look on the local network");
        HashMap::new()
    });
    let mut relays: Vec<SocketAddr> = lan.into_values().collect();
    match relays.len() {
        1 => Ok(RelayAddr::from_socket(relays.remove(0))),
        0 if here == Local::Present => Ok(embedded::default_relay()),
        0 => Err(Error::NotFound(format!(
            "no sender with code number {nameplate} was found on the local network (looked {}s) or on this machine; run `convey receive --relay HOST:PORT CODE` with the address the sender printed",
            window.as_secs()
        ))),
        n => Err(Error::NotFound(format!(
            "{n} senders on the local network hold code number {nameplate}, so convey will not guess (a wrong try burns the sender's code); run `convey receive --relay HOST:PORT CODE` with the address the sender printed"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_a_reachable_address() {
        let ips: Vec<IpAddr> = ["127.0.0.1", "fe80::1", "2001:db8::5", "198.18.0.9", "0.0.0.0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            reachable(ips.iter().copied(), 9),
            Some("198.18.0.9:9".parse().unwrap())
        );
        assert_eq!(
            reachable(ips[..3].iter().copied(), 9),
            Some("[2001:db8::5]:9".parse().unwrap())
        );
        assert_eq!(reachable(ips[..2].iter().copied(), 9), None);
    }
}
