//! A tunnel connection that outlives the relay connection under it. librqbit never resumes a
//! BitTorrent connection and waits 10 s and more before dialling a lost peer again, so a swarm
//! member whose tunnel was cut (a relay restart, a proxy dropping it) would sit idle. Instead
//! both tunnel ends keep their local socket, the dialling end opens a new tunnel end and says
//! which connection it continues and how much it had received; each end then sends again
//! exactly what the other never got. This file is the wire format and the bookkeeping, with
//! no I/O: what an end keeps until the other acknowledges it.
//!
//! The first message through a resumable tunnel end is a [`Hello`] (a 16-byte magic no
//! BitTorrent handshake or push opening starts with, a random connection id, and the bytes
//! received so far). Every later message starts with a one-byte tag: data, an acknowledgement
//! (the total received, little-endian u64), or the end of the connection (the local socket
//! closed: there is nothing to resume).
//!
//! A tunnel can also die without a word (a NAT or a load balancer forgetting the connection
//! sends neither a close nor a reset), and the relay does not answer WebSocket pings on a
//! tunnel. So an end that has sent nothing for [`KEEPALIVE`] acknowledges all it holds, and
//! an end that has heard nothing for [`SILENCE`] takes the tunnel as lost and resumes on a
//! new one.
//!
//! The id is random, not derived from the session key: only the two ends of this session's
//! tunnel (whose token is derived from the key) can present it, and the relay, which sees it,
//! could already cut or alter the tunnel's bytes; the content under it is sealed chunk by
//! chunk and every piece is hash-checked, so an end that resumed with wrong bytes gets pieces
//! that fail their check, never wrong content.

use std::{collections::VecDeque, time::Duration};

use bytes::Bytes;

/// What a resumable tunnel end's first message starts with.
pub const MAGIC: &[u8; 16] = b"convey-tunnel-r1";
/// Length of a [`Hello`]: magic, flags, connection id, bytes received.
pub const HELLO_LEN: usize = MAGIC.len() + 1 + 16 + 8;
/// Tag of a message carrying bytes of the connection.
pub const DATA: u8 = 0;
const ACK: u8 = 1;
const FIN: u8 = 2;
const GONE: u8 = 3;
/// Most bytes an end sends beyond what the other has acknowledged.
pub const WINDOW: u64 = 8 << 20;
/// An end acknowledges after receiving this many bytes since its last acknowledgement.
pub const ACK_EVERY: u64 = 1 << 20;
/// An end that has sent nothing through a tunnel for this long acknowledges all it holds
/// (see [`Received::ack_all`]): a sign of life.
pub const KEEPALIVE: Duration = Duration::from_secs(2);
/// An end that has heard nothing through a tunnel for this long (three keep-alives missed)
/// takes the tunnel as lost: well inside the 10 s after which librqbit drops a peer that
/// sent nothing, so the connection is resumed before librqbit gives up on it.
pub const SILENCE: Duration = Duration::from_secs(6);

/// The first message of each end of a resumable tunnel connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Which connection this is (chosen at random by the dialling end).
    pub conn: [u8; 16],
    /// This end continues a connection a lost tunnel carried before.
    pub again: bool,
    /// Bytes of the connection this end has received.
    pub received: u64,
}

impl Hello {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HELLO_LEN);
        out.extend_from_slice(MAGIC);
        out.push(u8::from(self.again));
        out.extend_from_slice(&self.conn);
        out.extend_from_slice(&self.received.to_le_bytes());
        out
    }

    /// A hello, or `None` for anything else (such as a plain tunnel's first bytes).
    pub fn parse(msg: &[u8]) -> Option<Self> {
        if msg.len() != HELLO_LEN || !msg.starts_with(MAGIC) {
            return None;
        }
        let rest = &msg[MAGIC.len()..];
        let again = match rest[0] {
            0 => false,
            1 => true,
            _ => return None,
        };
        Some(Self {
            again,
            conn: rest[1..17].try_into().ok()?,
            received: u64::from_le_bytes(rest[17..25].try_into().ok()?),
        })
    }
}

/// One message after the hello.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Bytes of the connection.
    Data(Bytes),
    /// The other end has received this many bytes in all.
    Ack(u64),
    /// The other end's local socket closed: the connection is over.
    Fin,
    /// The other end knows no such connection (it ended, or timed out waiting).
    Gone,
}

impl Frame {
    pub fn parse(mut msg: Bytes) -> Option<Self> {
        let tag = *msg.first()?;
        let body = msg.split_off(1);
        match (tag, body.len()) {
            (DATA, n) if n > 0 => Some(Self::Data(body)),
            (ACK, 8) => Some(Self::Ack(u64::from_le_bytes(body[..].try_into().ok()?))),
            (FIN, 0) => Some(Self::Fin),
            (GONE, 0) => Some(Self::Gone),
            _ => None,
        }
    }

    /// The message for a control frame (data is sent as [`DATA`] followed by the bytes).
    pub fn control(&self) -> Vec<u8> {
        match self {
            Self::Data(b) => [&[DATA][..], b].concat(),
            Self::Ack(n) => [&[ACK][..], &n.to_le_bytes()].concat(),
            Self::Fin => vec![FIN],
            Self::Gone => vec![GONE],
        }
    }
}

/// What one end has sent and the other has not acknowledged: data messages (tag included),
/// kept to be sent again through the next tunnel if this one is lost.
#[derive(Debug, Default)]
pub struct Replay {
    /// Bytes the other end has acknowledged.
    acked: u64,
    /// Bytes sent in all.
    sent: u64,
    kept: VecDeque<Bytes>,
}

impl Replay {
    /// Keep a data message (as sent, tag first) until it is acknowledged.
    pub fn push(&mut self, msg: Bytes) {
        self.sent += msg.len().saturating_sub(1) as u64;
        self.kept.push_back(msg);
    }

    /// Bytes sent and not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.sent - self.acked
    }

    /// The other end has `received` bytes in all: forget them. `false` if that is more than
    /// was sent or less than it said before (a confused or hostile end).
    pub fn acked(&mut self, received: u64) -> bool {
        if received > self.sent || received < self.acked {
            return false;
        }
        while self.acked < received {
            let Some(front) = self.kept.front_mut() else { break };
            let len = front.len() as u64 - 1;
            let need = received - self.acked;
            if len <= need {
                self.acked += len;
                self.kept.pop_front();
            } else {
                // Only part of the front message arrived: keep its rest as a message.
                #[allow(clippy::cast_possible_truncation)] // need < len, a message's length
                let rest = front.slice(1 + need as usize..);
                *front = Bytes::from([&[DATA][..], &rest].concat());
                self.acked = received;
            }
        }
        true
    }

    /// A new tunnel took over and the other end had `received` bytes: the messages to send
    /// again, in order; `None` if `received` is impossible.
    pub fn resend(&mut self, received: u64) -> Option<Vec<Bytes>> {
        self.acked(received).then(|| self.kept.iter().cloned().collect())
    }
}

/// What one end has received, and when to acknowledge it.
#[derive(Debug, Default)]
pub struct Received {
    pub total: u64,
    acked: u64,
}

impl Received {
    /// `n` more bytes arrived; an acknowledgement to send, when one is due.
    pub fn add(&mut self, n: usize) -> Option<Vec<u8>> {
        self.total += n as u64;
        (self.total - self.acked >= ACK_EVERY).then(|| {
            self.acked = self.total;
            Frame::Ack(self.total).control()
        })
    }

    /// An acknowledgement of everything received so far, due or not: the keep-alive.
    pub fn ack_all(&mut self) -> Vec<u8> {
        self.acked = self.total;
        Frame::Ack(self.total).control()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(bytes: &[u8]) -> Bytes {
        Bytes::from(Frame::Data(Bytes::copy_from_slice(bytes)).control())
    }

    #[test]
    fn a_hello_reads_back_and_nothing_else_passes_for_one() {
        let hello = Hello {
            conn: [7; 16],
            again: true,
            received: 123_456_789,
        };
        assert_eq!(Hello::parse(&hello.encode()), Some(hello));
        let mut bt = vec![19u8];
        bt.extend_from_slice(b"BitTorrent protocol");
        bt.resize(HELLO_LEN, 0);
        assert_eq!(Hello::parse(&bt), None);
        let mut bad_flag = hello.encode();
        bad_flag[MAGIC.len()] = 2;
        assert_eq!(Hello::parse(&bad_flag), None);
        assert_eq!(Hello::parse(&hello.encode()[..HELLO_LEN - 1]), None);
    }

    #[test]
    fn frames_read_back_and_malformed_ones_are_refused() {
        for f in [
            Frame::Ack(5),
            Frame::Fin,
            Frame::Gone,
            Frame::Data(Bytes::from_static(b"xy")),
        ] {
            let msg = Bytes::from(f.control());
            assert_eq!(Frame::parse(msg), Some(f));
        }
        for bad in [&[][..], &[DATA][..], &[ACK, 1, 2][..], &[FIN, 0][..], &[9][..]] {
            assert_eq!(Frame::parse(Bytes::copy_from_slice(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn what_was_not_received_is_sent_again_from_the_first_missing_byte() {
        let mut replay = Replay::default();
        replay.push(data(b"abcd"));
        replay.push(data(b"efgh"));
        replay.push(data(b"ij"));
        assert_eq!(replay.in_flight(), 10);
        assert!(replay.acked(2));
        assert_eq!(replay.in_flight(), 8);
        let again = replay.resend(6).expect("6 of 10 bytes is possible");
        let bytes: Vec<u8> = again.iter().flat_map(|m| m[1..].to_vec()).collect();
        assert_eq!(bytes, b"ghij");
        assert!(again.iter().all(|m| m[0] == DATA));
        assert_eq!(replay.in_flight(), 4);
        assert_eq!(replay.resend(10).map(|v| v.len()), Some(0));
    }

    #[test]
    fn an_impossible_count_is_refused() {
        let mut replay = Replay::default();
        replay.push(data(b"abcd"));
        assert!(replay.acked(3));
        assert!(!replay.acked(2), "less than acknowledged before");
        assert!(!replay.acked(5), "more than was sent");
        assert!(replay.resend(9).is_none());
    }

    #[test]
    fn acknowledgements_come_every_mebibyte() {
        let mut got = Received::default();
        assert!(got.add(600 << 10).is_none());
        let ack = got.add(600 << 10).expect("past 1 MiB");
        assert_eq!(Frame::parse(Bytes::from(ack)), Some(Frame::Ack(1200 << 10)));
        assert!(got.add(10).is_none());
        let all = got.ack_all();
        assert_eq!(
            Frame::parse(Bytes::from(all)),
            Some(Frame::Ack((1200 << 10) + 10))
        );
        assert!(
            got.add(ACK_EVERY as usize - 1).is_none(),
            "counted from the keep-alive"
        );
    }
}
