//! Wire formats: the rendezvous messages the relay understands, and the sealed messages
//! only the two peers can read. Versioned once, at connect time.

pub mod peer;
pub mod push;
pub mod rendezvous;
pub mod resume;
pub mod route;
pub mod stream;
pub mod tunnel;
pub mod tunnel_resume;

/// Protocol versions, offered as the WebSocket sub-protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolVersion {
    V1,
}

impl ProtocolVersion {
    pub const ALL: &'static [ProtocolVersion] = &[ProtocolVersion::V1];

    pub const fn subprotocol(self) -> &'static str {
        match self {
            Self::V1 => "convey-v1",
        }
    }

    pub fn from_subprotocol(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.subprotocol() == s.trim())
    }
}

/// Path of the rendezvous WebSocket on the relay.
pub const RENDEZVOUS_PATH: &str = "/v1/rendezvous";
/// Where a relay says whether a sender waits on a nameplate (`/v1/nameplates/7`).
pub const NAMEPLATES_PATH: &str = "/v1/nameplates";
/// Path of the bundled tracker.
pub const ANNOUNCE_PATH: &str = "/announce";
/// The bundled tracker's scrape path (BEP 48: announce with `scrape` in place of `announce`).
pub const SCRAPE_PATH: &str = "/scrape";
/// Largest rendezvous message either side may send (a torrent for a huge file fits).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Messages the relay queues for a side that has not read them yet.
pub const MAX_QUEUED_MESSAGES: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_versions_roundtrip() {
        // Adding a variant without listing it in ALL fails here.
        for v in ProtocolVersion::ALL {
            match v {
                ProtocolVersion::V1 => {}
            }
            assert_eq!(ProtocolVersion::from_subprotocol(v.subprotocol()), Some(*v));
        }
        assert_eq!(ProtocolVersion::from_subprotocol("convey-v0"), None);
    }
}
