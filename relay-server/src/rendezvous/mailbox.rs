//! The nameplate store: which connections sit on which nameplate, and the messages waiting
//! for a side that has not arrived yet. A nameplate holds at most two sides, and once two
//! sides have met it is burned: nobody else can claim it until both have left.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use convey_shared::{
    Nameplate,
    protocol::{
        MAX_QUEUED_MESSAGES,
        rendezvous::{Mood, ServerMsg},
    },
};
use tokio::sync::mpsc;

/// Identifies one WebSocket connection.
pub(crate) type ConnId = u64;

/// Why a claim or message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MailboxError {
    #[error("this code is already in use by two other parties; ask the sender for a new code")]
    InUse,
    #[error("the relay has no free codes right now; try again in a minute")]
    Exhausted,
    #[error("too many undelivered messages for the other side")]
    Backlog,
    #[error(
        "this relay is private: opening a code needs its access token (--relay-token or CONVEY_RELAY_TOKEN); ask the relay's operator, or join a code someone with the token opened"
    )]
    Unauthorized,
    #[error("the relay cannot reach its shared store; try again in a minute")]
    Unavailable,
}

impl MailboxError {
    /// Label for the rejection metric.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::InUse => "code_in_use",
            Self::Exhausted => "nameplates_exhausted",
            Self::Backlog => "message_backlog",
            Self::Unauthorized => "unauthorized",
            Self::Unavailable => "store_unavailable",
        }
    }
}

#[derive(Debug)]
struct Member {
    conn: ConnId,
    tx: mpsc::Sender<ServerMsg>,
}

#[derive(Debug, Default)]
struct Slot {
    sides: Vec<Member>,
    /// Two sides have met here; no more claims.
    burned: bool,
    /// Bodies sent before the other side arrived.
    pending: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct Mailboxes {
    slots: Mutex<HashMap<Nameplate, Slot>>,
    max: usize,
    /// Hand out random numbers from [`RANDOM_NAMEPLATES`] instead of the lowest free one.
    random: bool,
}

/// Where random nameplates come from: still short, and two relays on one LAN (embedded in
/// two senders) pick the same one with a chance of 1 in 990.
pub(crate) const RANDOM_NAMEPLATES: std::ops::RangeInclusive<u32> = 10..=999;

impl Mailboxes {
    pub(crate) fn new(max: usize, random: bool) -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
            max,
            random,
        }
    }

    /// Is a sender waiting on `n` for its other side (so a receiver may claim it)?
    pub(crate) fn is_waiting(&self, n: Nameplate) -> bool {
        self.lock()
            .get(&n)
            .is_some_and(|s| !s.burned && s.sides.len() == 1)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Nameplate, Slot>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim the lowest free nameplate (short codes) for `conn`.
    pub(crate) fn allocate(
        &self,
        conn: ConnId,
        tx: mpsc::Sender<ServerMsg>,
    ) -> Result<Nameplate, MailboxError> {
        let mut slots = self.lock();
        if slots.len() >= self.max {
            return Err(MailboxError::Exhausted);
        }
        let random = self.random.then(|| {
            use rand::Rng;
            let mut rng = rand::thread_rng();
            (0..64)
                .map(|_| Nameplate(rng.gen_range(RANDOM_NAMEPLATES)))
                .find(|n| !slots.contains_key(n))
        });
        let first_free = if self.random {
            *RANDOM_NAMEPLATES.end() + 1
        } else {
            1
        };
        let n = random.flatten().unwrap_or_else(|| {
            (first_free..)
                .map(Nameplate)
                .find(|n| !slots.contains_key(n))
                .expect("fewer than u32::MAX slots are open")
        });
        slots.insert(
            n,
            Slot {
                sides: vec![Member { conn, tx }],
                ..Slot::default()
            },
        );
        Ok(n)
    }

    /// Claim `n`; returns whether the other side was already there. Wakes that side up and
    /// hands the newcomer whatever it was sent before arriving. Without `may_open`, only a
    /// nameplate someone is already waiting on can be claimed (a private relay's rule).
    pub(crate) fn claim(
        &self,
        n: Nameplate,
        conn: ConnId,
        tx: mpsc::Sender<ServerMsg>,
        may_open: bool,
    ) -> Result<bool, MailboxError> {
        let mut slots = self.lock();
        if !may_open && slots.get(&n).is_none_or(|s| s.sides.is_empty()) {
            return Err(MailboxError::Unauthorized);
        }
        if !slots.contains_key(&n) && slots.len() >= self.max {
            return Err(MailboxError::Exhausted);
        }
        let slot = slots.entry(n).or_default();
        if slot.burned || slot.sides.len() >= 2 {
            return Err(MailboxError::InUse);
        }
        let peer_present = !slot.sides.is_empty();
        if peer_present {
            slot.burned = true;
            for m in &slot.sides {
                let _ = m.tx.try_send(ServerMsg::PeerJoined);
            }
            for body in slot.pending.drain(..) {
                let _ = tx.try_send(ServerMsg::Message { body });
            }
        }
        slot.sides.push(Member { conn, tx });
        Ok(peer_present)
    }

    /// Deliver `body` from `conn` to the other side, or keep it until that side arrives.
    pub(crate) fn send(&self, n: Nameplate, conn: ConnId, body: String) -> Result<(), MailboxError> {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(&n) else {
            return Ok(());
        };
        match slot.sides.iter().find(|m| m.conn != conn) {
            Some(other) => other
                .tx
                .try_send(ServerMsg::Message { body })
                .map_err(|_| MailboxError::Backlog),
            None if slot.burned => Ok(()), // the other side already left; it is told via PeerLeft
            None if slot.pending.len() >= MAX_QUEUED_MESSAGES => Err(MailboxError::Backlog),
            None => {
                slot.pending.push(body);
                Ok(())
            }
        }
    }

    /// `conn` left `n`: tell the other side, and free the nameplate once both are gone.
    pub(crate) fn leave(&self, n: Nameplate, conn: ConnId, mood: Option<Mood>) {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(&n) else {
            return;
        };
        slot.sides.retain(|m| m.conn != conn);
        for m in &slot.sides {
            let _ = m.tx.try_send(ServerMsg::PeerLeft { mood });
        }
        if slot.sides.is_empty() {
            slots.remove(&n);
        }
    }

    /// Open nameplates.
    pub(crate) fn open_count(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chan() -> (mpsc::Sender<ServerMsg>, mpsc::Receiver<ServerMsg>) {
        mpsc::channel(8)
    }

    #[test]
    fn pairs_two_refuses_third_and_frees_after_both_leave() {
        let mb = Mailboxes::new(10, false);
        let (t1, mut r1) = chan();
        let (t2, mut r2) = chan();
        let n = mb.allocate(1, t1).unwrap();
        assert_eq!(n, Nameplate(1));
        mb.send(n, 1, "early".into()).unwrap();
        assert!(mb.claim(n, 2, t2, true).unwrap());
        assert_eq!(r1.try_recv().unwrap(), ServerMsg::PeerJoined);
        assert_eq!(
            r2.try_recv().unwrap(),
            ServerMsg::Message { body: "early".into() }
        );
        assert_eq!(mb.claim(n, 3, chan().0, true), Err(MailboxError::InUse));
        mb.leave(n, 1, Some(Mood::Scary));
        assert_eq!(
            r2.try_recv().unwrap(),
            ServerMsg::PeerLeft {
                mood: Some(Mood::Scary)
            }
        );
        assert_eq!(
            mb.claim(n, 4, chan().0, true),
            Err(MailboxError::InUse),
            "burned until empty"
        );
        mb.leave(n, 2, None);
        assert_eq!(mb.open_count(), 0);
        assert_eq!(
            mb.allocate(5, chan().0).unwrap(),
            Nameplate(1),
            "reusable once free"
        );
    }

    #[test]
    fn without_the_token_only_a_waiting_nameplate_can_be_joined() {
        let mb = Mailboxes::new(10, false);
        assert_eq!(
            mb.claim(Nameplate(4), 1, chan().0, false),
            Err(MailboxError::Unauthorized)
        );
        let n = mb.allocate(2, chan().0).unwrap();
        assert_eq!(mb.claim(n, 3, chan().0, false), Ok(true));
    }

    #[test]
    fn allocation_never_hands_out_a_number_in_use() {
        let mb = Mailboxes::new(3, false);
        let a = mb.allocate(1, chan().0).unwrap();
        let b = mb.allocate(2, chan().0).unwrap();
        mb.claim(Nameplate(3), 3, chan().0, true).unwrap();
        assert_ne!(a, b);
        assert_eq!(mb.allocate(4, chan().0), Err(MailboxError::Exhausted));
    }

    /// Random nameplates stay in their short range, never repeat a number in use, and say
    /// whether a sender waits on them.
    #[test]
    fn random_allocation_and_waiting() {
        let mb = Mailboxes::new(2000, true);
        let mut seen = std::collections::HashSet::new();
        for conn in 0..200 {
            let n = mb.allocate(conn, chan().0).unwrap();
            assert!(RANDOM_NAMEPLATES.contains(&n.0), "{n}");
            assert!(seen.insert(n), "{n} handed out twice");
        }
        let n = *seen.iter().next().unwrap();
        assert!(mb.is_waiting(n));
        mb.claim(n, 999, chan().0, true).unwrap();
        assert!(!mb.is_waiting(n), "paired: nobody waits any more");
        assert!(!mb.is_waiting(Nameplate(5)));
    }
}
