//! The page's receiving side, sans-IO: the relay's texts and the tunnel's bytes go in, texts
//! to send and events for the page come out. It claims the nameplate, runs
//! [`convey_shared::session::Handshake`] and [`ReceiverSession`] (the CLI's own machines),
//! checks the offer as the CLI does, reads the push ([`PushReader`]) and checks every file's
//! SHA-256 before it says the download is good.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use convey_shared::{
    Code,
    content::ContentKey,
    crypto::Side,
    display,
    manifest::CheckedManifest,
    protocol::{
        peer::{ABILITY_PUSH, ABILITY_PUSH_ACKS, ABILITY_TUNNEL, OfferBody, PeerMsg},
        rendezvous::{ClientMsg, ErrorKind, Mood, ServerMsg},
        tunnel::{TUNNEL_PATH, TunnelSide, unmask_relayed},
    },
    session::{Established, Handshake, HandshakeError, ReceiverSession, top_names},
};
use serde::Serialize;

use crate::push::{self, PushReader};

/// Top-level names the offer shows, as in the CLI.
const SHOWN_NAMES: usize = 5;

/// What the page shows or does next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// The code's nameplate is claimed; the key exchange runs.
    Connected,
    /// The nameplate is claimed but no sender is on it yet.
    Waiting,
    /// The sender offers files; `names` are display-safe (as the CLI shows them).
    Offer {
        files: usize,
        bytes: u64,
        names: Vec<String>,
        more: usize,
        /// The download's file name (one file's own, or an archive's).
        download: String,
        archive: bool,
        /// The sender's WebRTC offer (SDP), if it makes one.
        rtc: Option<String>,
        /// The relay's STUN port (on the relay's host), if it runs STUN.
        stun_port: Option<u16>,
    },
    /// The sender sent a text (display-safe).
    Text { text: String },
    /// Open the push connection: over the WebRTC answer's data channel if one opens, else
    /// through the tunnel endpoint at `path` on the relay.
    Tunnel { path: String },
    /// Every file arrived and matched its SHA-256: the download may complete.
    Verified,
    /// It is over and did not work: the download must fail.
    Failed { message: String },
}

/// The driver's answer to one input.
#[derive(Debug, Default, Serialize)]
pub struct Actions {
    /// Texts to send on the rendezvous WebSocket, in order.
    pub relay: Vec<String>,
    pub event: Option<Event>,
}

impl Actions {
    fn event(event: Event) -> Self {
        Self {
            relay: Vec::new(),
            event: Some(event),
        }
    }
}

enum Stage {
    /// Waiting for the relay's welcome, then our claim's answer, then the sender.
    Meeting,
    Exchanging(Handshake),
    Talking(Box<Established>),
    Over,
}

/// An offer the page can take.
struct Accepted {
    content: CheckedManifest,
    key: ContentKey,
    archive: bool,
    /// The sender takes acknowledgements ([`ABILITY_PUSH_ACKS`]).
    acks: bool,
}

/// One receive, from the code to the verified download.
pub struct PageReceiver {
    code: Code,
    mtime: u64,
    stage: Stage,
    session: ReceiverSession,
    offer: Option<Accepted>,
    push: Option<PushReader>,
    /// The sender's SHA-256 of each file, once it sent them.
    digests: Option<Vec<String>>,
    stun_port: Option<u16>,
}

impl std::fmt::Debug for PageReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageReceiver").finish_non_exhaustive()
    }
}

fn text(msg: &ClientMsg) -> String {
    serde_json::to_string(msg).unwrap_or_default()
}

impl PageReceiver {
    /// A receive on `code` (as typed, or from the link's fragment); archives are stamped
    /// with `mtime` (seconds since 1970).
    pub fn new(code: &str, mtime: u64) -> Result<Self, String> {
        let code: Code = code
            .trim()
            .parse()
            .map_err(|e: convey_shared::code::ParseCodeError| e.to_string())?;
        Ok(Self {
            code,
            mtime,
            stage: Stage::Meeting,
            session: ReceiverSession::new(),
            offer: None,
            push: None,
            digests: None,
            stun_port: None,
        })
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
                    relay: vec![text(&ClientMsg::Claim {
                        nameplate: self.code.nameplate(),
                        host: None,
                    })],
                    event: None,
                }
            }
            ServerMsg::Claimed { peer_present, .. } => {
                if !peer_present {
                    return Actions::event(Event::Waiting);
                }
                let mut a = Actions::event(Event::Connected);
                a.relay = self.start_exchange();
                a
            }
            ServerMsg::PeerJoined => {
                let mut a = Actions::event(Event::Connected);
                a.relay = self.start_exchange();
                a
            }
            ServerMsg::Message { body } => match B64.decode(body.as_bytes()) {
                Ok(body) => self.body(&body),
                Err(_) => self.fail("the relay passed on a malformed message".into(), Mood::Errory),
            },
            ServerMsg::PeerLeft { mood } => {
                let message = match (&self.stage, mood) {
                    (Stage::Exchanging(_), _) | (_, Some(Mood::Scary)) => wrong_code(),
                    _ if self.verified() => return Actions::default(),
                    _ => "the sender went away before the transfer finished; ask them to send again".into(),
                };
                self.fail(message, Mood::Errory)
            }
            ServerMsg::Error { kind, message } => {
                let message = match kind {
                    ErrorKind::InUse | ErrorKind::Expired => {
                        "no sender waits on this code (it was used, closed or expired); ask for a new one".into()
                    }
                    // A private relay lets anyone join a code a sender opened, nothing more.
                    ErrorKind::Unauthorized => {
                        "no sender is waiting on this code, and this relay is private: only a code a sender opened \
                         can be joined; check the code, or have the sender start first"
                            .into()
                    }
                    _ => format!("the relay refused: {}", display::line(&message)),
                };
                self.fail(message, Mood::Errory)
            }
            ServerMsg::SwarmRegistered { .. } | ServerMsg::Unknown => Actions::default(),
        }
    }

    fn start_exchange(&mut self) -> Vec<String> {
        if !matches!(self.stage, Stage::Meeting) {
            return Vec::new();
        }
        let (handshake, first) = Handshake::start(&self.code, Side::Receiver);
        self.stage = Stage::Exchanging(handshake);
        vec![text(&ClientMsg::Send {
            body: B64.encode(first),
        })]
    }

    fn verified(&self) -> bool {
        self.digests.is_some() && self.push.as_ref().is_some_and(PushReader::ended)
    }

    fn body(&mut self, body: &[u8]) -> Actions {
        match &mut self.stage {
            Stage::Exchanging(handshake) => match handshake.handle(body) {
                Ok(step) => {
                    let relay = step
                        .send
                        .into_iter()
                        .map(|b| text(&ClientMsg::Send { body: B64.encode(b) }))
                        .collect();
                    if let Some(keys) = step.established {
                        self.stage = Stage::Talking(keys);
                    }
                    Actions { relay, event: None }
                }
                Err(HandshakeError::WrongCode) => self.fail(wrong_code(), Mood::Scary),
                Err(e) => self.fail(e.to_string(), Mood::Errory),
            },
            Stage::Talking(keys) => match keys.open(body) {
                Ok(msg) => self.peer_msg(msg),
                Err(e) => self.fail(format!("the sender's message was refused: {e}"), Mood::Errory),
            },
            Stage::Meeting | Stage::Over => Actions::default(),
        }
    }

    fn peer_msg(&mut self, msg: PeerMsg) -> Actions {
        if matches!(msg, PeerMsg::Unknown) {
            return Actions::default();
        }
        if let Err(e) = self.session.handle(&msg) {
            return self.fail(e.to_string(), Mood::Errory);
        }
        match msg {
            PeerMsg::Offer(offer) => {
                let abilities = |a: &str| offer.abilities.iter().any(|x| x == a);
                match offer.body {
                    OfferBody::Text { text } => {
                        let done = PeerMsg::Done {
                            ok: true,
                            message: None,
                        };
                        let mut relay: Vec<String> = self.seal(&done).into_iter().collect();
                        relay.push(text_close());
                        self.stage = Stage::Over;
                        Actions {
                            relay,
                            event: Some(Event::Text {
                                text: display::safe(&text, true),
                            }),
                        }
                    }
                    OfferBody::Pushed {
                        manifest,
                        content_key,
                        ..
                    } if abilities(ABILITY_PUSH) && abilities(ABILITY_TUNNEL) => match manifest.check() {
                        Ok(content) => self.offered(content, content_key, (offer.rtc, abilities(ABILITY_PUSH_ACKS))),
                        Err(e) => self.decline(format!("the offer was refused: {e}")),
                    },
                    // Several receivers: the others swarm over BitTorrent, the page takes a
                    // push of the same content from the sender; the offer's digests are final.
                    OfferBody::Files {
                        manifest,
                        content_key,
                        ..
                    } if abilities(ABILITY_PUSH) && abilities(ABILITY_TUNNEL) => match manifest.check() {
                        Ok(content) => {
                            self.digests = Some(content.manifest.files.iter().map(|f| f.sha256.clone()).collect());
                            self.offered(content, content_key, (offer.rtc, abilities(ABILITY_PUSH_ACKS)))
                        }
                        Err(e) => self.decline(format!("the offer was refused: {e}")),
                    },
                    OfferBody::Pushed { .. } | OfferBody::Files { .. } if abilities(ABILITY_PUSH) => self.decline(
                        "the sender does not offer the relay's tunnel, the only path this page uses yet; \
                         run `convey send` with the default --transport, or receive with the convey command"
                            .into(),
                    ),
                    OfferBody::Files { .. } | OfferBody::Pushed { .. } | OfferBody::Stream { .. } => self.decline(
                        "this page cannot receive this transfer (a stream, or several receivers from an older \
                         convey); use the convey command"
                            .into(),
                    ),
                }
            }
            PeerMsg::Prepared(prepared) => {
                self.digests = Some(prepared.sha256);
                self.check()
            }
            PeerMsg::Done { ok: false, message } => {
                let why = message
                    .map(|m| format!(": {}", display::line(&m)))
                    .unwrap_or_default();
                self.fail(format!("the sender stopped the transfer{why}"), Mood::Errory)
            }
            _ => Actions::default(),
        }
    }

    fn offered(
        &mut self,
        content: CheckedManifest,
        key: ContentKey,
        (rtc, acks): (Option<String>, bool),
    ) -> Actions {
        let (names, more) = top_names(&content, SHOWN_NAMES);
        let files = content.manifest.files.len();
        let archive = files != 1 || !content.manifest.dirs.is_empty() || content.file_parts[0].len() != 1;
        let download = if archive {
            let tops: std::collections::BTreeSet<_> = content
                .file_parts
                .iter()
                .chain(&content.dir_parts)
                .filter_map(|p| p.first())
                .collect();
            match tops.into_iter().collect::<Vec<_>>()[..] {
                [one] => format!("{one}.tar"),
                _ => "convey-files.tar".into(),
            }
        } else {
            content.file_parts[0][0].clone()
        };
        let bytes = content.layout.total();
        self.offer = Some(Accepted {
            content,
            key,
            archive,
            acks,
        });
        Actions::event(Event::Offer {
            files,
            bytes,
            names,
            more,
            download,
            archive,
            rtc,
            stun_port: self.stun_port,
        })
    }

    fn decline(&mut self, why: String) -> Actions {
        let answer = PeerMsg::Answer {
            accept: false,
            reason: Some(why.clone()),
            rtc: None,
        };
        let mut relay: Vec<String> = self.seal(&answer).into_iter().collect();
        relay.push(text_close());
        self.stage = Stage::Over;
        Actions {
            relay,
            event: Some(Event::Failed { message: why }),
        }
    }

    /// The user accepted the offer: answer (with the page's WebRTC answer, if it made one),
    /// and open the push.
    pub fn accept(&mut self, rtc: Option<String>) -> Actions {
        let Some(offer) = &self.offer else {
            return Actions::default();
        };
        let push = PushReader::new(&offer.content, &offer.key, offer.archive, self.mtime);
        self.push = Some(push);
        let answer = PeerMsg::Answer {
            accept: true,
            reason: None,
            rtc,
        };
        let relay = self.seal(&answer).into_iter().collect();
        let Stage::Talking(keys) = &self.stage else {
            return Actions::default();
        };
        let path = format!(
            "{TUNNEL_PATH}/{}/{}",
            keys.tunnel_token,
            TunnelSide::Dial.as_str()
        );
        Actions {
            relay,
            event: Some(Event::Tunnel { path }),
        }
    }

    /// The user declined the offer.
    pub fn refuse(&mut self) -> Actions {
        self.decline("declined by the receiver".into())
    }

    /// What the page writes first on a push connection (the first, or one that replaces a
    /// path that failed: the push goes on after the frames already handed on).
    pub fn push_opening(&mut self) -> Vec<u8> {
        let held = self.push.as_mut().map_or(0, |push| {
            push.restart();
            push.frames_done()
        });
        match (&self.stage, &self.offer) {
            (Stage::Talking(keys), Some(offer)) => {
                push::opening(&keys.push_hello, offer.content.layout.total(), offer.acks, held)
            }
            _ => Vec::new(),
        }
    }

    /// A message from the tunnel (the relay's form: masking key, then masked payload);
    /// returns the download's next bytes. An error ends the transfer (the page fails the
    /// download and sends the returned texts).
    pub fn tunnel_message(&mut self, msg: &mut [u8]) -> Result<Vec<u8>, Box<Actions>> {
        let Some(payload) = unmask_relayed(msg) else {
            return Err(Box::new(
                self.broken("the relay's tunnel passed on a malformed message".into()),
            ));
        };
        self.push_bytes(payload)
    }

    /// The next bytes of the push (from a WebRTC data channel, or a tunnel message's
    /// payload); as [`Self::tunnel_message`].
    pub fn push_bytes(&mut self, payload: &[u8]) -> Result<Vec<u8>, Box<Actions>> {
        let Some(reader) = &mut self.push else {
            return Ok(Vec::new());
        };
        match reader.feed(payload) {
            Ok(out) => Ok(out),
            Err(e) => Err(Box::new(self.broken(e.0))),
        }
    }

    fn broken(&mut self, why: String) -> Actions {
        let done = PeerMsg::Done {
            ok: false,
            message: Some(why.clone()),
        };
        let mut a: Vec<String> = self.seal(&done).into_iter().collect();
        let mut failed = self.fail(why, Mood::Errory);
        a.append(&mut failed.relay);
        failed.relay = a;
        failed
    }

    /// Frames handed on to the download so far.
    pub fn frames_done(&self) -> u64 {
        self.push.as_ref().map_or(0, PushReader::frames_done)
    }

    /// Does the sender take acknowledgements (so the page sends [`Self::ack`]s)?
    pub fn acks(&self) -> bool {
        self.offer.as_ref().is_some_and(|o| o.acks)
    }

    /// The acknowledgement that the download has used `frames` frames.
    pub fn ack(frames: u64) -> Vec<u8> {
        convey_shared::protocol::push::ack(frames).to_vec()
    }

    /// Plaintext bytes received.
    pub fn received(&self) -> u64 {
        self.push.as_ref().map_or(0, PushReader::received)
    }

    /// Has every frame come in (the page may close the tunnel)?
    pub fn push_ended(&self) -> bool {
        self.push.as_ref().is_some_and(PushReader::ended)
    }

    /// Once the push ended and the sender's digests are in: compare, tell the sender.
    pub fn check(&mut self) -> Actions {
        let (Some(reader), Some(theirs)) = (&self.push, &self.digests) else {
            return Actions::default();
        };
        let Some(ours) = reader.digests() else {
            return Actions::default();
        };
        let matches = ours.len() == theirs.len()
            && ours
                .iter()
                .zip(theirs)
                .all(|(a, b)| hex::encode(a).eq_ignore_ascii_case(b));
        if !matches {
            return self.broken(
                "a received file does not match the sender's SHA-256; the download was stopped".into(),
            );
        }
        let done = PeerMsg::Done {
            ok: true,
            message: None,
        };
        let mut relay: Vec<String> = self.seal(&done).into_iter().collect();
        relay.push(text(&ClientMsg::Close { mood: Mood::Happy }));
        self.stage = Stage::Over;
        Actions {
            relay,
            event: Some(Event::Verified),
        }
    }
}

fn text_close() -> String {
    text(&ClientMsg::Close { mood: Mood::Happy })
}

fn wrong_code() -> String {
    "the code is wrong (or someone tried to guess it): nothing was received; check the code with the sender"
        .into()
}
