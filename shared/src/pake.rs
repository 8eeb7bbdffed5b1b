//! SPAKE2 (symmetric, Ed25519) as a tiny state machine: start with the code, exchange one
//! message through the relay, finish with the peer's message to get the shared session key.

use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::{Code, crypto::SessionKey};

/// Domain separation: binds the exchange to this protocol version and to the nameplate.
fn identity(code: &Code) -> Identity {
    Identity::new(format!("convey-v1/pake/{}", code.nameplate()).as_bytes())
}

/// One side's half-finished exchange.
pub struct Pake {
    state: Spake2<Ed25519Group>,
}

impl std::fmt::Debug for Pake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pake(..)")
    }
}

/// The peer's PAKE message could not be used.
#[derive(Debug, thiserror::Error)]
#[error("the peer sent a malformed key-exchange message")]
pub struct PakeError;

impl Pake {
    /// Start the exchange; the returned bytes go to the peer.
    pub fn start(code: &Code) -> (Self, Vec<u8>) {
        let (state, msg) =
            Spake2::<Ed25519Group>::start_symmetric(&Password::new(code.password()), &identity(code));
        (Self { state }, msg)
    }

    /// Finish with the peer's message. A wrong code still yields *a* key: it is only
    /// detected by key confirmation ([`crate::crypto::confirmation`]).
    pub fn finish(self, peer_msg: &[u8]) -> Result<SessionKey, PakeError> {
        let key = self.state.finish(peer_msg).map_err(|_| PakeError)?;
        SessionKey::from_slice(&key).ok_or(PakeError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_code_same_key_other_code_other_key() {
        let code: Code = "7-purple-otter".parse().unwrap();
        let (a, ma) = Pake::start(&code);
        let (b, mb) = Pake::start(&code);
        let (ka, kb) = (a.finish(&mb).unwrap(), b.finish(&ma).unwrap());
        assert_eq!(ka.expose(), kb.expose());

        let wrong: Code = "7-purple-ottoman".parse().unwrap();
        let (a, ma) = Pake::start(&code);
        let (c, mc) = Pake::start(&wrong);
        assert_ne!(a.finish(&mc).unwrap().expose(), c.finish(&ma).unwrap().expose());
    }

    #[test]
    fn garbage_is_an_error() {
        let (a, _) = Pake::start(&"7-purple-otter".parse().unwrap());
        assert!(a.finish(b"nope").is_err());
    }
}
