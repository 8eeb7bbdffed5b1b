//! Where nameplates live: in this process ([`Mailboxes`], the default and the embedded
//! relay's), or in Redis shared by several instances ([`Shared`]). Both keep the same rules.

use std::sync::Arc;

use convey_shared::{
    Nameplate,
    protocol::{
        MAX_QUEUED_MESSAGES,
        rendezvous::{Mood, ServerMsg},
    },
};
use tokio::sync::mpsc;

use super::mailbox::{ConnId, MailboxError, Mailboxes};
use crate::shared::{ClaimOutcome, Shared, StoreError};

#[derive(Debug)]
pub(crate) enum Nameplates {
    Memory(Mailboxes),
    Shared { store: Arc<Shared>, max: usize },
}

fn unavailable(e: StoreError) -> MailboxError {
    tracing::error!(%e, "shared store");
    MailboxError::Unavailable
}

impl Nameplates {
    pub(crate) async fn allocate(
        &self,
        conn: ConnId,
        tx: mpsc::Sender<ServerMsg>,
    ) -> Result<Nameplate, MailboxError> {
        match self {
            Self::Memory(m) => m.allocate(conn, tx),
            Self::Shared { store, max } => {
                store.listen(conn, tx);
                match store.allocate(conn, *max).await.map_err(unavailable) {
                    Ok(Some(n)) => Ok(Nameplate(n)),
                    Ok(None) => Err(MailboxError::Exhausted),
                    Err(e) => Err(e),
                }
                .inspect_err(|_| store.forget(conn))
            }
        }
    }

    /// Claim `n`; whether the other side was already there (see [`Mailboxes::claim`]).
    pub(crate) async fn claim(
        &self,
        n: Nameplate,
        conn: ConnId,
        tx: mpsc::Sender<ServerMsg>,
        may_open: bool,
    ) -> Result<bool, MailboxError> {
        match self {
            Self::Memory(m) => m.claim(n, conn, tx, may_open),
            Self::Shared { store, max } => {
                store.listen(conn, tx.clone());
                let outcome = store.claim(n.0, conn, *max, may_open).await.map_err(unavailable);
                let result = match outcome {
                    Ok(ClaimOutcome::Alone) => Ok(false),
                    Ok(ClaimOutcome::Joined(bodies)) => {
                        for body in bodies {
                            let _ = tx.try_send(ServerMsg::Message { body });
                        }
                        Ok(true)
                    }
                    Ok(ClaimOutcome::InUse) => Err(MailboxError::InUse),
                    Ok(ClaimOutcome::Unauthorized) => Err(MailboxError::Unauthorized),
                    Ok(ClaimOutcome::Exhausted) => Err(MailboxError::Exhausted),
                    Err(e) => Err(e),
                };
                result.inspect_err(|_| store.forget(conn))
            }
        }
    }

    pub(crate) async fn send(&self, n: Nameplate, conn: ConnId, body: String) -> Result<(), MailboxError> {
        match self {
            Self::Memory(m) => m.send(n, conn, body),
            Self::Shared { store, .. } => match store.send(n.0, conn, body, MAX_QUEUED_MESSAGES).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(MailboxError::Backlog),
                Err(e) => Err(unavailable(e)),
            },
        }
    }

    pub(crate) async fn leave(&self, n: Nameplate, conn: ConnId, mood: Option<Mood>) {
        match self {
            Self::Memory(m) => m.leave(n, conn, mood),
            Self::Shared { store, .. } => {
                if let Err(e) = store.leave(n.0, conn, mood).await {
                    unavailable(e);
                }
                store.forget(conn);
            }
        }
    }

    /// The connection holding `n` is alive: keep the shared record from expiring.
    pub(crate) async fn refresh(&self, n: Nameplate) {
        if let Self::Shared { store, .. } = self
            && let Err(e) = store.refresh(n.0).await
        {
            unavailable(e);
        }
    }

    /// Is a sender waiting on `n`? `None` when the state is shared (not looked up there).
    pub(crate) fn is_waiting(&self, n: Nameplate) -> Option<bool> {
        match self {
            Self::Memory(m) => Some(m.is_waiting(n)),
            Self::Shared { .. } => None,
        }
    }

    /// Open nameplates (across all instances when shared).
    pub(crate) async fn open_count(&self) -> usize {
        match self {
            Self::Memory(m) => m.open_count(),
            Self::Shared { store, .. } => store.counts().await.map(|(n, _)| n).unwrap_or(0),
        }
    }
}
