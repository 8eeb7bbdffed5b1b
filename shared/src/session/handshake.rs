//! SPAKE2 on the code's words and explicit key confirmation, as a machine that takes the
//! peer's bodies and says what to send. The receiver (the relay's guest) confirms first and
//! the sender confirms only after checking it, so a guesser learns whether its one guess was
//! right only by sending a confirmation the sender checks: every run that does not end in a
//! valid confirmation from the receiver is a failed try the sender sees (a wrong MAC, or a
//! receiver that leaves or goes silent in [`Handshake::patience`]).

use std::time::Duration;

use crate::{
    Code,
    crypto::{SessionKey, Side, confirmation, verify_confirmation},
    pake::Pake,
};

use super::Established;

/// Longest a key exchange with a present peer may take.
const PATIENCE: Duration = Duration::from_secs(60);

/// Why the key exchange failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's confirmation is wrong: the two sides typed different codes (or someone
    /// guessed).
    #[error("the code is wrong")]
    WrongCode,
    /// The peer's SPAKE2 message is not one.
    #[error("the peer sent a malformed key-exchange message")]
    Malformed,
    /// A body after the handshake had ended (or failed).
    #[error("the key exchange is over")]
    Over,
}

enum State {
    /// Our SPAKE2 message is out; waiting for the peer's.
    Exchanging(Pake),
    /// The key is known but not confirmed; waiting for the peer's confirmation.
    Confirming(SessionKey),
    Over,
}

/// One side's key exchange.
pub struct Handshake {
    side: Side,
    state: State,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stage = match self.state {
            State::Exchanging(_) => "exchanging",
            State::Confirming(_) => "confirming",
            State::Over => "over",
        };
        f.debug_struct("Handshake")
            .field("side", &self.side)
            .field("stage", &stage)
            .finish()
    }
}

/// What the driver does after a body went in.
#[derive(Debug)]
pub struct Step {
    /// Bodies to send to the peer, in order.
    pub send: Vec<Vec<u8>>,
    /// Set once the peer proved it knows the code.
    pub established: Option<Box<Established>>,
}

impl Handshake {
    /// Start; the returned body (the SPAKE2 message) goes to the peer first.
    pub fn start(code: &Code, side: Side) -> (Self, Vec<u8>) {
        let (pake, msg) = Pake::start(code);
        (
            Self {
                side,
                state: State::Exchanging(pake),
            },
            msg,
        )
    }

    /// How long the driver may wait for the peer's next body.
    pub fn patience(&self) -> Duration {
        PATIENCE
    }

    /// Has the handshake ended (established or failed)?
    pub fn is_over(&self) -> bool {
        matches!(self.state, State::Over)
    }

    /// Take the peer's next body. Any error ends the handshake: the driver closes the
    /// rendezvous (a wrong code with the "scary" mood, so the sender counts it).
    pub fn handle(&mut self, body: &[u8]) -> Result<Step, HandshakeError> {
        match std::mem::replace(&mut self.state, State::Over) {
            State::Exchanging(pake) => {
                let key = pake.finish(body).map_err(|_| HandshakeError::Malformed)?;
                let send = match self.side {
                    Side::Receiver => vec![confirmation(&key, Side::Receiver)],
                    Side::Sender => Vec::new(),
                };
                self.state = State::Confirming(key);
                Ok(Step {
                    send,
                    established: None,
                })
            }
            State::Confirming(key) => {
                if !verify_confirmation(&key, self.side.other(), body) {
                    return Err(HandshakeError::WrongCode);
                }
                let send = match self.side {
                    Side::Sender => vec![confirmation(&key, Side::Sender)],
                    Side::Receiver => Vec::new(),
                };
                Ok(Step {
                    send,
                    established: Some(Box::new(Established::new(&key, self.side))),
                })
            }
            State::Over => Err(HandshakeError::Over),
        }
    }
}
