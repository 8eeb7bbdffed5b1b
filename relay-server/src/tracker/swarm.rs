//! Swarm state of the bundled tracker: which info-hashes are registered by a live sender
//! session, and which peers announced them recently.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::{InfoHash, PeerId};

#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    seeding: bool,
    seen: Instant,
}

#[derive(Debug, Default)]
struct Swarm {
    /// Live rendezvous connections that registered this hash.
    registrations: usize,
    peers: HashMap<PeerId, Peer>,
}

/// Result of one announce.
#[derive(Debug, Default)]
pub(crate) struct AnnounceOutcome {
    pub(crate) peers: Vec<(PeerId, SocketAddr)>,
    pub(crate) complete: usize,
    pub(crate) incomplete: usize,
}

/// What an announcing peer says about itself.
#[derive(Debug)]
pub(crate) struct Announce {
    pub(crate) info_hash: InfoHash,
    pub(crate) peer_id: PeerId,
    pub(crate) addr: SocketAddr,
    pub(crate) left: u64,
    pub(crate) stopped: bool,
    pub(crate) numwant: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Swarms {
    inner: Mutex<HashMap<InfoHash, Swarm>>,
}

impl Swarms {
    fn lock(&self) -> MutexGuard<'_, HashMap<InfoHash, Swarm>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Swarms currently registered.
    pub(crate) fn count(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn register(&self, h: InfoHash) {
        self.lock().entry(h).or_default().registrations += 1;
    }

    pub(crate) fn unregister(&self, h: InfoHash) {
        let mut swarms = self.lock();
        if let Some(s) = swarms.get_mut(&h) {
            s.registrations = s.registrations.saturating_sub(1);
            if s.registrations == 0 {
                swarms.remove(&h);
            }
        }
    }

    /// Record the announce and pick up to `numwant` other peers, or `None` if the hash is
    /// not registered. Peers silent for longer than `stale_after` are forgotten.
    pub(crate) fn announce(&self, a: &Announce, stale_after: Duration) -> Option<AnnounceOutcome> {
        let mut swarms = self.lock();
        let swarm = swarms.get_mut(&a.info_hash)?;
        let now = Instant::now();
        swarm
            .peers
            .retain(|_, p| now.duration_since(p.seen) < stale_after);
        if a.stopped {
            swarm.peers.remove(&a.peer_id);
        } else {
            swarm.peers.insert(
                a.peer_id,
                Peer {
                    addr: a.addr,
                    seeding: a.left == 0,
                    seen: now,
                },
            );
        }
        let complete = swarm.peers.values().filter(|p| p.seeding).count();
        Some(AnnounceOutcome {
            peers: swarm
                .peers
                .iter()
                .filter(|(id, _)| **id != a.peer_id)
                .take(a.numwant)
                .map(|(id, p)| (*id, p.addr))
                .collect(),
            complete,
            incomplete: swarm.peers.len() - complete,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(peer: u8, port: u16, stopped: bool) -> Announce {
        Announce {
            info_hash: InfoHash([1; 20]),
            peer_id: PeerId([peer; 20]),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            left: if peer == 1 { 0 } else { 10 },
            stopped,
            numwant: 50,
        }
    }

    #[test]
    fn only_registered_swarms_and_stopped_peers_leave() {
        let s = Swarms::default();
        let ttl = Duration::from_secs(60);
        assert!(s.announce(&ann(1, 1000, false), ttl).is_none());
        s.register(InfoHash([1; 20]));
        assert!(s.announce(&ann(1, 1000, false), ttl).unwrap().peers.is_empty());
        let out = s.announce(&ann(2, 2000, false), ttl).unwrap();
        assert_eq!(
            out.peers,
            vec![(PeerId([1; 20]), SocketAddr::from(([127, 0, 0, 1], 1000)))]
        );
        assert_eq!((out.complete, out.incomplete), (1, 1));
        s.announce(&ann(1, 1000, true), ttl).unwrap();
        assert!(s.announce(&ann(2, 2000, false), ttl).unwrap().peers.is_empty());
        s.unregister(InfoHash([1; 20]));
        assert!(s.announce(&ann(2, 2000, false), ttl).is_none());
    }
}
