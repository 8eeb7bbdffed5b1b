//! Turns a rendezvous connection into an authenticated, encrypted link to the peer:
//! SPAKE2 on the code's words, explicit key confirmation, then sealed [`PeerMsg`]s.

use convey_shared::{
    Code,
    crypto::{Channel, Side, confirmation, verify_confirmation},
    pake::Pake,
    protocol::{
        MAX_MESSAGE_BYTES, peer::PeerMsg, push, rendezvous::Mood, resume::Slot, route, stream,
        tunnel::tunnel_token,
    },
};

use crate::{
    Error,
    error::Result,
    relay_link::{RelayLink, RouteAttacher},
    rendezvous::Rendezvous,
};

/// A confirmed, encrypted link to the other side.
#[derive(Debug)]
pub(crate) struct PeerLink {
    relay: RelayLink,
    channel: Channel,
    /// Names this session's WebSocket tunnel on the relay (derived from the session key).
    pub(crate) tunnel_token: String,
    /// The relay's STUN URL, for WebRTC.
    pub(crate) stun: Option<String>,
    /// What a stream's receiver writes first on the connection (derived from the session key).
    pub(crate) stream_hello: [u8; stream::HELLO_LEN],
    /// What a push's receiver writes first on the connection (derived from the session key).
    pub(crate) push_hello: [u8; push::HELLO_LEN],
    /// What the receiver writes first on the peer route (derived from the session key).
    pub(crate) route_hello: [u8; route::HELLO_LEN],
}

/// How often a sender that is still preparing its offer says so.
pub(crate) const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// Run the PAKE and key confirmation. Nothing but the SPAKE2 message and the confirmation
/// MAC leaves this machine before the peer has proven it knows the code.
///
/// The receiver (the relay's guest) confirms first, and the sender sends its own
/// confirmation only after checking the receiver's. So a guesser learns whether its one
/// guess was right only by sending a confirmation the sender checks: every run that does
/// not end in a valid confirmation from the receiver is visible to the sender as a failed
/// try (a wrong MAC, or a receiver that leaves or goes silent), and counts.
pub(crate) async fn establish(mut rv: Rendezvous, code: &Code, side: Side) -> Result<PeerLink> {
    let (pake, msg) = Pake::start(code);
    rv.send_body(&msg).await?;
    let peer_msg = rv.recv_body().await?;
    let Ok(key) = pake.finish(&peer_msg) else {
        rv.close(Mood::Scary).await;
        return Err(Error::WrongCode);
    };
    if side == Side::Receiver {
        rv.send_body(&confirmation(&key, side)).await?;
    }
    let peer_confirm = rv.recv_body().await?;
    if !verify_confirmation(&key, side.other(), &peer_confirm) {
        rv.close(Mood::Scary).await;
        return Err(Error::WrongCode);
    }
    if side == Side::Sender {
        rv.send_body(&confirmation(&key, side)).await?;
    }
    let channel = Channel::new(&key, side);
    Ok(PeerLink {
        stun: rv.stun.clone(),
        relay: RelayLink::new(rv, Slot::new(&key), side),
        channel,
        tunnel_token: tunnel_token(&key),
        stream_hello: stream::hello(&key),
        push_hello: push::hello(&key),
        route_hello: route::hello(&key),
    })
}

impl PeerLink {
    pub(crate) async fn send(&mut self, msg: &PeerMsg) -> Result<()> {
        let json = serde_json::to_vec(msg).expect("peer messages always serialize");
        // Base64 on the rendezvous grows a body by a third; the relay refuses more than this.
        let on_wire = json.len().div_ceil(3) * 4;
        if on_wire > MAX_MESSAGE_BYTES {
            return Err(Error::Refused(format!(
                "this {} is {} KiB, more than the {} KiB one message through the relay carries: send fewer files or shorter names, or one stream (tar c FOLDER | convey send -)",
                msg.kind(),
                on_wire / 1024,
                MAX_MESSAGE_BYTES / 1024
            )));
        }
        let sealed = self.channel.seal(&json);
        self.relay.send(sealed)
    }

    /// The next message from the peer (cancel-safe).
    pub(crate) async fn recv(&mut self) -> Result<PeerMsg> {
        let sealed = self.relay.recv().await?;
        let json = self
            .channel
            .open(&sealed)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| Error::Protocol(format!("bad message from peer: {e}")))
    }

    /// Run `work` (hashing before the offer) while telling the peer every [`HEARTBEAT`]
    /// that we are still here.
    pub(crate) async fn heartbeat_while<F: Future>(&mut self, work: F) -> Result<F::Output> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                () = tokio::time::sleep(HEARTBEAT) => self.send(&PeerMsg::Preparing).await?,
            }
        }
    }

    /// Run `work` (a prompt, a long check); the relay connection is kept alive by its own
    /// task meanwhile.
    pub(crate) async fn keep_alive_while<F: Future>(&mut self, work: F) -> F::Output {
        work.await
    }

    /// Where a connection between the peers is handed to this session, to carry its
    /// messages beside the relay (and without it, once the relay is gone).
    pub(crate) fn routes(&self) -> RouteAttacher {
        self.relay.attacher()
    }

    pub(crate) async fn register_swarm(&mut self, info_hash: &str) -> Result<()> {
        self.relay.register_swarm(info_hash).await
    }

    pub(crate) async fn close(self, mood: Mood) {
        self.relay.close(mood).await;
    }
}
