//! Where the tracker's swarms live: in this process ([`Swarms`]), or in Redis shared by
//! several instances ([`Shared`]), so an announce reaching any instance sees every peer.

use std::{sync::Arc, time::Duration};

use super::{
    InfoHash, PeerId,
    swarm::{Announce, AnnounceOutcome, MAX_OPEN_SWARMS, Refusal, SwarmStats, Swarms},
};
use crate::shared::{RedisAnnounce, Shared};

#[derive(Debug)]
pub(crate) enum SwarmStore {
    Memory(Swarms),
    Shared { store: Arc<Shared>, open: bool },
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SwarmStore {
    /// Connection `conn` serves `h`.
    pub(crate) async fn register(&self, h: InfoHash, conn: u64) {
        match self {
            Self::Memory(s) => s.register(h),
            Self::Shared { .. } => self.refresh(h, conn).await,
        }
    }

    /// Connection `conn`, which registered `h`, is alive (only the shared record expires).
    pub(crate) async fn refresh(&self, h: InfoHash, conn: u64) {
        if let Self::Shared { store, .. } = self
            && let Err(e) = store.register(&h.0, conn, true).await
        {
            tracing::error!(%e, "shared store");
        }
    }

    pub(crate) async fn unregister(&self, h: InfoHash, conn: u64) {
        match self {
            Self::Memory(s) => s.unregister(h),
            Self::Shared { store, .. } => {
                if let Err(e) = store.register(&h.0, conn, false).await {
                    tracing::error!(%e, "shared store");
                }
            }
        }
    }

    pub(crate) async fn announce(
        &self,
        a: &Announce,
        stale_after: Duration,
    ) -> Result<AnnounceOutcome, Refusal> {
        let (store, open) = match self {
            Self::Memory(s) => return s.announce(a, stale_after),
            Self::Shared { store, open } => (store, *open),
        };
        let req = RedisAnnounce {
            info_hash: &a.info_hash.0,
            peer_id: &a.peer_id.0,
            addr: a.addr,
            seeding: a.left == 0,
            stopped: a.stopped,
            completed: a.completed,
            numwant: a.numwant,
            stale_ms: millis(stale_after),
            open,
            max_swarms: MAX_OPEN_SWARMS,
        };
        match store.announce(&req).await {
            Ok(Ok((peers, complete, incomplete))) => Ok(AnnounceOutcome {
                peers: peers.into_iter().map(|(id, addr)| (PeerId(id), addr)).collect(),
                stats: SwarmStats {
                    complete,
                    incomplete,
                    downloaded: 0,
                },
            }),
            Ok(Err("full")) => Err(Refusal::Full),
            Ok(Err(_)) => Err(Refusal::Unregistered),
            Err(e) => {
                tracing::error!(%e, "shared store");
                Err(Refusal::Unavailable)
            }
        }
    }

    pub(crate) async fn scrape(
        &self,
        hashes: &[InfoHash],
        stale_after: Duration,
    ) -> Vec<(InfoHash, SwarmStats)> {
        let store = match self {
            Self::Memory(s) => return s.scrape(hashes),
            Self::Shared { store, .. } => store,
        };
        let mut out = Vec::new();
        for h in hashes {
            match store.scrape(&h.0, millis(stale_after)).await {
                Ok(Some((complete, downloaded, incomplete))) => out.push((
                    *h,
                    SwarmStats {
                        complete,
                        incomplete,
                        downloaded,
                    },
                )),
                Ok(None) => {}
                Err(e) => tracing::error!(%e, "shared store"),
            }
        }
        out
    }

    /// Swarms served, and the peers in them when known (not counted in the shared store).
    pub(crate) async fn counts(&self) -> (usize, Option<usize>) {
        match self {
            Self::Memory(s) => {
                let (swarms, peers) = s.counts();
                (swarms, Some(peers))
            }
            Self::Shared { store, .. } => (store.counts().await.map(|(_, s)| s).unwrap_or(0), None),
        }
    }

    /// Drop stale peers (the shared store expires them itself).
    pub(crate) fn prune(&self, stale_after: Duration) {
        if let Self::Memory(s) = self {
            s.prune(stale_after);
        }
    }
}
