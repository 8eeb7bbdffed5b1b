//! The page's sending side, sans-IO: files picked on the page go to `convey receive` as a
//! pushed offer (the kind the CLI sends), over a WebRTC data channel the page offers, else
//! through the relay's tunnel (the receiver picks the path). The page reads each
//! frame as it goes (no pass over the content first, no seeder in the browser): this module
//! seals it with the content cipher, hashes each file, and sends the digests once every
//! frame is out. The handshake and the session machine are convey-shared's, as in the CLI.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use convey_shared::{
    Code, bits,
    chunk_map::{ChunkMap, FRAME_CHUNKS, FRAME_PLAIN},
    content::{ContentCipher, ContentKey, PLAIN_CHUNK, TAG_LEN},
    crypto::Side,
    display,
    manifest::{CheckedManifest, FileEntry, Manifest},
    protocol::{
        peer::{ABILITY_PUSH, ABILITY_TUNNEL, Offer, OfferBody, PeerMsg, Prepared},
        push::{HELLO_LEN, HaveField, Item, frame_plain_len, have_len},
        rendezvous::{ClientMsg, ErrorKind, Host, Mood, ServerMsg},
        tunnel::{TUNNEL_PATH, TunnelSide, unmask_relayed},
    },
    session::{Established, Handshake, HandshakeError, SenderSession},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What the page shows or does next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// The code to give the receiver; `stun_port` is the relay's STUN port, for a WebRTC
    /// offer (see [`PageSender::rtc_coming`]).
    Code {
        code: String,
        stun_port: Option<u16>,
    },
    /// The receiver accepted: open the tunnel's listening end at `path`, and take its WebRTC
    /// answer (JSON of a session description), if it gave one. The receiver's opening then
    /// comes on whichever path it picked.
    Tunnel {
        path: String,
        rtc: Option<String>,
    },
    /// The receiver asked for what it lacks: send frames from `from` (the first it lacks).
    Push {
        frames: u64,
    },
    /// The relay is private and refused to open a code without its access token (or with a
    /// wrong one): ask for it and send again.
    Private,
    /// The receiver verified every file.
    Sent,
    Failed {
        message: String,
    },
}

/// Longest WebRTC session description the page passes on (offer or answer).
const MAX_SDP: usize = 64 * 1024;

/// The page's WebRTC offer: none, being made (the offer to the receiver waits for it), or made.
#[derive(Debug)]
enum Rtc {
    Coming,
    Made(Option<String>),
}

/// The driver's answer to one input: texts for the rendezvous WebSocket, bytes for the
/// tunnel, and an event.
#[derive(Debug, Default, Serialize)]
pub struct Actions {
    pub relay: Vec<String>,
    pub event: Option<Event>,
}

enum Stage {
    Meeting,
    Waiting(Code),
    Exchanging(Handshake),
    Talking(Box<Established>),
    Over,
}

fn text(msg: &ClientMsg) -> String {
    serde_json::to_string(msg).unwrap_or_default()
}

/// One send from the page.
pub struct PageSender {
    content: CheckedManifest,
    key: ContentKey,
    cipher: ContentCipher,
    stage: Stage,
    session: SenderSession,
    hashers: Vec<Sha256>,
    /// Frames sealed so far (in order) and plaintext bytes they held.
    next_frame: u64,
    hashed: u64,
    /// Frames the receiver already holds (its have-bitfield).
    have: Vec<u8>,
    /// Bytes of the receiver's opening still to come.
    opening: Vec<u8>,
    pushing: bool,
    stun_port: Option<u16>,
    rtc: Rtc,
    /// Keys are confirmed and the offer waits for the WebRTC offer.
    offer_due: bool,
}

impl std::fmt::Debug for PageSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageSender").finish_non_exhaustive()
    }
}

/// Names picked on a page may repeat (two folders' `photo.jpg`): later ones get ` (2)`...
fn unique_names(names: &[String]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .iter()
        .map(|n| {
            let base = if n.is_empty() {
                "file".to_owned()
            } else {
                n.clone()
            };
            let mut name = base.clone();
            let mut i = 2;
            while !seen.insert(name.clone()) {
                name = match base.rsplit_once('.') {
                    Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({i}).{ext}"),
                    _ => format!("{base} ({i})"),
                };
                i += 1;
            }
            name
        })
        .collect()
}

impl PageSender {
    /// A send of files named `names` (their base names, as the browser gives them) of
    /// `sizes` bytes.
    pub fn new(names: &[String], sizes: &[u64]) -> Result<Self, String> {
        if names.len() != sizes.len() || names.is_empty() {
            return Err("pick at least one file".into());
        }
        let files = unique_names(names)
            .into_iter()
            .zip(sizes)
            .map(|(path, size)| FileEntry {
                path,
                size: *size,
                sha256: "0".repeat(64),
                mode: 0o644,
            })
            .collect();
        let content = Manifest {
            files,
            dirs: Vec::new(),
        }
        .check()
        .map_err(|e| format!("these files cannot be sent: {e}"))?;
        let key = ContentKey::generate();
        let plain_len = content.layout.total();
        Ok(Self {
            cipher: ContentCipher::uncompressed(&key, plain_len),
            hashers: vec![Sha256::new(); content.layout.file_count()],
            content,
            key,
            stage: Stage::Meeting,
            session: SenderSession::new(),
            next_frame: 0,
            hashed: 0,
            have: Vec::new(),
            opening: Vec::new(),
            pushing: false,
            stun_port: None,
            rtc: Rtc::Made(None),
            offer_due: false,
        })
    }

    fn frames(&self) -> u64 {
        ChunkMap::frame_count_for(self.content.layout.total())
    }

    fn fail(&mut self, message: String, mood: Mood) -> Actions {
        let mut relay = Vec::new();
        if !matches!(self.stage, Stage::Over) {
            relay.push(text(&ClientMsg::Close { mood }));
        }
        self.stage = Stage::Over;
        Actions {
            relay,
            event: Some(Event::Failed { message }),
        }
    }

    fn seal(&mut self, msg: &PeerMsg) -> Option<String> {
        let Stage::Talking(keys) = &mut self.stage else {
            return None;
        };
        let body = keys.seal(msg).ok()?;
        self.session.sent(msg);
        Some(text(&ClientMsg::Send {
            body: B64.encode(body),
        }))
    }

    /// A text from the rendezvous WebSocket.
    pub fn relay_text(&mut self, raw: &str) -> Actions {
        if matches!(self.stage, Stage::Over) {
            return Actions::default();
        }
        let Ok(msg) = serde_json::from_str::<ServerMsg>(raw) else {
            return self.fail(
                "the relay sent a message this page does not understand".into(),
                Mood::Errory,
            );
        };
        match msg {
            ServerMsg::Welcome { stun_port, .. } => {
                self.stun_port = stun_port;
                Actions {
                    relay: vec![text(&ClientMsg::Allocate {
                        host: Some(Host::default()),
                    })],
                    event: None,
                }
            }
            ServerMsg::Claimed {
                nameplate,
                peer_present,
            } => {
                let code = Code::generate(&mut rand::thread_rng(), nameplate);
                let shown = code.to_string();
                self.stage = Stage::Waiting(code);
                let relay = if peer_present {
                    self.start_exchange()
                } else {
                    Vec::new()
                };
                Actions {
                    relay,
                    event: Some(Event::Code {
                        code: shown,
                        stun_port: self.stun_port,
                    }),
                }
            }
            ServerMsg::PeerJoined => Actions {
                relay: self.start_exchange(),
                event: None,
            },
            ServerMsg::Message { body } => match B64.decode(body.as_bytes()) {
                Ok(body) => self.body(&body),
                Err(_) => self.fail("the relay passed on a malformed message".into(), Mood::Errory),
            },
            ServerMsg::PeerLeft { mood } => {
                let message = match (&self.stage, mood) {
                    (Stage::Exchanging(_), _) | (_, Some(Mood::Scary)) => {
                        "someone tried a wrong code: nothing was sent; send again for a new code".into()
                    }
                    _ => "the receiver went away before the transfer finished".into(),
                };
                self.fail(message, Mood::Errory)
            }
            ServerMsg::Error {
                kind: ErrorKind::Unauthorized,
                ..
            } => {
                let mut actions = self.fail(String::new(), Mood::Errory);
                actions.event = Some(Event::Private);
                actions
            }
            ServerMsg::Error { message, .. } => self.fail(
                format!("the relay refused: {}", display::line(&message)),
                Mood::Errory,
            ),
            ServerMsg::SwarmRegistered { .. } | ServerMsg::Unknown => Actions::default(),
        }
    }

    fn start_exchange(&mut self) -> Vec<String> {
        let Stage::Waiting(code) = &self.stage else {
            return Vec::new();
        };
        let (handshake, first) = Handshake::start(code, Side::Sender);
        self.stage = Stage::Exchanging(handshake);
        vec![text(&ClientMsg::Send {
            body: B64.encode(first),
        })]
    }

    fn body(&mut self, body: &[u8]) -> Actions {
        match &mut self.stage {
            Stage::Exchanging(handshake) => match handshake.handle(body) {
                Ok(step) => {
                    let mut relay: Vec<String> = step
                        .send
                        .into_iter()
                        .map(|b| text(&ClientMsg::Send { body: B64.encode(b) }))
                        .collect();
                    if let Some(keys) = step.established {
                        self.stage = Stage::Talking(keys);
                        match &self.rtc {
                            Rtc::Coming => self.offer_due = true,
                            Rtc::Made(_) => relay.extend(self.offer()),
                        }
                    }
                    Actions { relay, event: None }
                }
                Err(HandshakeError::WrongCode) => self.fail(
                    "someone tried a wrong code: nothing was sent; send again for a new code".into(),
                    Mood::Scary,
                ),
                Err(e) => self.fail(e.to_string(), Mood::Errory),
            },
            Stage::Talking(keys) => match keys.open(body) {
                Ok(msg) => self.peer_msg(msg),
                Err(e) => self.fail(format!("the receiver's message was refused: {e}"), Mood::Errory),
            },
            Stage::Meeting | Stage::Waiting(_) | Stage::Over => Actions::default(),
        }
    }

    /// The offer, with the page's WebRTC offer if it made one. The page serves no peer route
    /// (and takes no acknowledgements), so it offers neither.
    fn offer(&mut self) -> Option<String> {
        let rtc = match &self.rtc {
            Rtc::Made(sdp) => sdp.clone(),
            Rtc::Coming => None,
        };
        let offer = PeerMsg::Offer(Box::new(Offer {
            abilities: vec![ABILITY_PUSH.into(), ABILITY_TUNNEL.into()],
            body: OfferBody::Pushed {
                manifest: self.content.manifest.clone(),
                content_key: self.key.clone(),
                direct_hints: Vec::new(),
            },
            rtc,
            start: None,
        }));
        self.seal(&offer)
    }

    /// The page is making a WebRTC offer: once keys are confirmed, the offer to the receiver
    /// waits for [`PageSender::rtc_offer`].
    pub fn rtc_coming(&mut self) {
        let before_keys = matches!(
            self.stage,
            Stage::Meeting | Stage::Waiting(_) | Stage::Exchanging(_)
        );
        if before_keys && matches!(self.rtc, Rtc::Made(None)) {
            self.rtc = Rtc::Coming;
        }
    }

    /// The page's WebRTC offer (JSON of a session description), or `None` if it could not
    /// make one: sends the offer to the receiver if it was waiting for this.
    pub fn rtc_offer(&mut self, sdp: Option<String>) -> Actions {
        if !matches!(self.rtc, Rtc::Coming) {
            return Actions::default();
        }
        self.rtc = Rtc::Made(sdp.filter(|s| s.len() <= MAX_SDP));
        if !std::mem::take(&mut self.offer_due) {
            return Actions::default();
        }
        Actions {
            relay: self.offer().into_iter().collect(),
            event: None,
        }
    }

    fn peer_msg(&mut self, msg: PeerMsg) -> Actions {
        if let Err(e) = self.session.handle(&msg) {
            return self.fail(e.to_string(), Mood::Errory);
        }
        match msg {
            PeerMsg::Answer {
                accept: true, rtc, ..
            } => {
                let Stage::Talking(keys) = &self.stage else {
                    return Actions::default();
                };
                let path = format!(
                    "{TUNNEL_PATH}/{}/{}",
                    keys.tunnel_token,
                    TunnelSide::Listen.as_str()
                );
                // An answer only to an offer the page made.
                let offered = matches!(self.rtc, Rtc::Made(Some(_)));
                let rtc = rtc.filter(|s| offered && s.len() <= MAX_SDP);
                Actions {
                    relay: Vec::new(),
                    event: Some(Event::Tunnel { path, rtc }),
                }
            }
            PeerMsg::Answer {
                accept: false,
                reason,
                ..
            } => {
                let why = reason
                    .map(|r| format!(": {}", display::line(&r)))
                    .unwrap_or_default();
                self.fail(format!("the receiver declined{why}"), Mood::Happy)
            }
            PeerMsg::Done { ok: true, .. } => {
                let relay = vec![text(&ClientMsg::Close { mood: Mood::Happy })];
                self.stage = Stage::Over;
                Actions {
                    relay,
                    event: Some(Event::Sent),
                }
            }
            PeerMsg::Done { ok: false, message } => {
                let why = message
                    .map(|m| format!(": {}", display::line(&m)))
                    .unwrap_or_default();
                self.fail(format!("the receiver stopped the transfer{why}"), Mood::Errory)
            }
            PeerMsg::Fetch => self.fail(
                "the receiver could not take everything through the tunnel, and the page cannot seed; \
                 send again"
                    .into(),
                Mood::Errory,
            ),
            _ => Actions::default(),
        }
    }

    /// A message from the tunnel: the receiver's opening (hello, then what it holds).
    pub fn tunnel_message(&mut self, msg: &mut [u8]) -> Actions {
        let Some(payload) = unmask_relayed(msg) else {
            return self.fail(
                "the relay's tunnel passed on a malformed message".into(),
                Mood::Errory,
            );
        };
        self.opening_bytes(payload)
    }

    /// A message from a WebRTC data channel the page offered: the receiver's opening, as on
    /// the tunnel (but not masked).
    pub fn channel_message(&mut self, msg: &[u8]) -> Actions {
        self.opening_bytes(msg)
    }

    /// The receiver opened the push again on a new connection (its last one was cut or went
    /// silent): what it sends next is a new opening, saying which frames it now holds.
    pub fn new_connection(&mut self) {
        self.opening.clear();
        self.pushing = false;
    }

    /// Can frame `k` be left out of this push? Only one already read once (its bytes are in
    /// the digests) that the receiver holds.
    pub fn skip(&self, k: u64) -> bool {
        k < self.next_frame && bits::has(&self.have, k)
    }

    fn opening_bytes(&mut self, payload: &[u8]) -> Actions {
        if self.pushing {
            // A receiver says nothing after its opening but closes at the end.
            return Actions::default();
        }
        self.opening.extend_from_slice(payload);
        let bits = have_len(self.frames());
        if self.opening.len() < HELLO_LEN + 4 {
            return Actions::default();
        }
        let Stage::Talking(keys) = &self.stage else {
            return Actions::default();
        };
        if self.opening[..HELLO_LEN] != keys.push_hello[..] {
            return self.fail(
                "the connection's other end is not this transfer's receiver".into(),
                Mood::Errory,
            );
        }
        let len_field = &self.opening[HELLO_LEN..HELLO_LEN + 4];
        let field = HaveField::parse(u32::from_le_bytes([
            len_field[0],
            len_field[1],
            len_field[2],
            len_field[3],
        ]));
        let len = field.len as usize;
        // The page offers no acknowledgements, so an opening that says it sends them is as
        // malformed as one with a wrong length.
        if field.acked || (len != 0 && len != bits) {
            return self.fail("the receiver's opening is malformed".into(), Mood::Errory);
        }
        if self.opening.len() < HELLO_LEN + 4 + len {
            return Actions::default();
        }
        let mut have = self.opening[HELLO_LEN + 4..HELLO_LEN + 4 + len].to_vec();
        have.resize(bits, 0);
        self.have = have;
        self.pushing = true;
        Actions {
            relay: Vec::new(),
            event: Some(Event::Push {
                frames: self.frames(),
            }),
        }
    }

    /// Bytes of frame `k` of the content (the page reads them from the files).
    pub fn frame_len(&self, k: u64) -> u64 {
        frame_plain_len(self.content.layout.total(), k)
    }

    /// Frame `k`'s plaintext: what to write on the connection for it, empty when the receiver
    /// holds it already. New frames come in order (each is hashed once, as it is first read);
    /// a push opened again starts over and seals the earlier frames the receiver lacks again.
    pub fn frame(&mut self, k: u64, plain: &[u8]) -> Result<Vec<u8>, String> {
        if k > self.next_frame || plain.len() as u64 != self.frame_len(k) {
            return Err("the page read the files out of order".into());
        }
        if k == self.next_frame {
            let at = self.hashed;
            let mut from = 0;
            for seg in self.content.layout.segments(at, plain.len()) {
                self.hashers[seg.file].update(&plain[from..from + seg.len]);
                from += seg.len;
            }
            self.hashed += plain.len() as u64;
            self.next_frame += 1;
        }
        if bits::has(&self.have, k) {
            return Ok(Vec::new());
        }
        let first_chunk = k * FRAME_CHUNKS;
        let last_frame = k + 1 == self.frames();
        let count = plain.len().div_ceil(PLAIN_CHUNK as usize).max(1);
        let mut sealed = Vec::with_capacity(plain.len() + count * TAG_LEN as usize);
        let parts: Vec<&[u8]> = if plain.is_empty() {
            vec![&[]]
        } else {
            plain.chunks(PLAIN_CHUNK as usize).collect()
        };
        for (c, part) in parts.into_iter().enumerate() {
            let at = sealed.len();
            sealed.extend_from_slice(part);
            sealed.resize(at + part.len() + TAG_LEN as usize, 0);
            self.cipher.seal_chunk_as(
                first_chunk + c as u64,
                last_frame && c + 1 == count,
                &mut sealed[at..],
            );
        }
        let mut out = Item::Frame {
            frame: k,
            first_chunk,
            code: 0,
            sealed: sealed.len(),
        }
        .to_bytes()
        .to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Every frame is out: the end of the push, to write on the tunnel (empty before).
    pub fn end_item(&self) -> Vec<u8> {
        if self.next_frame == self.frames() {
            Item::End.to_bytes().to_vec()
        } else {
            Vec::new()
        }
    }

    /// Every frame is out: the digests of the files, for the receiver to check.
    pub fn prepared(&mut self) -> Actions {
        if self.next_frame != self.frames() || self.hashers.is_empty() {
            return Actions::default();
        }
        let sha256 = std::mem::take(&mut self.hashers)
            .into_iter()
            .map(|h| hex::encode(h.finalize()))
            .collect();
        let prepared = PeerMsg::Prepared(Box::new(Prepared {
            sha256,
            torrent: None,
            packing: None,
        }));
        let relay = self.seal(&prepared).into_iter().collect();
        Actions { relay, event: None }
    }

    /// Frame size, for the page's reads.
    pub fn frame_plain() -> u64 {
        FRAME_PLAIN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_opened_again_reseals_what_the_receiver_lacks_and_hashes_each_frame_once() {
        let total = 2 * FRAME_PLAIN + 10;
        let mut tx = PageSender::new(&["a".into()], &[total]).expect("sender");
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let frame = |k: u64| {
            &data[(k * FRAME_PLAIN) as usize..((k * FRAME_PLAIN) + frame_plain_len(total, k)) as usize]
        };
        let first = tx.frame(0, frame(0)).expect("frame 0");
        assert!(tx.frame(2, frame(2)).is_err(), "new frames come in order");
        tx.frame(1, frame(1)).expect("frame 1");
        // The receiver opens the push again, holding frame 0 only.
        tx.new_connection();
        tx.have = vec![0x80];
        assert!(tx.skip(0), "held, and read before");
        assert!(!tx.skip(1), "lacked");
        assert!(!tx.skip(2), "not read yet: it must be hashed");
        let again = tx.frame(1, frame(1)).expect("frame 1 again");
        assert!(!again.is_empty(), "sealed again");
        assert_eq!(tx.hashed, 2 * FRAME_PLAIN, "not hashed twice");
        tx.frame(2, frame(2)).expect("frame 2");
        assert_eq!(tx.hashed, total);
        assert!(tx.frame(0, frame(0)).expect("frame 0 again").is_empty(), "held");
        assert!(!first.is_empty());
        let digest = hex::encode(std::mem::take(&mut tx.hashers).remove(0).finalize());
        assert_eq!(digest, hex::encode(Sha256::digest(&data)));
    }

    #[test]
    fn repeated_names_are_told_apart() {
        let names: Vec<String> = ["a.jpg", "a.jpg", "b", "b", "a.jpg"].map(String::from).into();
        assert_eq!(
            unique_names(&names),
            ["a.jpg", "a (2).jpg", "b", "b (2)", "a (3).jpg"]
        );
    }
}
