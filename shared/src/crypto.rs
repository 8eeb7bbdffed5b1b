//! Keys derived from the PAKE session key: key confirmation, the sealed peer channel, and
//! per-purpose subkeys. Every derivation is HKDF-SHA256 with its own label.

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit,
    aead::{Aead, Payload},
};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Which end of a transfer we are; part of every directional key label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Sender,
    Receiver,
}

impl Side {
    pub fn other(self) -> Self {
        match self {
            Self::Sender => Self::Receiver,
            Self::Receiver => Self::Sender,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Sender => "sender",
            Self::Receiver => "receiver",
        }
    }
}

/// The shared secret both sides got from SPAKE2. Never printed, zeroed on drop.
pub struct SessionKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

impl SessionKey {
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(arr)))
    }

    /// The raw key, for tests comparing the two sides.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// A 32-byte subkey for one purpose.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        let hk = Hkdf::<Sha256>::new(None, self.0.as_slice());
        let mut out = Zeroizing::new([0u8; 32]);
        hk.expand(format!("convey-v1/{purpose}").as_bytes(), out.as_mut_slice())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }
}

type HmacSha256 = Hmac<Sha256>;

fn confirm_mac(key: &SessionKey, side: Side) -> HmacSha256 {
    let k = key.derive("confirm");
    let mut mac = HmacSha256::new_from_slice(k.as_slice()).expect("HMAC takes any key length");
    mac.update(side.label().as_bytes());
    mac
}

/// The key-confirmation message `side` sends. Side-specific, so it cannot be reflected.
pub fn confirmation(key: &SessionKey, side: Side) -> Vec<u8> {
    confirm_mac(key, side).finalize().into_bytes().to_vec()
}

/// Check the peer's confirmation in constant time. `false` means a wrong code (or a guess).
pub fn verify_confirmation(key: &SessionKey, peer: Side, msg: &[u8]) -> bool {
    confirm_mac(key, peer).verify_slice(msg).is_ok()
}

/// A sealed message failed to open: tampered, replayed, reordered or from another session.
#[derive(Debug, thiserror::Error)]
#[error("a message from the peer failed authentication")]
pub struct OpenError;

/// The encrypted, ordered channel between the two peers, carried by the relay as opaque
/// blobs. One key per direction; nonces are message counters, so replays and reordering fail.
pub struct Channel {
    seal: ChaCha20Poly1305,
    open: ChaCha20Poly1305,
    sent: u64,
    received: u64,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("sent", &self.sent)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

fn nonce(counter: u64) -> chacha20poly1305::Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n.into()
}

fn cipher(key: &SessionKey, side: Side) -> ChaCha20Poly1305 {
    let k = key.derive(&format!("channel/{}", side.label()));
    ChaCha20Poly1305::new(&(*k).into())
}

impl Channel {
    pub fn new(key: &SessionKey, me: Side) -> Self {
        Self {
            seal: cipher(key, me),
            open: cipher(key, me.other()),
            sent: 0,
            received: 0,
        }
    }

    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let n = nonce(self.sent);
        self.sent += 1;
        self.seal
            .encrypt(
                &n,
                Payload {
                    msg: plaintext,
                    aad: b"convey-v1/channel",
                },
            )
            .expect("ChaCha20-Poly1305 encryption cannot fail for in-memory messages")
    }

    pub fn open(&mut self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let n = nonce(self.received);
        let out = self
            .open
            .decrypt(
                &n,
                Payload {
                    msg: sealed,
                    aad: b"convey-v1/channel",
                },
            )
            .map_err(|_| OpenError)?;
        self.received += 1;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SessionKey {
        SessionKey::from_slice(&[b; 32]).unwrap()
    }

    #[test]
    fn confirmation_is_side_bound() {
        let k = key(1);
        let from_sender = confirmation(&k, Side::Sender);
        assert!(verify_confirmation(&k, Side::Sender, &from_sender));
        assert!(!verify_confirmation(&k, Side::Receiver, &from_sender));
        assert!(!verify_confirmation(&key(2), Side::Sender, &from_sender));
    }

    #[test]
    fn channel_roundtrip_rejects_replay_and_reflection() {
        let (mut s, mut r) = (
            Channel::new(&key(3), Side::Sender),
            Channel::new(&key(3), Side::Receiver),
        );
        let m1 = s.seal(b"hello");
        let m2 = s.seal(b"world");
        assert_eq!(r.open(&m1).unwrap(), b"hello");
        assert!(r.open(&m1).is_err(), "replay must fail");
        assert_eq!(r.open(&m2).unwrap(), b"world");
        let mine = s.seal(b"x");
        assert!(s.open(&mine).is_err(), "own messages must not open");
    }

    #[test]
    fn debug_never_shows_keys() {
        assert_eq!(format!("{:?}", key(9)), "SessionKey(<redacted>)");
    }
}
