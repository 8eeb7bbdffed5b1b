//! Abuse limits that more than one endpoint applies: who the client is (its IP address,
//! behind a trusted proxy too), the per-IP rate of new codes, and the private relay's
//! access token.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    time::Duration,
};

use axum::http::{HeaderMap, header};
use convey_shared::protocol::tunnel::ACCESS_TOKEN_PROTOCOL;
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Keys of idle addresses are dropped once the limiter holds this many.
const PRUNE_ABOVE: usize = 10_000;

/// The secret that makes a relay private, kept as its SHA-256 (computed once). Its
/// `Debug` never shows it.
#[derive(Clone)]
pub struct AccessToken([u8; 32]);

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

impl std::str::FromStr for AccessToken {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.len() < 16 {
            return Err("an access token needs at least 16 characters".into());
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("an access token is printable ASCII without spaces".into());
        }
        Ok(Self(Sha256::digest(s.as_bytes()).into()))
    }
}

impl AccessToken {
    /// Whether the request carries `Authorization: Bearer <this token>`, or (from a browser)
    /// the token as a WebSocket sub-protocol ([`ACCESS_TOKEN_PROTOCOL`] and its hex);
    /// compared in constant time.
    pub(crate) fn admits(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| t.as_bytes().to_vec());
        let offered = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|p| p.trim().strip_prefix(ACCESS_TOKEN_PROTOCOL))
            .filter_map(|h| hex::decode(h).ok());
        bearer
            .into_iter()
            .chain(offered)
            .any(|t| bool::from(Sha256::digest(&t).ct_eq(&self.0)))
    }
}

/// The client's address: the TCP peer, or the last `X-Forwarded-For` entry when the relay
/// sits behind a proxy it trusts to write that header.
pub(crate) fn client_ip(peer: SocketAddr, headers: &HeaderMap, trust_forwarded_for: bool) -> IpAddr {
    let last = headers.get_all("x-forwarded-for").iter().next_back();
    client_ip_from(peer, last.map(|v| v.as_bytes()), trust_forwarded_for)
}

/// [`client_ip`], given the value of the last `X-Forwarded-For` header, if any.
pub(crate) fn client_ip_from(
    peer: SocketAddr,
    forwarded_for: Option<&[u8]>,
    trust_forwarded_for: bool,
) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then_some(forwarded_for)
        .flatten()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    let ip = forwarded.unwrap_or(peer.ip());
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// How many new codes each IP address may open.
#[derive(Debug)]
pub(crate) struct CodeRate {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl CodeRate {
    /// `per_minute` 0 means no limit.
    pub(crate) fn new(per_minute: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_minute).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            DefaultKeyedRateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
        });
        Self { limiter }
    }

    /// `Err(wait)` when `ip` must wait before opening another code.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(governor::clock::DefaultClock::default().now()))
    }

    /// Forget addresses whose allowance is full again, once there are many.
    pub(crate) fn prune(&self) {
        if let Some(l) = &self.limiter
            && l.len() > PRUNE_ABOVE
        {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_checked_and_never_shown() {
        let t: AccessToken = "correct-horse-battery".parse().unwrap();
        assert_eq!(format!("{t:?}"), "AccessToken(<redacted>)");
        let mut h = HeaderMap::new();
        assert!(!t.admits(&h));
        h.insert(
            header::AUTHORIZATION,
            "Bearer correct-horse-battery".parse().unwrap(),
        );
        assert!(t.admits(&h));
        h.insert(
            header::AUTHORIZATION,
            "Bearer correct-horse-batterz".parse().unwrap(),
        );
        assert!(!t.admits(&h));
        assert!("short".parse::<AccessToken>().is_err());
        // From a browser: the token, in hex, as a WebSocket sub-protocol.
        let mut h = HeaderMap::new();
        let offered = format!(
            "convey-v1, {ACCESS_TOKEN_PROTOCOL}{}",
            hex::encode("correct-horse-battery")
        );
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, offered.parse().unwrap());
        assert!(t.admits(&h));
        let wrong = format!("{ACCESS_TOKEN_PROTOCOL}{}", hex::encode("correct-horse-batterz"));
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, wrong.parse().unwrap());
        assert!(!t.admits(&h));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            format!("{ACCESS_TOKEN_PROTOCOL}not-hex").parse().unwrap(),
        );
        assert!(!t.admits(&h));
    }

    #[test]
    fn forwarded_for_only_when_trusted() {
        let peer = SocketAddr::from(([10, 0, 0, 1], 5));
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4, 5.6.7.8".parse().unwrap());
        assert_eq!(client_ip(peer, &h, false), peer.ip());
        assert_eq!(client_ip(peer, &h, true), "5.6.7.8".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn rate_limits_per_address() {
        let r = CodeRate::new(1, 2);
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(r.check(a).is_ok() && r.check(a).is_ok());
        let wait = r.check(a).unwrap_err();
        assert!(wait > Duration::from_secs(50), "{wait:?}");
        assert!(r.check(b).is_ok(), "another address has its own allowance");
        assert!(CodeRate::new(0, 0).check(a).is_ok());
    }
}
