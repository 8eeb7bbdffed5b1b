//! The sender's side of a session with one receiver: after the offer, which receiver
//! messages may come and what each means. A sender of many receivers runs one per receiver.

use crate::protocol::peer::{ABILITY_SWARM, OfferBody, PeerMsg};

use super::Unexpected;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Confirmed; the offer is not out yet (the sender may still be hashing).
    Preparing,
    AwaitAnswer,
    Transferring,
    Over,
}

/// The sender's session with one receiver.
#[derive(Debug)]
pub struct SenderSession {
    phase: Phase,
    swarm: bool,
    pushed: bool,
    fetched: bool,
}

impl Default for SenderSession {
    fn default() -> Self {
        Self::new()
    }
}

impl SenderSession {
    pub fn new() -> Self {
        Self {
            phase: Phase::Preparing,
            swarm: false,
            pushed: false,
            fetched: false,
        }
    }

    /// Note a message this side sends (the offer, the end of the swarm), so the phase
    /// follows.
    pub fn sent(&mut self, msg: &PeerMsg) {
        match msg {
            PeerMsg::Offer(offer) => {
                self.phase = Phase::AwaitAnswer;
                self.swarm = offer.abilities.iter().any(|a| a == ABILITY_SWARM);
                self.pushed = matches!(offer.body, OfferBody::Pushed { .. });
            }
            PeerMsg::SwarmDone => self.phase = Phase::Over,
            _ => {}
        }
    }

    /// Has the receiver said it is done (or declined)?
    pub fn is_over(&self) -> bool {
        self.phase == Phase::Over
    }

    /// Check the receiver's next message against the phase, and advance: `Ok` means the
    /// driver acts on it; a message type from a later version is `Ok` too, to be skipped.
    pub fn handle(&mut self, msg: &PeerMsg) -> Result<(), Unexpected> {
        let unexpected = |expected| Unexpected {
            got: msg.kind(),
            expected,
        };
        match (self.phase, msg) {
            (_, PeerMsg::Unknown) => Ok(()),
            (Phase::Preparing | Phase::AwaitAnswer, PeerMsg::Answer { accept: false, .. }) => {
                self.phase = Phase::Over;
                Ok(())
            }
            (Phase::AwaitAnswer, PeerMsg::Answer { accept: true, .. }) => {
                self.phase = Phase::Transferring;
                Ok(())
            }
            (Phase::Preparing, _) => Err(unexpected("nothing before the offer")),
            (Phase::AwaitAnswer, _) => Err(unexpected("an answer to the offer")),
            (Phase::Transferring, PeerMsg::Have { .. }) if self.swarm => Ok(()),
            (Phase::Transferring, PeerMsg::Fetch) if self.pushed && !self.fetched => {
                self.fetched = true;
                Ok(())
            }
            (Phase::Transferring, PeerMsg::Done { .. }) => {
                self.phase = Phase::Over;
                Ok(())
            }
            (Phase::Transferring, _) => Err(unexpected("the receiver's progress or its end")),
            (Phase::Over, _) => Err(unexpected("nothing after the end")),
        }
    }
}
