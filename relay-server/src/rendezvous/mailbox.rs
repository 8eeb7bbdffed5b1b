//! The nameplate store in this process: which connections sit on which nameplate, and who
//! is paired with whom. A nameplate has one host (the sender) and pairs each guest (a
//! receiver) with one host connection; messages go only between the two of a pair, never
//! between guests. A single-use nameplate is burned once its pair has met; a `many` one
//! takes new pairs until its host locks it.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, MutexGuard},
};

use convey_shared::{
    Nameplate,
    protocol::rendezvous::{Host, Mood, ServerMsg},
};
use tokio::sync::mpsc;

/// Identifies one WebSocket connection.
pub(crate) type ConnId = u64;

/// Why a claim or message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MailboxError {
    #[error(
        "this code is already in use by other parties, or its sender closed it to new receivers; ask the sender for a new code"
    )]
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

#[derive(Debug, Clone)]
struct Member {
    conn: ConnId,
    tx: mpsc::Sender<ServerMsg>,
}

/// One nameplate.
#[derive(Debug, Default)]
struct Slot {
    /// Set by the first host; later host connections must present it.
    secret: Option<String>,
    many: bool,
    /// No new pairs (a single-use nameplate after its pair met, or locked by its host).
    locked: bool,
    waiting_host: Option<Member>,
    waiting_guests: VecDeque<Member>,
    /// Every paired connection and its partner (`None` once the partner left).
    pairs: HashMap<ConnId, Option<Member>>,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.waiting_host.is_none() && self.waiting_guests.is_empty() && self.pairs.is_empty()
    }

    /// Pair `a` (already waiting) with `b` (arriving): tell `a`, and lock a single-use slot.
    fn pair(&mut self, a: Member, b: Member) {
        let _ = a.tx.try_send(ServerMsg::PeerJoined);
        self.pairs.insert(a.conn, Some(b.clone()));
        self.pairs.insert(b.conn, Some(a));
        if !self.many {
            self.locked = true;
        }
    }
}

/// Most guests that may wait on one nameplate for a host connection.
pub(crate) const MAX_WAITING_GUESTS: usize = 64;

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

    /// Is a sender waiting on `n` for a receiver (so a receiver may claim it)?
    pub(crate) fn is_waiting(&self, n: Nameplate) -> bool {
        self.lock()
            .get(&n)
            .is_some_and(|s| !s.locked && s.waiting_host.is_some())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Nameplate, Slot>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim a free nameplate (the lowest, or a random short one) for host `conn`.
    pub(crate) fn allocate(
        &self,
        conn: ConnId,
        tx: mpsc::Sender<ServerMsg>,
        host: &Host,
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
                secret: Some(host.secret.clone()),
                many: host.many,
                waiting_host: Some(Member { conn, tx }),
                ..Slot::default()
            },
        );
        Ok(n)
    }

    /// Claim `n`, as its host (`host`) or as a guest; returns whether this connection was
    /// paired at once (its partner is told with [`ServerMsg::PeerJoined`]). Without
    /// `may_open`, only a nameplate a host is already waiting on can be joined (a private
    /// relay's rule).
    pub(crate) fn claim(
        &self,
        n: Nameplate,
        conn: ConnId,
        tx: mpsc::Sender<ServerMsg>,
        may_open: bool,
        host: Option<&Host>,
    ) -> Result<bool, MailboxError> {
        let mut slots = self.lock();
        if !may_open
            && slots
                .get(&n)
                .is_none_or(|s| s.waiting_host.is_none() && s.pairs.is_empty())
        {
            return Err(MailboxError::Unauthorized);
        }
        if !slots.contains_key(&n) && slots.len() >= self.max {
            return Err(MailboxError::Exhausted);
        }
        let slot = slots.entry(n).or_default();
        if slot.locked {
            return Err(MailboxError::InUse);
        }
        let me = Member { conn, tx };
        match host {
            Some(h) => {
                match &slot.secret {
                    Some(s) if *s != h.secret || h.secret.is_empty() => return Err(MailboxError::InUse),
                    Some(_) => {}
                    None => {
                        slot.secret = Some(h.secret.clone());
                        slot.many = h.many;
                    }
                }
                if slot.waiting_host.is_some() {
                    return Err(MailboxError::InUse);
                }
                match slot.waiting_guests.pop_front() {
                    Some(guest) => {
                        slot.pair(guest, me);
                        Ok(true)
                    }
                    None => {
                        slot.waiting_host = Some(me);
                        Ok(false)
                    }
                }
            }
            None => match slot.waiting_host.take() {
                Some(h) => {
                    slot.pair(h, me);
                    Ok(true)
                }
                None if slot.waiting_guests.len() >= MAX_WAITING_GUESTS => Err(MailboxError::InUse),
                None => {
                    slot.waiting_guests.push_back(me);
                    Ok(false)
                }
            },
        }
    }

    /// Deliver `body` from `conn` to its partner. Dropped when `conn` is not paired or its
    /// partner left (it is told so with [`ServerMsg::PeerLeft`]).
    pub(crate) fn send(&self, n: Nameplate, conn: ConnId, body: String) -> Result<(), MailboxError> {
        let slots = self.lock();
        match slots.get(&n).and_then(|s| s.pairs.get(&conn)) {
            Some(Some(other)) => other
                .tx
                .try_send(ServerMsg::Message { body })
                .map_err(|_| MailboxError::Backlog),
            _ => Ok(()),
        }
    }

    /// The host of `n` (it knows the secret) closes it to new guests; guests still
    /// waiting are refused.
    pub(crate) fn close_to_new(&self, n: Nameplate, secret: &str) {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(&n) else {
            return;
        };
        if slot.secret.as_deref() != Some(secret) || secret.is_empty() {
            return;
        }
        slot.locked = true;
        for g in slot.waiting_guests.drain(..) {
            let _ = g.tx.try_send(locked_error());
        }
        if slot.is_empty() {
            slots.remove(&n);
        }
    }

    /// `conn` left `n`: tell its partner, and free the nameplate once nobody is left.
    pub(crate) fn leave(&self, n: Nameplate, conn: ConnId, mood: Option<Mood>) {
        let mut slots = self.lock();
        let Some(slot) = slots.get_mut(&n) else {
            return;
        };
        if slot.waiting_host.as_ref().is_some_and(|m| m.conn == conn) {
            slot.waiting_host = None;
        }
        slot.waiting_guests.retain(|m| m.conn != conn);
        if let Some(partner) = slot.pairs.remove(&conn).flatten() {
            let _ = partner.tx.try_send(ServerMsg::PeerLeft { mood });
            if let Some(back) = slot.pairs.get_mut(&partner.conn) {
                *back = None;
            }
        }
        if slot.is_empty() {
            slots.remove(&n);
        }
    }

    /// Open nameplates.
    pub(crate) fn open_count(&self) -> usize {
        self.lock().len()
    }
}

/// What a guest waiting on a nameplate its host closed is told.
pub(crate) fn locked_error() -> ServerMsg {
    ServerMsg::Error {
        kind: convey_shared::protocol::rendezvous::ErrorKind::InUse,
        message: MailboxError::InUse.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chan() -> (mpsc::Sender<ServerMsg>, mpsc::Receiver<ServerMsg>) {
        mpsc::channel(8)
    }

    fn single() -> Host {
        Host::default()
    }

    fn many(secret: &str) -> Host {
        Host {
            many: true,
            secret: secret.into(),
        }
    }

    fn body(r: &mut mpsc::Receiver<ServerMsg>) -> String {
        match r.try_recv() {
            Ok(ServerMsg::Message { body }) => body,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn pairs_two_refuses_third_and_frees_after_both_leave() {
        let mb = Mailboxes::new(10, false);
        let (t1, mut r1) = chan();
        let (t2, mut r2) = chan();
        let n = mb.allocate(1, t1, &single()).unwrap();
        assert_eq!(n, Nameplate(1));
        mb.send(n, 1, "before anyone".into()).unwrap();
        assert!(mb.claim(n, 2, t2, true, None).unwrap());
        assert_eq!(r1.try_recv().unwrap(), ServerMsg::PeerJoined);
        mb.send(n, 2, "hi".into()).unwrap();
        assert_eq!(body(&mut r1), "hi");
        assert!(r2.try_recv().is_err(), "nothing sent before pairing is kept");
        assert_eq!(mb.claim(n, 3, chan().0, true, None), Err(MailboxError::InUse));
        mb.leave(n, 1, Some(Mood::Scary));
        assert_eq!(
            r2.try_recv().unwrap(),
            ServerMsg::PeerLeft {
                mood: Some(Mood::Scary)
            }
        );
        assert_eq!(
            mb.claim(n, 4, chan().0, true, None),
            Err(MailboxError::InUse),
            "burned until empty"
        );
        mb.leave(n, 2, None);
        assert_eq!(mb.open_count(), 0);
        assert_eq!(
            mb.allocate(5, chan().0, &single()).unwrap(),
            Nameplate(1),
            "reusable once free"
        );
    }

    /// A `many` nameplate pairs each guest with its own host connection, keeps the pairs
    /// apart, refuses a host without the secret, and takes no new guest once locked.
    #[test]
    fn many_guests_each_paired_with_their_own_host_connection() {
        let mb = Mailboxes::new(10, false);
        let (h1, mut hr1) = chan();
        let n = mb.allocate(1, h1, &many("s3cret")).unwrap();
        let (g1, mut gr1) = chan();
        assert!(mb.claim(n, 2, g1, true, None).unwrap());
        assert_eq!(hr1.try_recv().unwrap(), ServerMsg::PeerJoined);
        // A second guest waits for the host's next connection.
        let (g2, mut gr2) = chan();
        assert!(!mb.claim(n, 3, g2, true, None).unwrap());
        assert_eq!(
            mb.claim(n, 4, chan().0, true, Some(&many("guess"))),
            Err(MailboxError::InUse),
            "a host connection without the secret"
        );
        let (h2, mut hr2) = chan();
        assert!(mb.claim(n, 5, h2, true, Some(&many("s3cret"))).unwrap());
        assert_eq!(gr2.try_recv().unwrap(), ServerMsg::PeerJoined);
        mb.send(n, 2, "from g1".into()).unwrap();
        mb.send(n, 3, "from g2".into()).unwrap();
        mb.send(n, 5, "to g2".into()).unwrap();
        assert_eq!(body(&mut hr1), "from g1");
        assert_eq!(body(&mut hr2), "from g2");
        assert_eq!(body(&mut gr2), "to g2");
        assert!(gr1.try_recv().is_err(), "guests never hear each other");
        // A guest arriving now waits; locking refuses it and any later one.
        let (g3, mut gr3) = chan();
        assert!(!mb.claim(n, 6, g3, true, None).unwrap());
        mb.close_to_new(n, "guess");
        assert!(
            !mb.claim(n, 8, chan().0, true, None).unwrap(),
            "only the host may lock"
        );
        mb.leave(n, 8, None);
        mb.close_to_new(n, "s3cret");
        assert!(matches!(
            gr3.try_recv().unwrap(),
            ServerMsg::Error {
                kind: convey_shared::protocol::rendezvous::ErrorKind::InUse,
                ..
            }
        ));
        assert_eq!(mb.claim(n, 7, chan().0, true, None), Err(MailboxError::InUse));
        mb.leave(n, 6, None);
        // Pairs already made carry on.
        mb.send(n, 1, "still here".into()).unwrap();
        assert_eq!(body(&mut gr1), "still here");
        for c in [1, 2, 3, 5] {
            mb.leave(n, c, None);
        }
        assert_eq!(mb.open_count(), 0);
    }

    #[test]
    fn a_guest_may_arrive_before_the_host() {
        let mb = Mailboxes::new(10, false);
        let (g, mut gr) = chan();
        assert!(!mb.claim(Nameplate(9), 1, g, true, None).unwrap());
        assert!(!mb.is_waiting(Nameplate(9)), "a guest is not a sender");
        assert!(
            mb.claim(Nameplate(9), 2, chan().0, true, Some(&single()))
                .unwrap()
        );
        assert_eq!(gr.try_recv().unwrap(), ServerMsg::PeerJoined);
    }

    #[test]
    fn without_the_token_only_a_waiting_nameplate_can_be_joined() {
        let mb = Mailboxes::new(10, false);
        assert_eq!(
            mb.claim(Nameplate(4), 1, chan().0, false, None),
            Err(MailboxError::Unauthorized)
        );
        let n = mb.allocate(2, chan().0, &single()).unwrap();
        assert_eq!(mb.claim(n, 3, chan().0, false, None), Ok(true));
    }

    #[test]
    fn allocation_never_hands_out_a_number_in_use() {
        let mb = Mailboxes::new(3, false);
        let a = mb.allocate(1, chan().0, &single()).unwrap();
        let b = mb.allocate(2, chan().0, &single()).unwrap();
        mb.claim(Nameplate(3), 3, chan().0, true, None).unwrap();
        assert_ne!(a, b);
        assert_eq!(mb.allocate(4, chan().0, &single()), Err(MailboxError::Exhausted));
    }

    /// Random nameplates stay in their short range, never repeat a number in use, and say
    /// whether a sender waits on them.
    #[test]
    fn random_allocation_and_waiting() {
        let mb = Mailboxes::new(2000, true);
        let mut seen = std::collections::HashSet::new();
        for conn in 0..200 {
            let n = mb.allocate(conn, chan().0, &single()).unwrap();
            assert!(RANDOM_NAMEPLATES.contains(&n.0), "{n}");
            assert!(seen.insert(n), "{n} handed out twice");
        }
        let n = *seen.iter().next().unwrap();
        assert!(mb.is_waiting(n));
        mb.claim(n, 999, chan().0, true, None).unwrap();
        assert!(!mb.is_waiting(n), "paired: nobody waits any more");
        assert!(!mb.is_waiting(Nameplate(5)));
    }
}
