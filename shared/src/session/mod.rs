//! The conversation between two peers as sans-IO state machines: bodies from the relay (or a
//! peer route) go in, bodies to send and events for the program come out. No sockets, no
//! clock, no tasks, so the CLI's async code and the browser page's WebAssembly drive the same
//! code, and two instances wired together in memory test it.
//!
//! A session has two stages:
//! 1. [`Handshake`]: SPAKE2 on the code's words, then key confirmation, the receiver (the
//!    relay's guest) first. It ends in [`Established`]: the sealed channel and every value
//!    derived from the session key (tunnel token, hellos, resume slot).
//! 2. A role machine over sealed [`crate::protocol::peer::PeerMsg`]s: [`ReceiverSession`]
//!    for the guest, [`SenderSession`] for the host (one per receiver). Each is told what
//!    its side sends (`sent`) and checks what comes in (`handle`): it knows which messages
//!    may come next and refuses the others, so a peer that sends an answer to a receiver, a
//!    second offer, or a swarm message outside a swarm is named as a protocol error.
//!
//! Time is the driver's: the machines say whether a message is owed
//! ([`Handshake::patience`], [`ReceiverSession::awaits_sender`]), and the driver turns
//! silence past its limit into an error.

mod established;
mod handshake;
mod receiver;
mod sender;
#[cfg(test)]
mod tests;

pub use established::{Established, SealError};
pub use handshake::{Handshake, HandshakeError, Step};
pub use receiver::{CheckedFiles, OfferError, ReceiverSession, check_files, top_names};
pub use sender::SenderSession;

/// A message that this side's machine does not expect now: named by its type, never quoted
/// (its text is the peer's choice).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected {got} from the peer (this side expected {expected})")]
pub struct Unexpected {
    pub got: &'static str,
    pub expected: &'static str,
}
