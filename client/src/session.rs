//! Turns a rendezvous connection into an authenticated, encrypted link to the peer:
//! SPAKE2 on the code's words, explicit key confirmation, then sealed [`PeerMsg`]s.

use convey_shared::{
    Code,
    crypto::{Channel, Side, confirmation, verify_confirmation},
    pake::Pake,
    protocol::{peer::PeerMsg, rendezvous::Mood, tunnel::tunnel_token},
};

use crate::{Error, error::Result, rendezvous::Rendezvous};

/// A confirmed, encrypted link to the other side.
#[derive(Debug)]
pub(crate) struct PeerLink {
    rv: Rendezvous,
    channel: Channel,
    /// Names this session's WebSocket tunnel on the relay (derived from the session key).
    pub(crate) tunnel_token: String,
    /// The relay's STUN URL, for WebRTC.
    pub(crate) stun: Option<String>,
}

/// Run the PAKE and key confirmation. Nothing but the SPAKE2 message and the confirmation
/// MAC leaves this machine before the peer has proven it knows the code.
pub(crate) async fn establish(mut rv: Rendezvous, code: &Code, side: Side) -> Result<PeerLink> {
    let (pake, msg) = Pake::start(code);
    rv.send_body(&msg).await?;
    let peer_msg = rv.recv_body().await?;
    let Ok(key) = pake.finish(&peer_msg) else {
        rv.close(Mood::Scary).await;
        return Err(Error::WrongCode);
    };
    rv.send_body(&confirmation(&key, side)).await?;
    let peer_confirm = rv.recv_body().await?;
    if !verify_confirmation(&key, side.other(), &peer_confirm) {
        rv.close(Mood::Scary).await;
        return Err(Error::WrongCode);
    }
    let channel = Channel::new(&key, side);
    Ok(PeerLink {
        stun: rv.stun.clone(),
        rv,
        channel,
        tunnel_token: tunnel_token(&key),
    })
}

impl PeerLink {
    pub(crate) async fn send(&mut self, msg: &PeerMsg) -> Result<()> {
        let json = serde_json::to_vec(msg).expect("peer messages always serialize");
        let sealed = self.channel.seal(&json);
        self.rv.send_body(&sealed).await
    }

    pub(crate) async fn recv(&mut self) -> Result<PeerMsg> {
        let sealed = self.rv.recv_body().await?;
        let json = self
            .channel
            .open(&sealed)
            .map_err(|e| Error::Protocol(e.to_string()))?;
        serde_json::from_slice(&json).map_err(|e| Error::Protocol(format!("bad message from peer: {e}")))
    }

    /// Run `work` (a prompt, a long check) while keeping the relay connection alive.
    pub(crate) async fn keep_alive_while<F: Future>(&mut self, work: F) -> F::Output {
        self.rv.keep_alive_while(work).await
    }

    pub(crate) async fn register_swarm(&mut self, info_hash: &str) -> Result<()> {
        self.rv.register_swarm(info_hash).await
    }

    pub(crate) async fn close(self, mood: Mood) {
        self.rv.close(mood).await;
    }
}
