//! The sender's side of the paths: [`Offered`] is everything a sender offers for one local
//! listener (librqbit's, or the stream listener): direct addresses, a WebRTC offer, and the
//! relay tunnel. [`TunnelServer`] keeps one tunnel end waiting on the relay, and when the
//! receiver's end joins and speaks, connects it to the local listener and opens the next
//! waiting end. Both are owned: `shutdown` stops and awaits every task.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use convey_shared::protocol::{tunnel::TunnelSide, tunnel_resume::Hello};
use tokio::{net::TcpStream, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::{Transport, path, rtc::RtcPeer, task::OwnedTask, tunnel, tunnel_resume::Resumable};
use crate::{RelayAddr, backoff::Backoff, session::PeerLink, transfer::bt};

/// Most tunnels one sender serves at once.
const MAX_TUNNELS: usize = 8;

#[derive(Debug)]
pub struct TunnelServer {
    task: OwnedTask,
    /// Tunnels the receiver has opened so far.
    joined: Arc<AtomicU64>,
}

impl TunnelServer {
    /// Serve tunnel connections for session `token`, forwarding each to `target`.
    pub fn spawn(relay: RelayAddr, token: String, target: SocketAddr) -> Self {
        let joined = Arc::new(AtomicU64::new(0));
        let counter = joined.clone();
        let task = OwnedTask::spawn(move |cancel| serve(relay, token, target, cancel, counter));
        Self { task, joined }
    }

    /// Has the receiver come through the tunnel yet?
    pub fn in_use(&self) -> bool {
        self.joined.load(Ordering::Relaxed) > 0
    }

    pub async fn shutdown(self) {
        self.task.shutdown().await;
    }
}

async fn serve(
    relay: RelayAddr,
    token: String,
    target: SocketAddr,
    cancel: CancellationToken,
    joined: Arc<AtomicU64>,
) {
    let mut splices = JoinSet::new();
    let resumable = Resumable::default();
    let mut backoff = Backoff::default();
    loop {
        while splices.len() >= MAX_TUNNELS {
            tokio::select! {
                _ = splices.join_next() => {},
                () = cancel.cancelled() => break,
            }
        }
        let waiting = async {
            let mut ws = tunnel::connect(&relay, &token, TunnelSide::Listen).await?;
            let first = tunnel::first_message(&mut ws).await;
            Ok::<_, crate::Error>((ws, first))
        };
        tokio::pin!(waiting);
        // The waiting end is kept while splices end: dropping it would leave the relay
        // holding it as this side's waiting end, refusing every new one meanwhile.
        let opened = loop {
            tokio::select! {
                r = &mut waiting => break Some(r),
                () = cancel.cancelled() => break None,
                Some(_) = splices.join_next(), if !splices.is_empty() => {}
            }
        };
        let Some(opened) = opened else { break };
        let (ws, first) = match opened {
            Ok((ws, Some(first))) => (ws, first),
            // Refused, or closed before anyone joined: wait before the next end.
            failed => {
                if let Err(err) = failed {
                    tracing::debug!(%err, "tunnel end could not be opened; retrying");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_wait()) => {},
                    () = cancel.cancelled() => break,
                }
                continue;
            }
        };
        backoff.reset();
        let hello = Hello::parse(&first);
        if let Some(hello) = hello.filter(|h| h.again) {
            // A new tunnel under a connection that goes on; it is not a new connection.
            let resumable = resumable.clone();
            splices.spawn(async move {
                resumable.resume(ws, hello).await;
            });
            continue;
        }
        joined.fetch_add(1, Ordering::Relaxed);
        let (cancel, resumable) = (cancel.clone(), resumable.clone());
        splices.spawn(async move {
            let Ok(local) = TcpStream::connect(target).await else {
                return;
            };
            if let Some(hello) = hello {
                tokio::select! {
                    () = resumable.listen(ws, local, hello) => {}
                    () = cancel.cancelled() => {}
                }
                return;
            }
            tokio::select! {
                end = tunnel::splice(ws, local, Some(first)) => {
                    tracing::debug!(end.up, end.down, relay_said = ?end.relay_said, "tunnel closed");
                }
                () = cancel.cancelled() => {}
            }
        });
    }
    splices.shutdown().await;
}

/// What the sender offers for one local listener, and serves until [`Offered::shutdown`].
#[derive(Debug)]
pub(crate) struct Offered {
    pub(crate) hints: Vec<SocketAddr>,
    pub(crate) abilities: Vec<&'static str>,
    /// The WebRTC offer (SDP as JSON) to put in the sealed offer.
    pub(crate) rtc_sdp: Option<String>,
    rtc: Option<RtcPeer>,
    tunnel: Option<TunnelServer>,
    local: SocketAddr,
}

impl Offered {
    /// Prepare every path `transport` allows towards `127.0.0.1:port`.
    pub(crate) async fn new(transport: Transport, relay: &RelayAddr, link: &PeerLink, port: u16) -> Self {
        let local = SocketAddr::new(super::loopback(), port);
        let hints = if transport.allows_direct() {
            bt::direct_hints(port)
        } else {
            Vec::new()
        };
        let (rtc, rtc_sdp) = if transport.allows_webrtc() {
            match RtcPeer::offer(link.stun.clone()).await {
                Ok((peer, sdp)) => (Some(peer), Some(sdp)),
                Err(err) => {
                    tracing::debug!(%err, "no WebRTC path");
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        let tunnel = transport
            .allows_relay()
            .then(|| TunnelServer::spawn(relay.clone(), link.keys().tunnel_token.clone(), local));
        let abilities = if tunnel.is_some() {
            vec![convey_shared::protocol::peer::ABILITY_TUNNEL]
        } else {
            Vec::new()
        };
        Self {
            hints,
            abilities,
            rtc_sdp,
            rtc,
            tunnel,
            local,
        }
    }

    /// Say that the tunnel's ends take resumable connections (BitTorrent cannot resume a
    /// connection itself, and librqbit waits long before dialling a lost peer again).
    pub(crate) fn resume_tunnels(&mut self) {
        if self.tunnel.is_some() {
            self.abilities
                .push(convey_shared::protocol::peer::ABILITY_TUNNEL_RESUME);
        }
    }

    /// Nothing to serve (a text travels inside the offer).
    pub(crate) fn none() -> Self {
        Self {
            hints: Vec::new(),
            abilities: Vec::new(),
            rtc_sdp: None,
            rtc: None,
            tunnel: None,
            local: SocketAddr::new(super::loopback(), 0),
        }
    }

    /// The receiver accepted; with its WebRTC answer, start serving data channels.
    pub(crate) async fn answered(&self, rtc_answer: Option<String>) {
        if let (Some(peer), Some(answer)) = (&self.rtc, rtc_answer) {
            match peer.accept(&answer).await {
                Ok(()) => peer.serve(self.local).await,
                Err(err) => tracing::debug!(%err, "WebRTC answer refused"),
            }
        }
    }

    /// The path the receiver came through, if it came yet: tunnel or WebRTC if one of them
    /// carried a connection, else direct once data moved.
    pub(crate) fn path_in_use(&self, moved: bool) -> Option<&'static str> {
        if self.tunnel.as_ref().is_some_and(TunnelServer::in_use) {
            Some(path::RELAY)
        } else if self.rtc.as_ref().is_some_and(RtcPeer::in_use) {
            Some(path::WEBRTC)
        } else {
            moved.then_some(path::DIRECT)
        }
    }

    pub(crate) async fn shutdown(self) {
        if let Some(t) = self.tunnel {
            t.shutdown().await;
        }
        if let Some(r) = self.rtc {
            r.close().await;
        }
    }
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
