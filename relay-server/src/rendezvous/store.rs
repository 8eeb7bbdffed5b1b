//! Where nameplates live, behind one trait: in this process ([`Mailboxes`], the default and
//! the embedded relay's), or in Redis shared by several instances ([`SharedNameplates`]).
//! Both keep the same rules (see [`super::mailbox`]).

use std::sync::Arc;

use async_trait::async_trait;
use convey_shared::{
    Nameplate,
    protocol::rendezvous::{Host, Mood, ServerMsg},
};
use tokio::sync::{mpsc, watch};

use super::mailbox::{ConnId, MailboxError, Mailboxes};
use crate::shared::{ClaimOutcome, Shared, StoreError};

/// The nameplate operations a rendezvous connection needs.
#[async_trait]
pub(crate) trait NameplateStore: Send + Sync + std::fmt::Debug {
    /// Claim a free nameplate for host `conn`.
    async fn allocate(
        &self,
        conn: ConnId,
        tx: mpsc::Sender<ServerMsg>,
        host: &Host,
    ) -> Result<Nameplate, MailboxError>;
    /// Claim `n` as its host or a guest; whether this connection was paired at once.
    async fn claim(
        &self,
        n: Nameplate,
        conn: ConnId,
        tx: mpsc::Sender<ServerMsg>,
        may_open: bool,
        host: Option<&Host>,
    ) -> Result<bool, MailboxError>;
    /// Deliver `body` to the partner of `conn`.
    async fn send(&self, n: Nameplate, conn: ConnId, body: String) -> Result<(), MailboxError>;
    /// No new guests on `n`, if `secret` is its host's.
    async fn lock(&self, n: Nameplate, secret: &str);
    async fn leave(&self, n: Nameplate, conn: ConnId, mood: Option<Mood>);
    /// `conn` left `n` because the shared store was away: its partner, closed for the same
    /// reason, is not told (it would take that for its peer's end).
    async fn leave_quietly(&self, n: Nameplate, conn: ConnId) {
        self.leave(n, conn, None).await;
    }
    /// Changes when the shared store came back after a loss (none for a store in memory).
    fn renewals(&self) -> Option<watch::Receiver<u64>> {
        None
    }
    /// The connection holding `n` is alive: keep a shared record from expiring. `false`
    /// when the record is gone (a shared store that restarted empty).
    async fn refresh(&self, _n: Nameplate) -> bool {
        true
    }
    /// Is a sender waiting on `n`? `None` when the state is shared (not looked up there).
    fn is_waiting(&self, n: Nameplate) -> Option<bool>;
    /// Open nameplates (across all instances when shared).
    async fn open_count(&self) -> usize;
}

pub(crate) type Nameplates = Arc<dyn NameplateStore>;

#[async_trait]
impl NameplateStore for Mailboxes {
    async fn allocate(
        &self,
        conn: ConnId,
        tx: mpsc::Sender<ServerMsg>,
        host: &Host,
    ) -> Result<Nameplate, MailboxError> {
        Mailboxes::allocate(self, conn, tx, host)
    }

    async fn claim(
        &self,
        n: Nameplate,
        conn: ConnId,
        tx: mpsc::Sender<ServerMsg>,
        may_open: bool,
        host: Option<&Host>,
    ) -> Result<bool, MailboxError> {
        Mailboxes::claim(self, n, conn, tx, may_open, host)
    }

    async fn send(&self, n: Nameplate, conn: ConnId, body: String) -> Result<(), MailboxError> {
        Mailboxes::send(self, n, conn, body)
    }

    async fn lock(&self, n: Nameplate, secret: &str) {
        self.close_to_new(n, secret);
    }

    async fn leave(&self, n: Nameplate, conn: ConnId, mood: Option<Mood>) {
        Mailboxes::leave(self, n, conn, mood);
    }

    fn is_waiting(&self, n: Nameplate) -> Option<bool> {
        Some(Mailboxes::is_waiting(self, n))
    }

    async fn open_count(&self) -> usize {
        Mailboxes::open_count(self)
    }
}

/// Nameplates in the Redis store several instances share.
#[derive(Debug)]
pub(crate) struct SharedNameplates {
    pub(crate) store: Arc<Shared>,
    pub(crate) max: usize,
}

impl SharedNameplates {
    /// `conn` leaves `n`, its partner told (with `mood`) unless `quiet`.
    async fn leave_telling(&self, n: Nameplate, conn: ConnId, mood: Option<Mood>, quiet: bool) {
        if let Err(e) = self.store.leave(n.0, conn, mood, quiet).await {
            unavailable(e);
        }
        self.store.forget(conn);
    }
}

fn unavailable(e: StoreError) -> MailboxError {
    tracing::error!(%e, "shared store");
    MailboxError::Unavailable
}

#[async_trait]
impl NameplateStore for SharedNameplates {
    async fn allocate(
        &self,
        conn: ConnId,
        tx: mpsc::Sender<ServerMsg>,
        host: &Host,
    ) -> Result<Nameplate, MailboxError> {
        self.store.listen(conn, tx);
        match self
            .store
            .allocate(conn, self.max, host)
            .await
            .map_err(unavailable)
        {
            Ok(Some(n)) => Ok(Nameplate(n)),
            Ok(None) => Err(MailboxError::Exhausted),
            Err(e) => Err(e),
        }
        .inspect_err(|_| self.store.forget(conn))
    }

    async fn claim(
        &self,
        n: Nameplate,
        conn: ConnId,
        tx: mpsc::Sender<ServerMsg>,
        may_open: bool,
        host: Option<&Host>,
    ) -> Result<bool, MailboxError> {
        self.store.listen(conn, tx);
        let outcome = self.store.claim(n.0, conn, self.max, may_open, host).await;
        match outcome.map_err(unavailable) {
            Ok(ClaimOutcome::Alone) => Ok(false),
            Ok(ClaimOutcome::Joined) => Ok(true),
            Ok(ClaimOutcome::InUse) => Err(MailboxError::InUse),
            Ok(ClaimOutcome::Unauthorized) => Err(MailboxError::Unauthorized),
            Ok(ClaimOutcome::Exhausted) => Err(MailboxError::Exhausted),
            Err(e) => Err(e),
        }
        .inspect_err(|_| self.store.forget(conn))
    }

    async fn send(&self, n: Nameplate, conn: ConnId, body: String) -> Result<(), MailboxError> {
        self.store.send(n.0, conn, body).await.map_err(unavailable)
    }

    async fn lock(&self, n: Nameplate, secret: &str) {
        if let Err(e) = self.store.lock(n.0, secret).await {
            unavailable(e);
        }
    }

    async fn leave(&self, n: Nameplate, conn: ConnId, mood: Option<Mood>) {
        self.leave_telling(n, conn, mood, false).await;
    }

    async fn leave_quietly(&self, n: Nameplate, conn: ConnId) {
        self.leave_telling(n, conn, None, true).await;
    }

    fn renewals(&self) -> Option<watch::Receiver<u64>> {
        Some(self.store.renewals())
    }

    async fn refresh(&self, n: Nameplate) -> bool {
        match self.store.refresh(n.0).await {
            Ok(kept) => kept,
            // Unknown: the next refresh or the store's answer to the client will tell.
            Err(e) => {
                unavailable(e);
                true
            }
        }
    }

    fn is_waiting(&self, _: Nameplate) -> Option<bool> {
        None
    }

    async fn open_count(&self) -> usize {
        self.store.counts().await.map(|(n, _)| n).unwrap_or(0)
    }
}
