//! The sending side: claim a code, run the PAKE, and hand the offer to the right transport:
//! files and folders are encrypted and seeded over BitTorrent ([`crate::seed`]), text rides
//! in the offer itself, and a pipe is streamed ([`crate::transfer::stream`]).

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use convey_shared::{
    Code,
    code::{DEFAULT_WORDS, MANY_WORDS, MIN_MANY_BITS},
    content::{ContentKey, StreamCipher},
    crypto::Side,
    protocol::{
        peer::{ABILITY_GOODBYE, ABILITY_STREAM, Offer, OfferBody, PeerMsg},
        rendezvous::{Host, Mood},
    },
};

use crate::{
    Error, Event, EventSink, RelayAddr,
    error::Result,
    many,
    rendezvous::Rendezvous,
    send_push,
    session::{self, PeerLink},
    transfer::stream,
    transport::{Transport, path, serve::Offered},
};

/// What to send.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Files and folders, sent as one transfer.
    Paths(Vec<PathBuf>),
    /// A short text.
    Text(String),
    /// Standard input, streamed without a temporary copy.
    Stdin,
}

/// What to send, and where to meet the receiver.
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub relay: RelayAddr,
    /// A pre-agreed code; `None` lets the relay pick the number and us the words.
    pub code: Option<Code>,
    pub payload: Payload,
    /// Upload cap in bytes per second.
    pub upload_limit: Option<std::num::NonZeroU32>,
    /// How long to wait for the receiver; `None` waits until interrupted.
    pub wait: Option<Duration>,
    /// Which paths the receiver may use to reach us.
    pub transport: Transport,
    /// How many receivers this code is for.
    pub receivers: Receivers,
    /// Compress (zstd, before encryption) what shrinks.
    pub compress: bool,
}

/// How many receivers one code serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receivers {
    /// Exactly this many, each completing and verifying (1: today's single-use code).
    Count(std::num::NonZeroU32),
    /// Anyone with the code, until interrupted or `--wait` runs out with nobody transferring.
    Any,
}

impl Receivers {
    pub const ONE: Self = Self::Count(std::num::NonZeroU32::MIN);

    /// More than one receiver: a swarm.
    pub fn many(self) -> bool {
        self != Self::ONE
    }

    /// The target count, `None` for [`Receivers::Any`].
    pub fn target(self) -> Option<u32> {
        match self {
            Self::Count(n) => Some(n.get()),
            Self::Any => None,
        }
    }
}

/// Most receivers `--receivers N` accepts.
pub const MAX_RECEIVERS: u32 = 1000;

impl std::str::FromStr for Receivers {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "any" {
            return Ok(Self::Any);
        }
        s.parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_RECEIVERS).contains(n))
            .and_then(std::num::NonZeroU32::new)
            .map(Self::Count)
            .ok_or_else(|| format!("{s:?} is not a number of receivers from 1 to {MAX_RECEIVERS}, or `any`"))
    }
}

/// How a completed send went.
#[derive(Debug, Clone)]
pub struct SendReport {
    pub code: Code,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Send the payload. Returns once the receiver confirmed it has everything, verified.
pub async fn send(opts: SendOptions, events: EventSink) -> Result<SendReport> {
    if let Payload::Paths(paths) = &opts.payload {
        // Say at once, before a code is handed out, if a path does not exist.
        for p in paths {
            std::fs::symlink_metadata(p).map_err(Error::io(format!("cannot send {}", p.display())))?;
        }
    }
    let many = opts.receivers.many();
    if many {
        if !matches!(opts.payload, Payload::Paths(_)) {
            return Err(Error::Refused(
                "--receivers works with files and folders; send a text or a stream to one receiver at a time"
                    .into(),
            ));
        }
        if let Some(code) = &opts.code
            && code.estimated_bits() < MIN_MANY_BITS
        {
            return Err(Error::Refused(format!(
                "a code for several receivers needs at least {MIN_MANY_BITS} bits in its words ({} has about {}): use three words from the list, e.g. 7-pilot-planet-canyon",
                code.nameplate(),
                code.estimated_bits()
            )));
        }
    }
    let host = Host {
        many,
        secret: if many {
            hex::encode(rand::random::<[u8; 16]>())
        } else {
            String::new()
        },
    };
    let mut rv = Rendezvous::connect(&opts.relay).await?;
    let (code, peer_present) = match opts.code.clone() {
        Some(code) => {
            let present = rv.claim(code.nameplate(), Some(&host)).await?;
            (code, present)
        }
        None => {
            let nameplate = rv.allocate(&host).await?;
            let words = if many { MANY_WORDS } else { DEFAULT_WORDS };
            (
                Code::generate_words(&mut rand::thread_rng(), nameplate, words),
                false,
            )
        }
    };
    events(Event::Code {
        code: code.to_string(),
    });
    if let (true, Payload::Paths(paths)) = (many, &opts.payload) {
        let started = Instant::now();
        let bytes = many::send_many(
            paths,
            many::Host {
                rv,
                code: code.clone(),
                host,
                peer_present,
            },
            &opts,
            &events,
        )
        .await?;
        events(Event::Done {
            bytes,
            seconds: started.elapsed().as_secs_f64(),
            fetched: None,
        });
        return Ok(SendReport {
            code,
            bytes,
            elapsed: started.elapsed(),
        });
    }
    let linked = link_up(rv, code.clone(), peer_present, opts.wait, events.clone());
    let started = Instant::now();
    let bytes = match &opts.payload {
        Payload::Paths(paths) => send_push::send_files(paths, linked, &opts, &events).await?,
        Payload::Text(text) => send_text(text, linked.await?, &events).await?,
        Payload::Stdin => send_stdin(linked.await?, &opts, &events).await?,
    };
    events(Event::Done {
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        fetched: None,
    });
    Ok(SendReport {
        code,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// Wait (bounded by `wait`) for the receiver, then run the PAKE and key confirmation.
pub(crate) async fn link_up(
    mut rv: Rendezvous,
    code: Code,
    peer_present: bool,
    wait: Option<Duration>,
    events: EventSink,
) -> Result<PeerLink> {
    if !peer_present {
        events(Event::Waiting);
        let arrived = rv.wait_for_peer();
        match wait {
            Some(w) => tokio::time::timeout(w, arrived).await.map_err(|_| {
                Error::Timeout(format!(
                    "no receiver appeared within {}; check that the receiver typed the code, or raise --wait",
                    humantime::format_duration(w)
                ))
            })??,
            None => arrived.await?,
        }
    }
    let link = session::establish(rv, &code, Side::Sender).await?;
    link.await_vanished_peer();
    events(Event::Connected);
    Ok(link)
}

/// Send the offer and wait for the receiver's answer; then serve the paths it may take.
pub(crate) async fn offer(
    link: &mut PeerLink,
    body: OfferBody,
    offered: &Offered,
    (extra, start): (&[&str], Option<u64>),
) -> Result<()> {
    let offer = Offer {
        abilities: offered
            .abilities
            .iter()
            .chain(extra)
            .chain(&[ABILITY_GOODBYE])
            .map(|a| (*a).to_owned())
            .collect(),
        body,
        rtc: offered.rtc_sdp.clone(),
        start,
    };
    link.send(&PeerMsg::Offer(Box::new(offer))).await?;
    match link.recv().await? {
        PeerMsg::Answer {
            accept: true, rtc, ..
        } => {
            offered.answered(rtc).await;
            Ok(())
        }
        PeerMsg::Answer {
            accept: false,
            reason,
            ..
        } => Err(Error::Declined(reason)),
        other => Err(Error::Protocol(format!(
            "expected an answer, got {}",
            other.kind()
        ))),
    }
}

/// Wait for the receiver's final word; a swarm receiver's piece reports go to `have`.
pub(crate) async fn await_done(link: &mut PeerLink) -> Result<()> {
    await_done_with(link, |_| {}).await
}

pub(crate) async fn await_done_with(link: &mut PeerLink, mut have: impl FnMut(&str)) -> Result<()> {
    let msg = loop {
        match link.recv().await? {
            PeerMsg::Have { pieces } => have(&pieces),
            other => break other,
        }
    };
    match msg {
        PeerMsg::Done { ok: true, .. } => Ok(()),
        PeerMsg::Done { ok: false, message } => Err(Error::Transfer(format!(
            "the receiver reported: {}",
            message.unwrap_or_else(|| "unknown error".into())
        ))),
        other => Err(Error::Protocol(format!("expected done, got {}", other.kind()))),
    }
}

/// Close the link after `result`, telling the relay how it went.
pub(crate) async fn finish<T>(link: PeerLink, result: Result<T>) -> Result<T> {
    link.close(if result.is_ok() { Mood::Happy } else { Mood::Errory })
        .await;
    result
}

async fn send_text(text: &str, mut link: PeerLink, events: &EventSink) -> Result<u64> {
    let result = async {
        let body = OfferBody::Text {
            text: text.to_owned(),
        };
        offer(&mut link, body, &Offered::none(), (&[], None)).await?;
        events(Event::Transport {
            path: "relay-message".into(),
        });
        await_done(&mut link).await?;
        Ok(text.len() as u64)
    }
    .await;
    finish(link, result).await
}

async fn send_stdin(mut link: PeerLink, opts: &SendOptions, events: &EventSink) -> Result<u64> {
    let server = match stream::StreamServer::bind(link.keys().stream_hello).await {
        Ok(s) => s,
        Err(e) => return finish(link, Err(e)).await,
    };
    let port = match server.port() {
        Ok(p) => p,
        Err(e) => return finish(link, Err(e)).await,
    };
    let mut offered = Offered::new(opts.transport, &opts.relay, &link, port).await;
    offered.resume_tunnels();
    let result = async {
        let key = ContentKey::generate();
        let body = OfferBody::Stream {
            content_key: key.clone(),
            direct_hints: offered.hints.clone(),
        };
        offer(&mut link, body, &offered, (&[ABILITY_STREAM], None)).await?;
        let conn = server.accept().await?;
        events(Event::Transport {
            path: offered.path_in_use(true).unwrap_or(path::DIRECT).into(),
        });
        let progress = |bytes| events(Event::Progress { bytes, total: None });
        let cipher = StreamCipher::new(&key);
        let sent = stream::send(tokio::io::stdin(), conn, (&cipher, opts.compress), progress).await?;
        await_done(&mut link).await?;
        Ok(sent)
    }
    .await;
    offered.shutdown().await;
    finish(link, result).await.map_err(Error::for_stream)
}
