//! Swarm state of the bundled tracker: which info-hashes it serves (registered by a live
//! sender session, or any in open-tracker mode) and which peers announced them recently.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use super::{InfoHash, PeerId};

/// Most swarms an open tracker keeps; announces for new hashes beyond it are refused.
pub(crate) const MAX_OPEN_SWARMS: usize = 100_000;

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
    /// Peers in `peers` that are seeding (kept in step, so no announce walks the swarm).
    seeders: usize,
    /// `completed` events seen (the scrape's `downloaded`).
    downloaded: u64,
}

impl Swarm {
    fn stats(&self) -> SwarmStats {
        SwarmStats {
            complete: self.seeders,
            incomplete: self.peers.len() - self.seeders,
            downloaded: self.downloaded,
        }
    }

    fn insert(&mut self, id: PeerId, peer: Peer) {
        self.seeders += usize::from(peer.seeding);
        if let Some(old) = self.peers.insert(id, peer) {
            self.seeders -= usize::from(old.seeding);
        }
    }

    fn remove(&mut self, id: &PeerId) {
        if let Some(old) = self.peers.remove(id) {
            self.seeders -= usize::from(old.seeding);
        }
    }

    fn prune(&mut self, now: Instant, stale_after: Duration) {
        let mut gone_seeders = 0;
        self.peers.retain(|_, p| {
            let keep = now.duration_since(p.seen) < stale_after;
            gone_seeders += usize::from(!keep && p.seeding);
            keep
        });
        self.seeders -= gone_seeders;
    }
}

/// Counts a tracker reports for one swarm.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SwarmStats {
    pub(crate) complete: usize,
    pub(crate) incomplete: usize,
    pub(crate) downloaded: u64,
}

/// Result of one announce.
#[derive(Debug, Default)]
pub(crate) struct AnnounceOutcome {
    pub(crate) peers: Vec<(PeerId, SocketAddr)>,
    pub(crate) stats: SwarmStats,
}

/// What an announcing peer says about itself.
#[derive(Debug)]
pub(crate) struct Announce {
    pub(crate) info_hash: InfoHash,
    pub(crate) peer_id: PeerId,
    pub(crate) addr: SocketAddr,
    pub(crate) left: u64,
    pub(crate) stopped: bool,
    pub(crate) completed: bool,
    pub(crate) numwant: usize,
}

/// Why an announce was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Unregistered,
    Full,
    /// The shared store did not answer.
    Unavailable,
}

#[derive(Debug)]
pub(crate) struct Swarms {
    inner: Mutex<HashMap<InfoHash, Swarm>>,
    /// Serve any info-hash, not only registered ones.
    open: bool,
}

impl Swarms {
    pub(crate) fn new(open: bool) -> Self {
        Self {
            inner: Mutex::default(),
            open,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<InfoHash, Swarm>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Swarms currently served, and the peers in them.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let swarms = self.lock();
        (swarms.len(), swarms.values().map(|s| s.peers.len()).sum())
    }

    pub(crate) fn register(&self, h: InfoHash) {
        self.lock().entry(h).or_default().registrations += 1;
    }

    pub(crate) fn unregister(&self, h: InfoHash) {
        let mut swarms = self.lock();
        if let Some(s) = swarms.get_mut(&h) {
            s.registrations = s.registrations.saturating_sub(1);
            // A swarm its peers still use stays until they stop or go stale: the members'
            // rendezvous connections end with the sender's, yet a latecomer that took the
            // offer must still find the receivers that hold the pieces.
            if s.registrations == 0 && s.peers.is_empty() {
                swarms.remove(&h);
            }
        }
    }

    /// Record the announce and pick up to `numwant` other peers. Peers silent for longer
    /// than `stale_after` are forgotten.
    pub(crate) fn announce(&self, a: &Announce, stale_after: Duration) -> Result<AnnounceOutcome, Refusal> {
        let mut swarms = self.lock();
        if !swarms.contains_key(&a.info_hash) {
            if !self.open {
                return Err(Refusal::Unregistered);
            }
            if a.stopped {
                return Ok(AnnounceOutcome::default());
            }
            if swarms.len() >= MAX_OPEN_SWARMS {
                return Err(Refusal::Full);
            }
        }
        let swarm = swarms.entry(a.info_hash).or_default();
        let now = Instant::now();
        if a.completed {
            swarm.downloaded += 1;
        }
        if a.stopped {
            swarm.remove(&a.peer_id);
            // The last peer of a swarm nobody registers any more stopped: forget it now,
            // as the Redis store does, rather than at the next prune.
            if !self.open && swarm.registrations == 0 && swarm.peers.is_empty() {
                swarms.remove(&a.info_hash);
                return Ok(AnnounceOutcome::default());
            }
        } else {
            let peer = Peer {
                addr: a.addr,
                seeding: a.left == 0,
                seen: now,
            };
            swarm.insert(a.peer_id, peer);
        }
        // Stale peers are dropped by `prune`; until then they are not handed out.
        Ok(AnnounceOutcome {
            peers: swarm
                .peers
                .iter()
                .filter(|(id, p)| **id != a.peer_id && now.duration_since(p.seen) < stale_after)
                .take(a.numwant)
                .map(|(id, p)| (*id, p.addr))
                .collect(),
            stats: swarm.stats(),
        })
    }

    /// Counts for each served hash among `hashes`; others are left out (BEP 48), so a
    /// scrape does not reveal more than an announce would.
    pub(crate) fn scrape(&self, hashes: &[InfoHash]) -> Vec<(InfoHash, SwarmStats)> {
        let swarms = self.lock();
        hashes
            .iter()
            .filter_map(|h| swarms.get(h).map(|s| (*h, s.stats())))
            .collect()
    }

    /// Forget peers silent for longer than `stale_after`, and open-tracker swarms left
    /// with nobody.
    pub(crate) fn prune(&self, stale_after: Duration) {
        let now = Instant::now();
        self.lock().retain(|_, s| {
            s.prune(now, stale_after);
            s.registrations > 0 || !s.peers.is_empty()
        });
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
            completed: false,
            numwant: 50,
        }
    }

    #[test]
    fn only_registered_swarms_and_stopped_peers_leave() {
        let s = Swarms::new(false);
        let ttl = Duration::from_secs(60);
        assert_eq!(
            s.announce(&ann(1, 1000, false), ttl).unwrap_err(),
            Refusal::Unregistered
        );
        s.register(InfoHash([1; 20]));
        assert!(s.announce(&ann(1, 1000, false), ttl).unwrap().peers.is_empty());
        let out = s.announce(&ann(2, 2000, false), ttl).unwrap();
        assert_eq!(
            out.peers,
            vec![(PeerId([1; 20]), SocketAddr::from(([127, 0, 0, 1], 1000)))]
        );
        assert_eq!((out.stats.complete, out.stats.incomplete), (1, 1));
        let mut done = ann(2, 2000, false);
        done.left = 0;
        let out = s.announce(&done, ttl).unwrap();
        assert_eq!(
            (out.stats.complete, out.stats.incomplete),
            (2, 0),
            "a leecher became a seeder"
        );
        s.announce(&ann(2, 2000, false), ttl).unwrap();
        s.announce(&ann(1, 1000, true), ttl).unwrap();
        assert!(s.announce(&ann(2, 2000, false), ttl).unwrap().peers.is_empty());
        s.unregister(InfoHash([1; 20]));
        s.announce(&ann(3, 3000, false), ttl)
            .expect("a swarm whose peers still announce outlives its registrations");
        s.announce(&ann(2, 2000, true), ttl).unwrap();
        s.announce(&ann(3, 3000, true), ttl).unwrap();
        assert_eq!(
            s.announce(&ann(2, 2000, false), ttl).unwrap_err(),
            Refusal::Unregistered,
            "once its last peer stopped, an unregistered swarm goes"
        );
    }

    #[test]
    fn an_unregistered_swarm_goes_when_its_peers_go_stale() {
        let s = Swarms::new(false);
        let ttl = Duration::from_secs(60);
        s.register(InfoHash([1; 20]));
        s.announce(&ann(2, 2000, false), ttl).unwrap();
        s.unregister(InfoHash([1; 20]));
        assert_eq!(s.counts(), (1, 1), "kept while its peer is fresh");
        s.prune(Duration::ZERO);
        assert_eq!(s.counts(), (0, 0));
        assert_eq!(
            s.announce(&ann(2, 2000, false), ttl).unwrap_err(),
            Refusal::Unregistered
        );
    }

    #[test]
    fn open_tracker_creates_and_prunes_swarms() {
        let s = Swarms::new(true);
        let mut a = ann(2, 2000, false);
        a.completed = true;
        s.announce(&a, Duration::from_secs(60)).unwrap();
        let stats = s.scrape(&[InfoHash([1; 20]), InfoHash([9; 20])]);
        assert_eq!(stats.len(), 1, "unknown hashes are left out");
        assert_eq!(stats[0].1.downloaded, 1);
        assert_eq!(s.counts(), (1, 1));
        s.prune(Duration::ZERO);
        assert_eq!(s.counts(), (0, 0), "a swarm with no live peer goes");
        assert_eq!(
            s.announce(&ann(3, 3000, true), Duration::from_secs(60))
                .unwrap()
                .peers
                .len(),
            0
        );
        assert_eq!(s.counts(), (0, 0), "a stopped event does not create a swarm");
    }
}
