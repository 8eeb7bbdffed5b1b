//! The relay connection of a confirmed session, owned by one task that keeps it alive and,
//! when it is lost (a relay restart, a load balancer dropping one side), connects again
//! with backoff, meets the peer on the session's resume slot and re-sends the sealed
//! messages the peer never got. The transfer itself does not wait for any of this: only
//! what the two sides say to each other does.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use convey_shared::{
    crypto::Side,
    protocol::{
        rendezvous::{ErrorKind, Host, KEEPALIVE_EVERY, KEEPALIVE_SILENCE, Mood},
        resume::Slot,
    },
};
use futures::{StreamExt, future::BoxFuture, stream::FuturesUnordered};
use tokio::{
    net::TcpStream,
    sync::{mpsc, oneshot},
};

use crate::{
    Error, RelayAddr,
    backoff::Backoff,
    error::Result,
    peer_route::{Route, Unopened},
    rendezvous::{FromPeer, Rendezvous},
    transport::task::OwnedTask,
};

/// How long a side waits for the relay to come back before giving up on the session.
pub(crate) const RELAY_GRACE: Duration = Duration::from_secs(60);
/// How long a one-to-one session with no route between the peers waits for a peer that
/// vanished from the relay (its relay connection cut, or a crash) to come back.
pub(crate) const VANISHED_GRACE: Duration = Duration::from_secs(20);
/// How long the two resume hellos may take on a new relay connection.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a closing session waits for the peer to have read what the route carried.
const ROUTE_LINGER: Duration = Duration::from_secs(2);
/// How long closing takes at most when all is well (the route's linger, then the relay's
/// goodbye).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a closing side waits for the goodbye of a peer that says one: long enough for
/// the relay to let the peer's connection go if it died silently.
const GOODBYE_WAIT: Duration =
    Duration::from_secs(KEEPALIVE_SILENCE.as_secs() + 2 * KEEPALIVE_EVERY.as_secs());
/// How long closing may take in all: a relay connection that proves silent is replaced,
/// within the grace period, so that the last messages reach the peer.
const CLOSE_MAX: Duration = Duration::from_secs(
    CLOSE_TIMEOUT.as_secs() + KEEPALIVE_SILENCE.as_secs() + GOODBYE_WAIT.as_secs() + RELAY_GRACE.as_secs(),
);

enum Cmd {
    Send(Vec<u8>),
    RegisterSwarm(String, oneshot::Sender<Result<()>>),
    /// Wait this long for a peer that vanished, even with no route (one-to-one only).
    AwaitVanished(Duration),
    /// Closing, wait for the peer's goodbye.
    AwaitGoodbye,
    Close(Mood),
}

/// A handle on the session's relay connection.
#[derive(Debug)]
pub(crate) struct RelayLink {
    cmds: mpsc::UnboundedSender<Cmd>,
    attach: RouteAttacher,
    inbound: mpsc::UnboundedReceiver<Result<Vec<u8>>>,
    task: OwnedTask,
}

/// Hands the session a connection between the peers to carry its messages too.
#[derive(Debug, Clone)]
pub(crate) struct RouteAttacher {
    conns: mpsc::UnboundedSender<TcpStream>,
    up: Arc<AtomicBool>,
}

impl RouteAttacher {
    /// Use `conn` (its route hello already written or checked) as the peer route, in
    /// place of any other.
    pub(crate) fn attach(&self, conn: TcpStream) {
        let _ = self.conns.send(conn);
    }

    /// Is a peer route open?
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Send(_) => "Send",
            Self::RegisterSwarm(..) => "RegisterSwarm",
            Self::AwaitVanished(_) => "AwaitVanished",
            Self::AwaitGoodbye => "AwaitGoodbye",
            Self::Close(_) => "Close",
        })
    }
}

impl RelayLink {
    pub(crate) fn new(mut rv: Rendezvous, slot: Slot, side: Side) -> Self {
        rv.keep_alive();
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let (conns, attach_rx) = mpsc::unbounded_channel();
        let up = Arc::new(AtomicBool::new(false));
        let actor = Actor {
            relay: rv.addr.clone(),
            rv: Some(rv),
            slot,
            side,
            outbox: VecDeque::new(),
            outbox_base: 0,
            received: 0,
            relay_next: 0,
            swarms: Vec::new(),
            inbound: inbound_tx,
            route: None,
            route_up: up.clone(),
            reconnect: None,
            deadline: tokio::time::Instant::now(),
            relay_gone: None,
            peer_vanished: false,
            await_vanished: None,
            closing: None,
            await_goodbye: false,
        };
        let task = OwnedTask::spawn(move |cancel| async move {
            tokio::select! {
                () = actor.run(cmd_rx, attach_rx) => {}
                () = cancel.cancelled() => {}
            }
        });
        Self {
            cmds,
            attach: RouteAttacher { conns, up },
            inbound,
            task,
        }
    }

    /// Where connections between the peers are handed to this session.
    pub(crate) fn attacher(&self) -> RouteAttacher {
        self.attach.clone()
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

    /// A one-to-one session: a peer that vanishes from the relay is awaited (up to `grace`)
    /// even without a route, since only its relay connection may have been cut. A swarm's
    /// sessions do not, so its receivers are not held up once their sender has left.
    pub(crate) fn await_vanished(&self, grace: Duration) {
        let _ = self.cmds.send(Cmd::AwaitVanished(grace));
    }

    /// The peer closes its session as soon as it has this side's last message (it offered
    /// [`convey_shared::protocol::peer::ABILITY_GOODBYE`]): closing with no route, wait up
    /// to [`GOODBYE_WAIT`] for its goodbye after the relay took the last messages. A peer
    /// whose relay connection died silently never got them; the relay lets that connection
    /// go, this side hears the peer vanished, meets it again on the resume slot and sends
    /// them again.
    pub(crate) fn await_goodbye(&self) {
        let _ = self.cmds.send(Cmd::AwaitGoodbye);
    }

    /// Say goodbye (after what was queued), waiting a little for it to go out.
    pub(crate) async fn close(self, mood: Mood) {
        let _ = self.cmds.send(Cmd::Close(mood));
        let mut task = self.task;
        if tokio::time::timeout(CLOSE_MAX, task.finished()).await.is_err() {
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
    /// Sealed bodies received from the peer (over either route; each is delivered once).
    received: u64,
    /// The number of the next body the relay connection brings.
    relay_next: u64,
    swarms: Vec<String>,
    inbound: mpsc::UnboundedSender<Result<Vec<u8>>>,
    /// The connection between the peers, once one is open.
    route: Option<Route>,
    route_up: Arc<AtomicBool>,
    /// Meeting the peer on the relay again, while the relay is lost.
    reconnect: Option<BoxFuture<'static, Result<Rendezvous>>>,
    /// Until when the relay may come back.
    deadline: tokio::time::Instant,
    /// Why the relay is gone for good (the session goes on over the route).
    relay_gone: Option<Error>,
    /// The relay said the peer vanished; it is awaited on the slot while the route lasts.
    peer_vanished: bool,
    /// How long a vanished peer is awaited with no route (none: not at all).
    await_vanished: Option<Duration>,
    /// Closing, with this goodbye, once the relay has taken the last messages.
    closing: Option<Mood>,
    /// Closing, wait for the peer's goodbye first.
    await_goodbye: bool,
}

/// What woke the relay task.
enum Wake {
    Cmd(Option<Cmd>),
    Relay(Result<FromPeer>),
    Reconnected(Result<Box<Rendezvous>>),
    Frame(Option<(u64, Vec<u8>)>),
    Attach(TcpStream),
    Opened(std::result::Result<(Route, u64), Unopened>),
}

impl Actor {
    async fn run(
        mut self,
        mut cmds: mpsc::UnboundedReceiver<Cmd>,
        mut attach: mpsc::UnboundedReceiver<TcpStream>,
    ) {
        let mut opening: FuturesUnordered<BoxFuture<'static, _>> = FuturesUnordered::new();
        loop {
            if self.closing.is_some() && self.reconnect.is_none() && self.close_once_taken().await {
                return;
            }
            let wake = tokio::select! {
                cmd = cmds.recv(), if self.closing.is_none() => Wake::Cmd(cmd),
                body = recv_on(&mut self.rv), if self.rv.is_some() => Wake::Relay(body),
                rv = poll_on(&mut self.reconnect), if self.reconnect.is_some() => Wake::Reconnected(rv.map(Box::new)),
                frame = next_on(&mut self.route), if self.route.is_some() => Wake::Frame(frame),
                Some(conn) = attach.recv() => Wake::Attach(conn),
                Some(opened) = opening.next(), if !opening.is_empty() => Wake::Opened(opened),
            };
            let step = match wake {
                Wake::Cmd(Some(Cmd::Send(body))) => self.send(body).await,
                Wake::Cmd(Some(Cmd::RegisterSwarm(hash, reply))) => {
                    self.register_swarm(hash, reply).await;
                    Ok(())
                }
                Wake::Cmd(Some(Cmd::AwaitVanished(grace))) => {
                    self.await_vanished = Some(grace);
                    Ok(())
                }
                Wake::Cmd(Some(Cmd::AwaitGoodbye)) => {
                    self.await_goodbye = true;
                    Ok(())
                }
                // Dropped with its owner (an error path).
                Wake::Cmd(None) => {
                    if let Some(route) = self.route.take() {
                        route.finish(ROUTE_LINGER).await;
                    }
                    if let Some(rv) = self.rv.take() {
                        rv.close(Mood::Errory).await;
                    }
                    return;
                }
                Wake::Cmd(Some(Cmd::Close(mood))) => {
                    // What went onto the route may still sit in a WebRTC channel's
                    // buffers: end our half and wait for the peer to end its own.
                    if let Some(route) = self.route.take() {
                        route.finish(ROUTE_LINGER).await;
                        if let Some(rv) = self.rv.take() {
                            rv.close(mood).await;
                        }
                        return;
                    }
                    self.closing = Some(mood);
                    Ok(())
                }
                Wake::Relay(Ok(FromPeer::Body(body))) => {
                    let number = self.relay_next;
                    self.relay_next += 1;
                    self.deliver(number, body)
                }
                Wake::Relay(Ok(FromPeer::Vanished)) => self.peer_vanished(),
                Wake::Relay(Err(Error::RelayUnreachable { reason, .. })) => {
                    self.lost(&reason);
                    Ok(())
                }
                // A relay that stops, or whose shared store (Redis) is gone for now.
                Wake::Relay(Err(Error::Relay {
                    kind: ErrorKind::ShuttingDown | ErrorKind::Unavailable,
                    message,
                })) => {
                    self.lost(&message);
                    Ok(())
                }
                Wake::Relay(Err(e)) => Err(e),
                Wake::Reconnected(r) => self.reconnected(r).await,
                Wake::Frame(Some((number, body))) => self.deliver(number, body),
                Wake::Frame(None) => self.route_ended(),
                Wake::Attach(conn) => {
                    opening.push(Box::pin(Route::open(
                        conn,
                        self.slot.clone(),
                        self.side,
                        self.received,
                    )));
                    Ok(())
                }
                Wake::Opened(Ok((route, peer_has))) => {
                    self.route_opened(route, peer_has).await;
                    Ok(())
                }
                Wake::Opened(Err(Unopened(why))) => {
                    tracing::debug!(%why, "no peer route");
                    Ok(())
                }
            };
            if let Err(e) = step {
                return self.fail(e);
            }
        }
    }

    /// Closing with no route between the peers, the relay carries the last messages (the
    /// verdict, the digests): say goodbye once it has taken them. A relay connection that
    /// proves dead (silently: a NAT that forgot it) is replaced first, and the peer, which
    /// meets this side again on the resume slot, gets what it lacks. `true` once closed, or
    /// when there is no relay left to close.
    async fn close_once_taken(&mut self) -> bool {
        let (Some(mood), Some(mut rv)) = (self.closing, self.rv.take()) else {
            return self.closing.is_some();
        };
        let synced = match rv.sync(KEEPALIVE_SILENCE).await {
            Ok(()) if self.await_goodbye => self.goodbye_from(&mut rv).await,
            r => r.map(|()| true),
        };
        match synced {
            Ok(true) => {
                rv.close(mood).await;
                true
            }
            // The peer vanished: meet it again on the slot, and send it what it lacks.
            Ok(false) => {
                self.rv = Some(rv);
                match self.peer_vanished() {
                    Ok(()) => false,
                    Err(e) => {
                        self.fail(e);
                        true
                    }
                }
            }
            Err(Error::RelayUnreachable { reason, .. }) => {
                self.lost(&reason);
                false
            }
            Err(e) => {
                self.fail(e);
                true
            }
        }
    }

    /// Wait (up to [`GOODBYE_WAIT`]) for the peer to leave: `true` once it has (or the wait
    /// is over), `false` if it vanished without a goodbye.
    async fn goodbye_from(&mut self, rv: &mut Rendezvous) -> Result<bool> {
        let wait = async {
            loop {
                match rv.recv_from_peer().await {
                    Ok(FromPeer::Body(body)) => {
                        let number = self.relay_next;
                        self.relay_next += 1;
                        let _ = self.deliver(number, body);
                    }
                    Ok(FromPeer::Vanished) => return Ok(false),
                    Err(Error::PeerGone | Error::WrongCode) => return Ok(true),
                    Err(e) => return Err(e),
                }
            }
        };
        tokio::time::timeout(GOODBYE_WAIT, wait).await.unwrap_or(Ok(true))
    }

    fn fail(&mut self, e: Error) {
        if self.closing.is_some() && !matches!(e, Error::PeerGone) {
            tracing::warn!("could not make sure the other side got the last messages: {e}");
        }
        self.rv = None;
        let _ = self.inbound.send(Err(e));
    }

    fn set_route(&mut self, route: Option<Route>) {
        self.route_up.store(route.is_some(), Ordering::Relaxed);
        self.route = route;
    }

    /// The route is gone: the end of the session if the relay is gone for good too, or if
    /// the peer vanished from it and has not come back.
    fn route_ended(&mut self) -> Result<()> {
        self.set_route(None);
        if self.peer_vanished {
            return Err(Error::PeerGone);
        }
        match (&self.rv, &self.reconnect, self.relay_gone.take()) {
            (None, None, Some(gone)) => Err(gone),
            (_, _, gone) => {
                self.relay_gone = gone;
                Ok(())
            }
        }
    }

    /// Hand body `number` on, unless it came already by the other route.
    fn deliver(&mut self, number: u64, body: Vec<u8>) -> Result<()> {
        match number.cmp(&self.received) {
            std::cmp::Ordering::Less => Ok(()),
            std::cmp::Ordering::Equal => {
                self.received += 1;
                let _ = self.inbound.send(Ok(body));
                Ok(())
            }
            std::cmp::Ordering::Greater => {
                // Only a peer that skipped a message does this; the route is not to be trusted.
                tracing::debug!(
                    number,
                    received = self.received,
                    "a message out of order on the peer route"
                );
                self.route_ended()
            }
        }
    }

    async fn send(&mut self, body: Vec<u8>) -> Result<()> {
        let number = self.outbox_base + self.outbox.len() as u64;
        let mut route_failed = false;
        if let Some(route) = self.route.as_mut()
            && let Err(e) = route.write(number, &body).await
        {
            tracing::debug!(%e, "the peer route ended");
            route_failed = true;
        }
        let sent = match self.rv.as_mut() {
            Some(rv) => rv.send_body(&body).await.err(),
            None => None,
        };
        self.outbox.push_back(body);
        if let Some(e) = sent {
            self.lost(&e.to_string());
        }
        if route_failed { self.route_ended() } else { Ok(()) }
    }

    async fn register_swarm(&mut self, hash: String, reply: oneshot::Sender<Result<()>>) {
        let r = match self.rv.as_mut() {
            Some(rv) => rv.register_swarm(&hash).await,
            // Registered once the relay is back.
            None => Ok(()),
        };
        self.swarms.push(hash);
        match r {
            Err(Error::RelayUnreachable { reason, .. }) => {
                let _ = reply.send(Ok(()));
                self.lost(&reason);
            }
            r => {
                let _ = reply.send(r);
            }
        }
    }

    /// The relay says the peer left without a goodbye: it crashed, or only its relay
    /// connection was cut (a proxy, a load balancer, a NAT). With a route between the two,
    /// the route carries the session while this side waits for the peer on the session's
    /// slot (for the relay's grace period); if the route ends first, the peer is gone. With
    /// none, a one-to-one session waits [`VANISHED_GRACE`] for it; a swarm's does not (its
    /// receivers carry on without a sender that left, and are not to be held up).
    fn peer_vanished(&mut self) -> Result<()> {
        let grace = match (&self.route, self.await_vanished) {
            (Some(_), _) => RELAY_GRACE,
            (None, Some(grace)) => grace,
            (None, None) => return Err(Error::PeerGone),
        };
        if self.start_reconnect("the other side did not come back", grace) {
            tracing::warn!(
                "the other side lost its relay connection; waiting for it there for up to {} s, the transfer goes on",
                grace.as_secs()
            );
            self.peer_vanished = true;
        }
        Ok(())
    }

    /// The relay connection broke: meet the peer again on the session's slot, on this relay
    /// (restarted, or another instance behind the same address), within the grace period.
    fn lost(&mut self, lost: &str) {
        if self.start_reconnect(lost, RELAY_GRACE) {
            tracing::warn!(
                "lost the relay ({lost}); reconnecting for up to {} s, the transfer goes on",
                RELAY_GRACE.as_secs()
            );
        }
    }

    /// Drop the relay connection and meet the peer on the slot within `grace`; `false` when
    /// already meeting it, or when the relay is gone for good.
    fn start_reconnect(&mut self, lost: &str, grace: Duration) -> bool {
        self.rv = None;
        if self.reconnect.is_some() || self.relay_gone.is_some() {
            return false;
        }
        self.deadline = tokio::time::Instant::now() + grace;
        self.reconnect = Some(Box::pin(reconnect(
            (self.relay.clone(), self.slot.clone(), self.side),
            self.deadline,
            lost.to_owned(),
        )));
        true
    }

    async fn reconnected(&mut self, r: Result<Box<Rendezvous>>) -> Result<()> {
        self.reconnect = None;
        let mut rv = match r {
            Ok(rv) => *rv,
            Err(e @ Error::RelayLost { .. }) if self.route.is_some() => {
                tracing::warn!("{e}; the session goes on over the connection between the two sides");
                // The route's end is then the session's, for the reason the relay went.
                self.relay_gone = Some(if self.peer_vanished { Error::PeerGone } else { e });
                self.peer_vanished = false;
                return Ok(());
            }
            // A peer that vanished and never came back is gone, whatever the relay did.
            Err(Error::RelayLost { .. }) if self.peer_vanished => return Err(Error::PeerGone),
            Err(e) => return Err(e),
        };
        rv.keep_alive();
        // The peer sends its hello first on the new connection, before anything it re-sends.
        let hellos = async {
            rv.send_body(&self.slot.hello(self.side, self.received)).await?;
            rv.recv_body().await
        };
        let body = match tokio::time::timeout(HELLO_TIMEOUT, hellos).await {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                tracing::debug!(%e, "resume hello failed");
                return self.retry();
            }
            Err(_) => return self.retry(),
        };
        let peer_has = self
            .slot
            .parse_hello(self.side.other(), &body)
            .ok_or_else(|| Error::Protocol("the other side's resume hello is not valid".into()))?;
        self.relay_next = self.received;
        self.rv = Some(rv);
        self.peer_vanished = false;
        self.catch_up(peer_has).await?;
        tracing::warn!("reconnected to the relay; the session goes on");
        Ok(())
    }

    /// A meeting that fell through: try again within the same grace period.
    fn retry(&mut self) -> Result<()> {
        self.reconnect = Some(Box::pin(reconnect(
            (self.relay.clone(), self.slot.clone(), self.side),
            self.deadline,
            "the other side did not come back".into(),
        )));
        Ok(())
    }

    /// A route opened: send the peer what it lacks of ours over it.
    async fn route_opened(&mut self, mut route: Route, peer_has: u64) {
        let sent = self.outbox_base + self.outbox.len() as u64;
        if peer_has < self.outbox_base || peer_has > sent {
            tracing::debug!(
                peer_has,
                sent,
                "the peer route's hello does not fit what was sent"
            );
            return;
        }
        for (number, body) in (self.outbox_base..).zip(&self.outbox) {
            if number < peer_has {
                continue;
            }
            if let Err(e) = route.write(number, body).await {
                tracing::debug!(%e, "the peer route ended while catching up");
                return;
            }
        }
        tracing::debug!("the peer route is open");
        self.set_route(Some(route));
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
                let reason = e.to_string();
                self.lost(&reason);
                return Ok(());
            }
        }
        for hash in &self.swarms {
            if let Err(e) = rv.register_swarm(hash).await {
                tracing::debug!(%e, "lost the relay again while registering the swarm");
                let reason = e.to_string();
                self.lost(&reason);
                return Ok(());
            }
        }
        Ok(())
    }
}

async fn recv_on(rv: &mut Option<Rendezvous>) -> Result<FromPeer> {
    match rv.as_mut() {
        Some(rv) => rv.recv_from_peer().await,
        None => std::future::pending().await,
    }
}

async fn poll_on<T>(f: &mut Option<BoxFuture<'static, T>>) -> T {
    match f.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn next_on(route: &mut Option<Route>) -> Option<(u64, Vec<u8>)> {
    match route.as_mut() {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

/// Connect with backoff until `deadline`, and claim the session's slot with the peer
/// there too.
async fn reconnect(
    (relay, slot, side): (RelayAddr, Slot, Side),
    deadline: tokio::time::Instant,
    mut last: String,
) -> Result<Rendezvous> {
    let mut backoff = Backoff::default();
    while backoff.wait_within(deadline).await {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, meet(&relay, &slot, side)).await {
            Ok(Ok(rv)) => return Ok(rv),
            Ok(Err(e @ (Error::WrongCode | Error::Protocol(_)))) => return Err(e),
            Ok(Err(Error::RelayUnreachable { reason, .. })) => last = reason,
            Ok(Err(e)) => {
                tracing::debug!(%e, "resume attempt failed");
                last = e.to_string();
            }
            Err(_) => last = "the other side did not come back".into(),
        }
    }
    Err(Error::RelayLost {
        relay: relay.to_string(),
        secs: RELAY_GRACE.as_secs(),
        reason: last,
    })
}

/// One attempt: connect, claim the slot, wait for the peer.
async fn meet(relay: &RelayAddr, slot: &Slot, side: Side) -> Result<Rendezvous> {
    let mut rv = Rendezvous::connect(relay).await?;
    let host = (side == Side::Sender).then(|| Host {
        many: false,
        secret: slot.secret.clone(),
    });
    let present = match rv.claim(slot.nameplate, host.as_ref()).await {
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
    Ok(rv)
}
