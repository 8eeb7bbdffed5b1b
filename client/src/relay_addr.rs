//! Where the relay is: `HOST:PORT` or `http(s)://HOST:PORT[/prefix]`, turned into the
//! rendezvous WebSocket URL and the tracker announce URL.

use std::{fmt, str::FromStr};

use convey_shared::protocol::{ANNOUNCE_PATH, RENDEZVOUS_PATH};

/// A relay base address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayAddr {
    secure: bool,
    /// `host:port`, IPv6 hosts in brackets.
    authority: String,
    /// Path prefix without a trailing slash (for relays behind a reverse proxy).
    prefix: String,
    /// A private relay's access token, presented when opening a code or a tunnel.
    token: Option<RelayToken>,
    /// A CA certificate (PEM) to trust for an `https://` relay, beyond the system's roots.
    ca: Option<std::path::PathBuf>,
}

/// A private relay's access token. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
struct RelayToken(String);

impl fmt::Debug for RelayToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RelayToken(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid relay address {0:?}: use HOST:PORT or http(s)://HOST:PORT")]
pub struct ParseRelayError(String);

impl FromStr for RelayAddr {
    type Err = ParseRelayError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseRelayError(s.to_owned());
        let (secure, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if s.contains("://") {
            return Err(err());
        } else {
            (false, s)
        };
        let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let has_port = authority.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p != 0)
                && (!host.contains(':') || host.ends_with(']'))
        });
        let authority = match (has_port, secure) {
            (true, _) => authority.to_owned(),
            (false, true) if !authority.is_empty() && !authority.contains(':') => format!("{authority}:443"),
            (false, false) if rest.len() != s.len() && !authority.is_empty() && !authority.contains(':') => {
                format!("{authority}:80")
            }
            _ => return Err(err()),
        };
        if authority.chars().any(|c| c.is_whitespace() || c == '@') {
            return Err(err());
        }
        Ok(Self {
            secure,
            authority,
            prefix: format!("/{}", prefix.trim_matches('/'))
                .trim_end_matches('/')
                .to_owned(),
            token: None,
            ca: None,
        })
    }
}

impl RelayAddr {
    pub fn from_socket(addr: std::net::SocketAddr) -> Self {
        Self {
            secure: false,
            authority: addr.to_string(),
            prefix: String::new(),
            token: None,
            ca: None,
        }
    }

    /// This relay, trusting `ca` (a PEM file) for its TLS certificate too.
    pub fn with_ca(mut self, ca: Option<std::path::PathBuf>) -> Self {
        self.ca = ca;
        self
    }

    /// How to connect to this relay's WebSocket endpoints.
    pub(crate) fn connector(&self) -> crate::error::Result<tokio_tungstenite::Connector> {
        crate::tls::connector(self.secure, self.ca.as_deref())
    }

    /// This relay, reached with a private relay's access token.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty()).map(RelayToken);
        self
    }

    /// The `Authorization` header value for the access token, if one is set.
    pub(crate) fn authorization(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {}", t.0))
    }

    /// The host part of the address (for the relay's STUN service).
    pub fn host(&self) -> &str {
        self.authority
            .rsplit_once(':')
            .map_or(self.authority.as_str(), |(host, _)| host)
    }

    /// The relay's page with `code` in the fragment (which browsers never send to a server).
    /// On a private relay too: joining a code a sender opened needs no access token.
    pub fn page_url(&self, code: &str) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}{}/#{code}", self.authority, self.prefix)
    }

    pub fn rendezvous_url(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!("{scheme}://{}{}{RENDEZVOUS_PATH}", self.authority, self.prefix)
    }

    /// The WebSocket tunnel endpoint for one end of one session.
    pub fn tunnel_url(&self, token: &str, side: convey_shared::protocol::tunnel::TunnelSide) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        format!(
            "{scheme}://{}{}{}/{token}/{}",
            self.authority,
            self.prefix,
            convey_shared::protocol::tunnel::TUNNEL_PATH,
            side.as_str()
        )
    }

    pub fn announce_url(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://{}{}{ANNOUNCE_PATH}", self.authority, self.prefix)
    }
}

impl fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secure || !self.prefix.is_empty() {
            let scheme = if self.secure { "https" } else { "http" };
            write!(f, "{scheme}://{}{}", self.authority, self.prefix)
        } else {
            f.write_str(&self.authority)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let r: RelayAddr = "127.0.0.1:4790".parse().unwrap();
        assert_eq!(r.rendezvous_url(), "ws://127.0.0.1:4790/v1/rendezvous");
        assert_eq!(r.announce_url(), "http://127.0.0.1:4790/announce");
        assert_eq!(r.to_string(), "127.0.0.1:4790");
        let r: RelayAddr = "https://relay.example.org/convey/".parse().unwrap();
        assert_eq!(
            r.rendezvous_url(),
            "wss://relay.example.org:443/convey/v1/rendezvous"
        );
        assert_eq!(r.to_string(), "https://relay.example.org:443/convey");
        let r: RelayAddr = "http://[::1]:9000".parse().unwrap();
        assert_eq!(r.announce_url(), "http://[::1]:9000/announce");
        let r = r.with_token(Some("s3cret-token-value".into()));
        assert!(
            !format!("{r:?}").contains("s3cret"),
            "the token never shows in Debug"
        );
        assert_eq!(r.authorization().as_deref(), Some("Bearer s3cret-token-value"));
    }

    #[test]
    fn refuses_nonsense() {
        for s in [
            "",
            "relay",
            "ftp://x:1",
            "host:0",
            "host:99999",
            "http://",
            "a b:1",
        ] {
            assert!(s.parse::<RelayAddr>().is_err(), "{s}");
        }
    }
}
