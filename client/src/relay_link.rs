//! The relay connection of a confirmed session, owned by one task that keeps it alive and,
//! when it is lost (a relay restart, a load balancer dropping one side), connects again
//! with backoff, meets the peer on the session's resume slot and re-sends the sealed
//! messages the peer never got. The transfer itself does not wait for any of this: only
//! what the two sides say to each other does.

use std::{collections::VecDeque, time::Duration};

use convey_shared::{
    crypto::Side,
    protocol::{
        rendezvous::{ErrorKind, Host, Mood},
        resume::Slot,
    },
};
use tokio::sync::{mpsc, oneshot};

use crate::{Error, RelayAddr, error::Result, rendezvous::Rendezvous, transport::task::OwnedTask};

/// How long a side waits for the relay to come back before giving up on the session.
pub(crate) const RELAY_GRACE: Duration = Duration::from_secs(60);
/// Waits between reconnection attempts (the last repeats).
const BACKOFF: [Duration; 5] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

enum Cmd {
    Send(Vec<u8>),
    RegisterSwarm(String, oneshot::Sender<Result<()>>),
    Close(Mood),
}

/// A handle on the session's relay connection.
#[derive(Debug)]
pub(crate) struct RelayLink {
    cmds: mpsc::UnboundedSender<Cmd>,
    inbound: mpsc::UnboundedReceiver<Result<Vec<u8>>>,
    task: OwnedTask,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Send(_) => "Send",
            Self::RegisterSwarm(..) => "RegisterSwarm",
            Self::Close(_) => "Close",
        })
    }
}

impl RelayLink {
    pub(crate) fn new(rv: Rendezvous, slot: Slot, side: Side) -> Self {
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let actor = Actor {
            relay: rv.addr.clone(),
            rv: Some(rv),
            slot,
            side,
            outbox: VecDeque::new(),
            outbox_base: 0,
            received: 0,
            swarms: Vec::new(),
            inbound: inbound_tx,
        };
        let task = OwnedTask::spawn(move |cancel| async move {
            tokio::select! {
                () = actor.run(cmd_rx) => {}
                () = cancel.cancelled() => {}
            }
        });
        Self { cmds, inbound, task }
    }

    /// Queue a sealed body for the peer; it is delivered once, across reconnections.
    pub(crate) fn send(&self, body: Vec<u8>) -> Result<()> {
        self.cmds.send(Cmd::Send(body)).map_err(|_| Error::PeerGone)
    }

    /// The next sealed body from the peer (cancel-safe).
    pub(crate) async fn recv(&mut self) -> Result<Vec<u8>> {
        match self.inbound.recv().await {
            Some(r) => r,
            None => Err(Error::PeerGone),
        }
    }

    /// Let the relay's tracker serve `info_hash` while the session lasts (registered again
    /// on every relay the session moves to).
    pub(crate) async fn register_swarm(&self, info_hash: &str) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::RegisterSwarm(info_hash.to_owned(), tx))
            .map_err(|_| Error::PeerGone)?;
        rx.await.map_err(|_| Error::PeerGone)?
    }

    /// Say goodbye (after what was queued), waiting a little for it to go out.
    pub(crate) async fn close(self, mood: Mood) {
        let _ = self.cmds.send(Cmd::Close(mood));
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(3), task.finished())
            .await
            .is_err()
        {
            task.shutdown().await;
        }
    }
}

struct Actor {
    relay: RelayAddr,
    rv: Option<Rendezvous>,
    slot: Slot,
    side: Side,
    /// Sealed bodies sent, from number `outbox_base` on, kept until the peer says it has them.
    outbox: VecDeque<Vec<u8>>,
    outbox_base: u64,
    /// Sealed bodies received from the peer.
    received: u64,
    swarms: Vec<String>,
    inbound: mpsc::UnboundedSender<Result<Vec<u8>>>,
}

impl Actor {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        loop {
            let lost = match self.rv.as_mut() {
                Some(rv) => tokio::select! {
                    cmd = cmds.recv() => match cmd {
                        Some(Cmd::Send(body)) => {
                            let r = rv.send_body(&body).await;
                            self.outbox.push_back(body);
                            r.err().map(|e| e.to_string())
                        }
                        Some(Cmd::RegisterSwarm(hash, reply)) => {
                            let r = rv.register_swarm(&hash).await;
                            self.swarms.push(hash);
                            match r {
                                Err(Error::RelayUnreachable { reason, .. }) => {
                                    // Registered again once the session is back.
                                    let _ = reply.send(Ok(()));
                                    Some(reason)
                                }
                                r => {
                                    let _ = reply.send(r);
                                    None
                                }
                            }
                        }
                        // Closed by its owner, or dropped with it (an error path).
                        closing => {
                            let mood = match closing {
                                Some(Cmd::Close(mood)) => mood,
                                _ => Mood::Errory,
                            };
                            if let Some(rv) = self.rv.take() {
                                rv.close(mood).await;
                            }
                            return;
                        }
                    },
                    // A peer that left, even one that vanished without a goodbye, ends the
                    // session as before (waiting for it would hold up a swarm's receivers
                    // that carry on without the sender): only a lost relay is waited for.
                    body = rv.recv_body() => match body {
                        Ok(b) => {
                            self.received += 1;
                            let _ = self.inbound.send(Ok(b));
                            None
                        }
                        Err(Error::RelayUnreachable { reason, .. }) => Some(reason),
                        Err(Error::Relay { kind: ErrorKind::ShuttingDown, message }) => Some(message),
                        Err(e) => return self.fail(e),
                    },
                },
                None => Some("not connected".into()),
            };
            if let Some(lost) = lost
                && let Err(e) = self.resume(&lost).await
            {
                return self.fail(e);
            }
        }
    }

    fn fail(&mut self, e: Error) {
        self.rv = None;
        let _ = self.inbound.send(Err(e));
    }

    /// Meet the peer again on the session's slot, on this relay (restarted, or another
    /// instance behind the same address), within the grace period.
    async fn resume(&mut self, lost: &str) -> Result<()> {
        self.rv = None;
        tracing::warn!(
            "lost the relay ({lost}); reconnecting for up to {} s, the transfer goes on",
            RELAY_GRACE.as_secs()
        );
        let deadline = tokio::time::Instant::now() + RELAY_GRACE;
        let mut attempt = 0;
        let mut last = lost.to_owned();
        loop {
            let wait = BACKOFF[attempt.min(BACKOFF.len() - 1)];
            attempt += 1;
            if tokio::time::Instant::now() + wait >= deadline {
                return Err(Error::RelayLost {
                    relay: self.relay.to_string(),
                    secs: RELAY_GRACE.as_secs(),
                    reason: last,
                });
            }
            tokio::time::sleep(wait).await;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.meet()).await {
                Ok(Ok((rv, peer_has))) => {
                    self.rv = Some(rv);
                    self.catch_up(peer_has).await?;
                    tracing::warn!("reconnected to the relay; the session goes on");
                    // Commands that queued meanwhile are served by the main loop.
                    return Ok(());
                }
                Ok(Err(e @ (Error::WrongCode | Error::Protocol(_)))) => return Err(e),
                Ok(Err(Error::RelayUnreachable { reason, .. })) => last = reason,
                Ok(Err(e)) => {
                    tracing::debug!(%e, "resume attempt failed");
                    last = e.to_string();
                }
                Err(_) => last = "the other side did not come back".into(),
            }
        }
    }

    /// One attempt: connect, claim the slot, wait for the peer, swap hellos. Returns the
    /// connection and how many of our bodies the peer has.
    async fn meet(&self) -> Result<(Rendezvous, u64)> {
        let mut rv = Rendezvous::connect(&self.relay).await?;
        let host = (self.side == Side::Sender).then(|| Host {
            many: false,
            secret: self.slot.secret.clone(),
        });
        let present = match rv.claim(self.slot.nameplate, host.as_ref()).await {
            Ok(p) => p,
            Err(
                e @ Error::Relay {
                    kind: ErrorKind::InUse | ErrorKind::Unauthorized | ErrorKind::RateLimited,
                    ..
                },
            ) => {
                // The peer's old connection is still leaving, or a private relay waits for
                // the sender to claim first: try again.
                rv.close(Mood::Happy).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        if !present {
            rv.wait_for_peer().await?;
        }
        rv.send_body(&self.slot.hello(self.side, self.received)).await?;
        let body = rv.recv_body().await?;
        let peer_has = self
            .slot
            .parse_hello(self.side.other(), &body)
            .ok_or_else(|| Error::Protocol("the other side's resume hello is not valid".into()))?;
        Ok((rv, peer_has))
    }

    /// Drop what the peer has, send what it lacks, register the swarms again.
    async fn catch_up(&mut self, peer_has: u64) -> Result<()> {
        let sent = self.outbox_base + self.outbox.len() as u64;
        if peer_has < self.outbox_base || peer_has > sent {
            return Err(Error::Protocol(format!(
                "the other side says it has {peer_has} messages; {sent} were sent"
            )));
        }
        while self.outbox_base < peer_has {
            self.outbox.pop_front();
            self.outbox_base += 1;
        }
        let Some(rv) = self.rv.as_mut() else {
            return Ok(());
        };
        for body in &self.outbox {
            if let Err(e) = rv.send_body(body).await {
                tracing::debug!(%e, "lost the relay again while catching up");
                return Ok(());
            }
        }
        for hash in &self.swarms {
            if let Err(e) = rv.register_swarm(hash).await {
                tracing::debug!(%e, "lost the relay again while registering the swarm");
                return Ok(());
            }
        }
        Ok(())
    }
}
