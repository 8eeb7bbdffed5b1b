//! The receiver's side of a session after key confirmation: which sender messages may come
//! in each phase, the messages it sends back, and the check of a files offer against its own
//! claims (manifest, torrent, chunk map) before anything touches a disk. The CLI and the
//! browser page both run this.

use base64::{Engine, engine::general_purpose::STANDARD as B64};

use crate::{
    chunk_map::ChunkMap,
    content::{ContentCipher, ContentKey},
    display,
    manifest::{CheckedManifest, Manifest},
    protocol::peer::{ABILITY_PUSH, ABILITY_SWARM, MAX_CODEC_NAME, OfferBody, Packing, PeerMsg},
    torrent,
};

use super::Unexpected;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Files,
    Pushed,
    Text,
    Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitOffer,
    /// The offer is in; the user decides.
    Offered,
    Accepted,
    /// This side said done (a swarm member may still be serving).
    Finished,
    Declined,
}

/// The receiver's session: feed it every message from the sender.
#[derive(Debug)]
pub struct ReceiverSession {
    phase: Phase,
    kind: Option<Kind>,
    swarm: bool,
    /// `Prepared` messages still allowed (one for a push, one more after `Fetch`).
    prepared_left: u8,
}

impl Default for ReceiverSession {
    fn default() -> Self {
        Self::new()
    }
}

impl ReceiverSession {
    pub fn new() -> Self {
        Self {
            phase: Phase::AwaitOffer,
            kind: None,
            swarm: false,
            prepared_left: 0,
        }
    }

    /// Does this side wait for a message the sender owes (the offer, a push's digests)? The
    /// driver bounds that wait by its own silence limit; otherwise nothing is owed (the user
    /// decides, or bytes move on a path the driver watches itself).
    pub fn awaits_sender(&self) -> bool {
        match self.phase {
            Phase::AwaitOffer => true,
            Phase::Accepted => self.prepared_left > 0,
            _ => false,
        }
    }

    /// Is this a swarm offer (the receiver serves the others)?
    pub fn swarm(&self) -> bool {
        self.swarm
    }

    /// Check the sender's next message against the phase, and advance: `Ok` means the
    /// driver acts on it; a message type from a later version is `Ok` too, to be skipped.
    pub fn handle(&mut self, msg: &PeerMsg) -> Result<(), Unexpected> {
        let unexpected = |expected| Unexpected {
            got: msg.kind(),
            expected,
        };
        match (self.phase, msg) {
            (_, PeerMsg::Unknown) | (Phase::AwaitOffer, PeerMsg::Preparing) => Ok(()),
            (Phase::AwaitOffer, PeerMsg::Offer(o)) => {
                let kind = match o.body {
                    OfferBody::Files { .. } => Kind::Files,
                    OfferBody::Pushed { .. } => Kind::Pushed,
                    OfferBody::Text { .. } => Kind::Text,
                    OfferBody::Stream { .. } => Kind::Stream,
                };
                let has = |a: &str| o.abilities.iter().any(|x| x == a);
                if kind == Kind::Pushed && !has(ABILITY_PUSH) {
                    return Err(Unexpected {
                        got: "a pushed offer without the push ability",
                        expected: "an offer",
                    });
                }
                self.swarm = kind == Kind::Files && has(ABILITY_SWARM);
                self.kind = Some(kind);
                self.phase = Phase::Offered;
                Ok(())
            }
            (Phase::AwaitOffer, _) => Err(unexpected("an offer")),
            (Phase::Accepted, PeerMsg::Preparing) if self.kind == Some(Kind::Pushed) => Ok(()),
            (Phase::Accepted, PeerMsg::Prepared(_)) if self.prepared_left > 0 => {
                self.prepared_left -= 1;
                Ok(())
            }
            (Phase::Accepted | Phase::Finished, PeerMsg::SwarmDone) if self.swarm => Ok(()),
            (Phase::Offered, _) => Err(unexpected("nothing before this side's answer")),
            (Phase::Accepted, _) => Err(unexpected(match self.kind {
                Some(Kind::Pushed) => "the push's digests",
                _ if self.swarm => "the end of the swarm",
                _ => "nothing while the bytes move",
            })),
            (Phase::Finished | Phase::Declined, _) => Err(unexpected("nothing after the end")),
        }
    }

    /// Note a message this side sends (an answer, a fetch, its end), so the phase follows.
    pub fn sent(&mut self, msg: &PeerMsg) {
        match msg {
            PeerMsg::Answer { accept: true, .. } => {
                self.phase = Phase::Accepted;
                self.prepared_left = u8::from(self.kind == Some(Kind::Pushed));
            }
            PeerMsg::Answer { accept: false, .. } => self.phase = Phase::Declined,
            // One more `Prepared` (with the torrent) may come.
            PeerMsg::Fetch => self.prepared_left = self.prepared_left.saturating_add(1).min(2),
            PeerMsg::Done { .. } => {
                self.phase = Phase::Finished;
                self.prepared_left = 0;
            }
            _ => {}
        }
    }
}

/// Why a files offer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// What the offer asks for is not acceptable (an unsafe name, too many entries).
    #[error("{0}")]
    Refused(String),
    /// The offer contradicts itself or is malformed.
    #[error("{0}")]
    Malformed(String),
}

/// A files offer whose manifest, torrent and chunk map agree.
#[derive(Debug)]
pub struct CheckedFiles {
    pub content: CheckedManifest,
    /// The bencoded .torrent, as received.
    pub torrent: Vec<u8>,
    pub info_hash: [u8; 20],
    pub cipher: ContentCipher,
    /// The torrent's piece length (a whole number of cipher chunks, checked).
    pub piece_len: u64,
    /// This build re-creates the sender's packed frames (the same codec), so it may serve
    /// them to other receivers.
    pub repacks: bool,
}

/// Check everything a files offer claims before touching the disk: safe names and bounded
/// sizes, a torrent that describes exactly the ciphertext the manifest and chunk map imply,
/// and a known compression. `local_codec` names the codec this build re-creates frames with
/// (`None` if it cannot pack).
pub fn check_files(
    manifest: Manifest,
    key: &ContentKey,
    packing: Option<&Packing>,
    torrent_b64: &str,
    local_codec: Option<&str>,
) -> Result<CheckedFiles, OfferError> {
    let content = manifest.check().map_err(|e| OfferError::Refused(e.to_string()))?;
    let torrent = B64
        .decode(torrent_b64)
        .map_err(|e| OfferError::Malformed(format!("the offer's torrent is not base64: {e}")))?;
    let (info, info_hash) = torrent::parse(&torrent).map_err(|e| OfferError::Malformed(e.to_string()))?;
    if packing.is_some_and(|p| p.codec.len() > MAX_CODEC_NAME || !p.codec.starts_with("zstd-")) {
        return Err(OfferError::Malformed(
            "the offer names a compression this receiver does not know".into(),
        ));
    }
    let map = ChunkMap::from_wire(content.layout.total(), packing.map(|p| p.frames.as_str()))
        .map_err(|e| OfferError::Malformed(format!("the offer's chunk map is not valid: {e}")))?;
    let repacks = packing.is_none_or(|p| local_codec == Some(p.codec.as_str()));
    let cipher = ContentCipher::new(key, map);
    info.check(cipher.cipher_len())
        .map_err(|e| OfferError::Malformed(e.to_string()))?;
    Ok(CheckedFiles {
        content,
        torrent,
        info_hash,
        cipher,
        piece_len: info.piece_length,
        repacks,
    })
}

/// The first `shown` top-level names of an offer (folders with a trailing `/`), made safe
/// for a terminal or a page, and how many more there are.
pub fn top_names(content: &CheckedManifest, shown: usize) -> (Vec<String>, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut names = Vec::new();
    let dirs = content.dir_parts.iter().map(|p| (p, true));
    let files = content.file_parts.iter().map(|p| (p, p.len() > 1));
    for (parts, is_dir) in dirs.chain(files) {
        let Some(first) = parts.first() else { continue };
        if seen.insert(first.as_str()) {
            let safe = display::safe(first, false);
            names.push(if is_dir { format!("{safe}/") } else { safe });
        }
    }
    let more = names.len().saturating_sub(shown);
    names.truncate(shown);
    (names, more)
}
