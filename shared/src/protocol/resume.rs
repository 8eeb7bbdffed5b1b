//! Picking a session up again after the relay connection was lost (a relay restart, a
//! load balancer that dropped one side): where the two sides meet again, and the hello
//! each sends there so the other re-sends exactly the sealed messages that never arrived.
//!
//! Both come from the session key, never from the code: a guesser of the code learns
//! nothing about them, and only the relay (which sees the slot and the hellos) or the two
//! peers can name the slot. The relay could occupy it (a denial of service it can do
//! anyway) but cannot read, forge or replay a sealed message, and a hello it alters fails
//! its MAC.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::{
    Nameplate,
    crypto::{SessionKey, Side},
};

/// What a resume hello starts with.
const MAGIC: &[u8; 16] = b"convey-resume-v1";
const MAC_LEN: usize = 16;
/// Length of a resume hello: magic, received count, MAC.
pub const HELLO_LEN: usize = MAGIC.len() + 8 + MAC_LEN;

/// Nameplates at or above this are resume slots; codes use far smaller numbers.
pub const SLOT_BASE: u32 = 0x4000_0000;

/// Where the two sides of a session meet again: a nameplate the sender claims as its host
/// with `secret`, and the receiver as a guest.
#[derive(Clone, PartialEq, Eq)]
pub struct Slot {
    pub nameplate: Nameplate,
    pub secret: String,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("nameplate", &self.nameplate)
            .finish_non_exhaustive()
    }
}

impl Slot {
    pub fn new(key: &SessionKey) -> Self {
        let n = key.derive("resume-nameplate");
        let raw = u32::from_be_bytes([n[0], n[1], n[2], n[3]]);
        Self {
            nameplate: Nameplate(SLOT_BASE | (raw & (SLOT_BASE - 1))),
            secret: hex::encode(&key.derive("resume-host")[..16]),
            key: key.derive("resume-hello"),
        }
    }

    fn mac(&self, side: Side, received: u64) -> [u8; MAC_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.as_slice()).expect("HMAC takes any key length");
        mac.update(side.label().as_bytes());
        mac.update(&received.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// `side`'s hello: it has received `received` sealed messages from the other side.
    pub fn hello(&self, side: Side, received: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&received.to_be_bytes());
        out.extend_from_slice(&self.mac(side, received));
        out
    }

    /// The count in the hello `from` sent, if it is one and its MAC is right.
    pub fn parse_hello(&self, from: Side, body: &[u8]) -> Option<u64> {
        if body.len() != HELLO_LEN || !body.starts_with(MAGIC) {
            return None;
        }
        let count: [u8; 8] = body[MAGIC.len()..MAGIC.len() + 8].try_into().ok()?;
        let received = u64::from_be_bytes(count);
        let tag = &body[MAGIC.len() + 8..];
        // Constant time is moot for a tag over a public count, but costs nothing.
        let expected = self.mac(from, received);
        let same = tag.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        same.then_some(received)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SessionKey {
        SessionKey::from_slice(&[b; 32]).expect("32 bytes")
    }

    #[test]
    fn both_sides_meet_on_one_slot_and_read_each_others_hello() {
        let (a, b) = (Slot::new(&key(1)), Slot::new(&key(1)));
        assert_eq!(a, b);
        assert!(a.nameplate.0 >= SLOT_BASE);
        assert_eq!(a.secret.len(), 32);
        let hello = a.hello(Side::Sender, 5);
        assert_eq!(hello.len(), HELLO_LEN);
        assert_eq!(b.parse_hello(Side::Sender, &hello), Some(5));
        // Reflected back, or altered, it is refused.
        assert_eq!(b.parse_hello(Side::Receiver, &hello), None);
        let mut bad = hello.clone();
        bad[MAGIC.len() + 7] ^= 1;
        assert_eq!(b.parse_hello(Side::Sender, &bad), None);
        assert_eq!(b.parse_hello(Side::Sender, &hello[1..]), None);
    }

    #[test]
    fn another_session_has_another_slot() {
        let (a, b) = (Slot::new(&key(1)), Slot::new(&key(2)));
        assert_ne!(a.nameplate, b.nameplate);
        assert_ne!(a.secret, b.secret);
        assert_eq!(b.parse_hello(Side::Sender, &a.hello(Side::Sender, 0)), None);
    }
}
