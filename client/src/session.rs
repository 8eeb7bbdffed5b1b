//! Turns a rendezvous connection into an authenticated, encrypted link to the peer by
//! driving the shared session machines: the handshake (SPAKE2 on the code's words, key
//! confirmation), then sealed [`PeerMsg`]s checked by this side's role machine.

use convey_shared::{
    Code,
    crypto::Side,
    protocol::{peer::PeerMsg, rendezvous::Mood},
    session::{Established, Handshake, HandshakeError, ReceiverSession, SealError, SenderSession},
};

use crate::{
    Error,
    error::Result,
    relay_link::{RelayLink, RouteAttacher},
    rendezvous::Rendezvous,
};

/// A confirmed, encrypted link to the other side: the relay connection (which outlives a
/// relay restart), the sealed channel, and this side's session machine from
/// [`convey_shared::session`], which checks every message in and notes every message out.
#[derive(Debug)]
pub(crate) struct PeerLink {
    relay: RelayLink,
    keys: Established,
    role: Role,
    /// The relay's STUN URL, for WebRTC.
    pub(crate) stun: Option<String>,
}

#[derive(Debug)]
enum Role {
    Sender(SenderSession),
    Receiver(ReceiverSession),
}

/// How often a sender that is still preparing its offer says so.
pub(crate) const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);

/// Drive the shared [`Handshake`] over the rendezvous: SPAKE2, then key confirmation, the
/// receiver first. Nothing but the SPAKE2 message and the confirmation MAC leaves this
/// machine before the peer has proven it knows the code; a sender that sees a wrong
/// confirmation closes with the "scary" mood (the relay counts a failed try), and one whose
/// receiver leaves or goes silent before confirming counts it too (in the relay and in
/// `many.rs`).
pub(crate) async fn establish(mut rv: Rendezvous, code: &Code, side: Side) -> Result<PeerLink> {
    let (mut handshake, first) = Handshake::start(code, side);
    rv.send_body(&first).await?;
    let keys = loop {
        let body = rv.recv_body().await?;
        let step = match handshake.handle(&body) {
            Ok(step) => step,
            Err(e) => {
                rv.close(Mood::Scary).await;
                return Err(match e {
                    HandshakeError::Malformed | HandshakeError::WrongCode | HandshakeError::Over => {
                        Error::WrongCode
                    }
                });
            }
        };
        for out in &step.send {
            rv.send_body(out).await?;
        }
        if let Some(keys) = step.established {
            break *keys;
        }
    };
    let role = match side {
        Side::Sender => Role::Sender(SenderSession::new()),
        Side::Receiver => Role::Receiver(ReceiverSession::new()),
    };
    Ok(PeerLink {
        stun: rv.stun.clone(),
        relay: RelayLink::new(rv, keys.slot.clone(), side),
        keys,
        role,
    })
}

impl PeerLink {
    /// What the session key gave this side: tunnel token, hellos, resume slot.
    pub(crate) fn keys(&self) -> &Established {
        &self.keys
    }

    pub(crate) async fn send(&mut self, msg: &PeerMsg) -> Result<()> {
        let sealed = self.keys.seal(msg).map_err(|e| match e {
            SealError::TooBig { .. } => Error::Refused(format!(
                "{e}: send fewer files or shorter names, or one stream (tar c FOLDER | convey send -)"
            )),
            e => Error::Protocol(e.to_string()),
        })?;
        match &mut self.role {
            Role::Sender(s) => s.sent(msg),
            Role::Receiver(r) => r.sent(msg),
        }
        self.relay.send(sealed)
    }

    /// The next message from the peer that this side's session expects now (cancel-safe).
    /// One it does not expect is a protocol error; one of a later version's types is
    /// skipped.
    pub(crate) async fn recv(&mut self) -> Result<PeerMsg> {
        loop {
            let sealed = self.relay.recv().await?;
            let msg = self
                .keys
                .open(&sealed)
                .map_err(|e| Error::Protocol(e.to_string()))?;
            let checked = match &mut self.role {
                Role::Sender(s) => s.handle(&msg),
                Role::Receiver(r) => r.handle(&msg),
            };
            checked.map_err(|e| Error::Protocol(e.to_string()))?;
            if !matches!(msg, PeerMsg::Unknown) {
                return Ok(msg);
            }
        }
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

    /// One-to-one: a peer that vanishes from the relay with no route between the two is
    /// awaited a while (only its relay connection may have been cut) rather than taken for
    /// gone at once, as a swarm's sessions do.
    pub(crate) fn await_vanished_peer(&self) {
        self.relay.await_vanished(crate::relay_link::VANISHED_GRACE);
    }

    /// The peer closes its session as soon as it has this side's last message: closing,
    /// wait for that (see [`crate::relay_link::RelayLink::await_goodbye`]).
    pub(crate) fn await_goodbye(&self) {
        self.relay.await_goodbye();
    }

    pub(crate) async fn register_swarm(&mut self, info_hash: &str) -> Result<()> {
        self.relay.register_swarm(info_hash).await
    }

    pub(crate) async fn close(self, mood: Mood) {
        self.relay.close(mood).await;
    }
}
