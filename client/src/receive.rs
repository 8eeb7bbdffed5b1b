//! The receiving side: claim the code's nameplate, run the PAKE, check the offer (never
//! trusting a name, size or torrent from the network), ask, and fetch it: files into a
//! staging folder that is verified before anything is moved into place, a text into the
//! report, a stream to standard output.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use convey_shared::{
    Code,
    content::{CIPHER_CHUNK, ContentCipher, ContentKey, StreamCipher},
    crypto::Side,
    display::{self, TextGuard},
    manifest::{CheckedManifest, Manifest},
    protocol::{
        peer::{
            ABILITY_GOODBYE, ABILITY_PEER_ROUTE, ABILITY_SWARM, ABILITY_TUNNEL, ABILITY_TUNNEL_RESUME,
            MAX_TEXT_BYTES, OfferBody, Packing, PeerMsg, dialable_hints,
        },
        rendezvous::Mood,
    },
};
use librqbit::ManagedTorrent;

use crate::{
    Error, Event, EventSink, RelayAddr,
    error::Result,
    rendezvous::Rendezvous,
    session::{self, PeerLink},
    transfer::{
        bt, codec,
        staging::Staging,
        storage::OpeningStorageFactory,
        stream,
        writer::{ChunkSet, Writer},
    },
    transport::{
        Transport, path,
        rtc::RtcPeer,
        select::{PathSelector, Paths},
    },
};

/// Longest a key exchange with a present peer may take.
const PAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// In `auto`, how long a direct connection may deliver nothing before the transfer moves to
/// the fallback paths.
const FAILOVER_AFTER: Duration = Duration::from_secs(8);
/// Top-level names shown in an offer summary.
const SHOWN_NAMES: usize = 5;
/// Default for [`ReceiveOptions::silence`].
pub const PEER_SILENCE: Duration = Duration::from_secs(60);
/// Default for [`ReceiveOptions::seed_for`]: long enough for the other receivers of a swarm
/// on a similar link to finish (they started about when we did), short enough that a
/// receiver in a script never lingers long after its own files are in place.
pub const SEED_FOR: Duration = Duration::from_secs(5 * 60);
/// Once the sender has gone, a finished receiver stops serving when nobody fetched a
/// byte from it for this long.
const SWARM_IDLE: Duration = Duration::from_secs(30);

/// What the user is asked to accept.
#[derive(Debug, Clone)]
pub struct OfferSummary {
    /// `files` or `stream`.
    pub kind: &'static str,
    pub files: usize,
    /// `None` for a stream.
    pub bytes: Option<u64>,
    /// The first top-level names, display-safe (folders end in `/`).
    pub names: Vec<String>,
    /// Top-level names not shown.
    pub more: usize,
}

/// Decides whether to accept an offer (a prompt, or `--yes`). Runs on a blocking thread.
pub type AcceptFn = Arc<dyn Fn(&OfferSummary) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct ReceiveOptions {
    pub relay: RelayAddr,
    pub code: Code,
    pub out_dir: PathBuf,
    pub overwrite: bool,
    /// How long to wait for the sender to show up.
    pub wait: Duration,
    pub accept: AcceptFn,
    /// Which paths to the sender may be used.
    pub transport: Transport,
    /// Standard output is a terminal: write a received stream there only while it is plain
    /// text (no binary data, no escape sequences), as curl does.
    pub guard_terminal: bool,
    /// Longest the sender may stay silent after key confirmation before its offer (it says
    /// it is still preparing every [`session::HEARTBEAT`]) and during a stream (it sends a
    /// keep-alive when its input is quiet): [`PEER_SILENCE`] unless a test shortens it.
    pub silence: Duration,
    /// In a swarm (an offer to several receivers): after our own download, keep serving
    /// the other receivers until the sender says all are done, for at most this long.
    pub seed_for: Duration,
}

impl std::fmt::Debug for ReceiveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiveOptions")
            .field("relay", &self.relay)
            .field("code", &self.code)
            .field("out_dir", &self.out_dir)
            .finish_non_exhaustive()
    }
}

/// What arrived.
#[derive(Debug, Clone)]
pub enum Received {
    /// Files, now in place; `paths` are the top-level entries created under `--out`.
    Files { paths: Vec<PathBuf>, count: usize },
    /// A text message (unescaped: escape it before showing it on a terminal).
    Text(String),
    /// A stream, written to standard output.
    Stream,
}

#[derive(Debug, Clone)]
pub struct ReceiveReport {
    pub received: Received,
    pub bytes: u64,
    pub elapsed: Duration,
}

pub async fn receive(opts: ReceiveOptions, events: EventSink) -> Result<ReceiveReport> {
    let mut rv = Rendezvous::connect(&opts.relay).await.map_err(|e| match e {
        Error::RelayUnreachable { relay, reason, .. } => Error::RelayUnreachable {
            relay,
            reason,
            hint: ", or that `convey send` is still running",
        },
        e => e,
    })?;
    let nameplate = opts.code.nameplate();
    if !rv.claim(nameplate, None).await? {
        events(Event::Waiting);
        tokio::time::timeout(opts.wait, rv.wait_for_peer()).await.map_err(|_| {
            Error::Timeout(format!(
                "no sender appeared for code {nameplate}-… within {}; check the code and that `convey send` is still running, or raise --wait",
                humantime::format_duration(opts.wait)
            ))
        })??;
    }
    let mut link = tokio::time::timeout(PAKE_TIMEOUT, session::establish(rv, &opts.code, Side::Receiver))
        .await
        .map_err(|_| Error::Timeout("the key exchange with the sender did not finish in time".into()))??;
    events(Event::Connected);

    let offer = loop {
        match tokio::time::timeout(opts.silence, link.recv()).await {
            // The session machine lets through only a heartbeat or the offer here.
            Ok(Ok(PeerMsg::Offer(o))) => break *o,
            Ok(Ok(_)) => continue,
            Ok(Err(e @ Error::Protocol(_))) => return reject(link, e).await,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let e = Error::Timeout(format!(
                    "the sender confirmed the code, then sent nothing for {}s; it may have stopped: run both commands again",
                    opts.silence.as_secs()
                ));
                return reject(link, e).await;
            }
        }
    };
    let offers = |ability: &str| offer.abilities.iter().any(|a| a == ability);
    let tunnel = (offers(ABILITY_TUNNEL), offers(ABILITY_TUNNEL_RESUME));
    let swarm = offers(ABILITY_SWARM);
    let route = offers(ABILITY_PEER_ROUTE);
    if !swarm {
        link.await_vanished_peer();
        if offers(ABILITY_GOODBYE) {
            link.await_goodbye();
        }
    }
    let start = offer.start;
    let rtc_offer = offer.rtc;
    match offer.body {
        OfferBody::Text { text } => receive_text(link, text, &events).await,
        OfferBody::Stream {
            content_key,
            direct_hints,
        } => {
            let paths = paths_to_sender(&opts, &link, direct_hints, tunnel);
            receive_stream(link, (&content_key, rtc_offer.as_deref()), paths, &opts, &events).await
        }
        OfferBody::Pushed {
            manifest,
            content_key,
            direct_hints,
        } => {
            let paths = paths_to_sender(&opts, &link, direct_hints, tunnel);
            let body = (manifest, content_key);
            let rtc = rtc_offer.as_deref();
            crate::receive_push::receive_pushed(link, body, paths, (rtc, route), &opts, &events).await
        }
        OfferBody::Files {
            manifest,
            content_key,
            torrent,
            direct_hints,
            packing,
        } => {
            let paths = paths_to_sender(&opts, &link, direct_hints, tunnel);
            let plan = match check_files(manifest, (&content_key, packing.as_ref()), &torrent, paths, &opts) {
                Ok(p) => Plan {
                    swarm,
                    start: start.filter(|s| swarm && *s < p.cipher.cipher_len()),
                    ..p
                },
                Err(e) => return reject(link, e).await,
            };
            receive_files(link, plan, rtc_offer.as_deref(), &opts, &events).await
        }
    }
}

/// The torrent librqbit runs now: a fallback removes it and adds it again, so whatever
/// looks at it later (the failover check, the sources report, the seat that serves the
/// swarm) must see the new one, not the first.
#[derive(Default)]
struct CurrentTorrent(std::sync::Mutex<Option<Arc<ManagedTorrent>>>);

impl CurrentTorrent {
    fn get(&self) -> Option<Arc<ManagedTorrent>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, t: Arc<ManagedTorrent>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }
}

/// Is librqbit connected to the sender other than through the path selector?
fn direct_peer_live(torrent: &CurrentTorrent, selector: &OnceLock<SocketAddr>) -> bool {
    let (Some(t), Some(sel)) = (torrent.get(), selector.get()) else {
        return false;
    };
    let Some(live) = t.live() else { return false };
    // librqbit exports the filter type only through serde (it is its HTTP API's query).
    let Ok(live_only) = serde_json::from_value(serde_json::json!({ "state": "live" })) else {
        return false;
    };
    let selector = sel.to_string();
    live.per_peer_stats_snapshot(live_only)
        .peers
        .keys()
        .any(|addr| *addr != selector)
}

/// The relay closed the tunnel for good (a cap, a shutdown), in its own words.
fn tunnel_ended(said: Option<String>) -> Error {
    Error::Transfer(format!(
        "the relay ended the tunnel: {}; the partial download is kept, run both commands again to resume",
        said.as_deref().unwrap_or("no reason given")
    ))
}

/// Where and how the sender may be reached, as the offer and `--transport` allow; `tunnel`:
/// does the sender serve the relay tunnel, and do its ends take resumable connections.
fn paths_to_sender(
    opts: &ReceiveOptions,
    link: &PeerLink,
    hints: Vec<SocketAddr>,
    (tunnel, tunnel_resume): (bool, bool),
) -> Paths {
    let hints = dialable_hints(hints, bt::MAX_HINTS);
    Paths {
        transport: opts.transport,
        hints,
        tunnel,
        tunnel_resume,
        relay: opts.relay.clone(),
        token: link.keys().tunnel_token.clone(),
        rtc: None,
        direct_elsewhere: None,
        relay_said: Arc::default(),
    }
}

pub(crate) async fn reject<T>(mut link: PeerLink, e: Error) -> Result<T> {
    let _ = link
        .send(&PeerMsg::Answer {
            accept: false,
            reason: Some(e.to_string()),
            rtc: None,
        })
        .await;
    link.close(Mood::Errory).await;
    Err(e)
}

/// Show the offer and ask; on a no, tell the sender and stop. On a yes, answer the
/// sender's WebRTC offer too (when that path is allowed), adding it to `paths`.
pub(crate) async fn ask(
    link: &mut PeerLink,
    summary: OfferSummary,
    opts: &ReceiveOptions,
    events: &EventSink,
    paths: &mut Paths,
    rtc_offer: Option<&str>,
) -> Result<()> {
    events(Event::Offer {
        kind: summary.kind.into(),
        files: summary.files,
        bytes: summary.bytes,
        names: summary.names.clone(),
    });
    let accept = opts.accept.clone();
    let accepted = link
        .keep_alive_while(tokio::task::spawn_blocking(move || accept(&summary)))
        .await
        .unwrap_or(false);
    if !accepted {
        link.send(&PeerMsg::Answer {
            accept: false,
            reason: Some("declined by the receiver".into()),
            rtc: None,
        })
        .await?;
        return Err(Error::Declined(None));
    }
    let mut rtc_answer = None;
    if let Some(offer) = rtc_offer.filter(|_| paths.transport.allows_webrtc()) {
        match RtcPeer::answer(link.stun.clone(), offer).await {
            Ok((peer, sdp)) => {
                paths.rtc = Some(Arc::new(peer));
                rtc_answer = Some(sdp);
            }
            Err(err) => tracing::debug!(%err, "no WebRTC path"),
        }
    }
    link.send(&PeerMsg::Answer {
        accept: true,
        reason: None,
        rtc: rtc_answer,
    })
    .await
}

/// Tell the sender how it went, close the link, and pass the result on.
pub(crate) async fn conclude<T>(mut link: PeerLink, result: Result<T>, swarm: bool) -> Result<T> {
    let (ok, message) = match &result {
        Ok(_) => (true, None),
        Err(Error::Declined(_)) => {
            link.close(Mood::Happy).await;
            return result;
        }
        Err(e) => (false, Some(e.for_peer())),
    };
    let sent = link.send(&PeerMsg::Done { ok, message }).await;
    link.close(if ok { Mood::Happy } else { Mood::Errory }).await;
    match (result, sent) {
        (Ok(v), Ok(())) => Ok(v),
        // A swarm receiver finishes from the others after the sender has gone: its files
        // are in place and verified, there is just nobody left to tell.
        (Ok(v), Err(Error::PeerGone | Error::WrongCode | Error::RelayUnreachable { .. })) if swarm => Ok(v),
        (Ok(_), Err(e)) | (Err(e), _) => Err(e),
    }
}

async fn receive_text(mut link: PeerLink, text: String, events: &EventSink) -> Result<ReceiveReport> {
    if text.len() > MAX_TEXT_BYTES {
        return reject(link, Error::Protocol("the offered text is too long".into())).await;
    }
    // An offer event for the text too: it is what tells the output that the offer is
    // here (JSON lines are held until then) and scripts what kind arrived.
    events(Event::Offer {
        kind: "text".into(),
        files: 0,
        bytes: Some(text.len() as u64),
        names: Vec::new(),
    });
    let answered = link
        .send(&PeerMsg::Answer {
            accept: true,
            reason: None,
            rtc: None,
        })
        .await;
    events(Event::Transport {
        path: "relay-message".into(),
    });
    let bytes = text.len() as u64;
    let result = answered.map(|()| ReceiveReport {
        received: Received::Text(text),
        bytes,
        elapsed: Duration::ZERO,
    });
    conclude(link, result, false).await
}

async fn receive_stream(
    mut link: PeerLink,
    (key, rtc_offer): (&ContentKey, Option<&str>),
    mut paths: Paths,
    opts: &ReceiveOptions,
    events: &EventSink,
) -> Result<ReceiveReport> {
    let hello = link.keys().stream_hello;
    let summary = OfferSummary {
        kind: "stream",
        files: 1,
        bytes: None,
        names: vec!["standard input of the sender".into()],
        more: 0,
    };
    let started = Instant::now();
    let result = async {
        ask(&mut link, summary, opts, events, &mut paths, rtc_offer).await?;
        let selector = PathSelector::spawn(paths.clone(), events.clone()).await?;
        let received = async {
            let conn = stream::connect(selector.addr(), &hello).await?;
            let progress = |bytes| events(Event::Progress { bytes, total: None });
            let guard = opts.guard_terminal.then(TextGuard::default);
            let out = tokio::io::stdout();
            stream::receive(
                conn,
                &StreamCipher::new(key),
                out,
                (guard, opts.silence),
                progress,
            )
            .await
        }
        .await;
        selector.shutdown().await;
        received
    }
    .await;
    paths.close().await;
    let bytes = conclude(link, result, false).await.map_err(Error::for_stream)?;
    events(Event::Done {
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        fetched: None,
    });
    Ok(ReceiveReport {
        received: Received::Stream,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// A checked files offer, ready to download.
pub(crate) struct Plan {
    pub(crate) content: CheckedManifest,
    pub(crate) staging: Staging,
    pub(crate) torrent: Vec<u8>,
    pub(crate) cipher: ContentCipher,
    pub(crate) paths: Paths,
    pub(crate) info_hash: [u8; 20],
    /// One of several receivers: serve the others, during and after our own download.
    pub(crate) swarm: bool,
    /// In a swarm, where to fetch first (a ciphertext offset, checked against the length).
    pub(crate) start: Option<u64>,
    /// The torrent's piece length (a whole number of chunks, checked).
    pub(crate) piece_len: u64,
    /// This build re-creates the sender's packed frames (same codec), so it may serve them.
    pub(crate) repacks: bool,
}

/// Validate everything the sender claimed before touching the disk (the shared check, which
/// the browser page runs too), and plan where it goes.
pub(crate) fn check_files(
    manifest: Manifest,
    (key, packing): (&ContentKey, Option<&Packing>),
    torrent: &str,
    paths: Paths,
    opts: &ReceiveOptions,
) -> Result<Plan> {
    let local = codec::codec_id();
    let checked = convey_shared::session::check_files(manifest, key, packing, torrent, Some(&local))
        .map_err(|e| match e {
            convey_shared::session::OfferError::Refused(m) => Error::Refused(m),
            convey_shared::session::OfferError::Malformed(m) => Error::Protocol(m),
        })?;
    let info_hash = checked.info_hash;
    let staging = Staging::new(&opts.out_dir, &info_hash, &checked.content);
    Ok(Plan {
        content: checked.content,
        staging,
        torrent: checked.torrent,
        cipher: checked.cipher,
        paths,
        info_hash,
        swarm: false,
        start: None,
        piece_len: checked.piece_len,
        repacks: checked.repacks,
    })
}

/// The first top-level names of an offer, display-safe, and how many more there are.
pub(crate) fn top_names(content: &CheckedManifest) -> (Vec<String>, usize) {
    convey_shared::session::top_names(content, SHOWN_NAMES)
}

async fn receive_files(
    mut link: PeerLink,
    mut plan: Plan,
    rtc_offer: Option<&str>,
    opts: &ReceiveOptions,
    events: &EventSink,
) -> Result<ReceiveReport> {
    let total = plan.content.layout.total();
    if let Err(e) = plan
        .staging
        .check_destinations(opts.overwrite)
        .and_then(|()| plan.staging.check_space(total))
    {
        return reject(link, e).await;
    }
    let (names, more) = top_names(&plan.content);
    let summary = OfferSummary {
        kind: "files",
        files: plan.content.manifest.files.len(),
        bytes: Some(total),
        names,
        more,
    };
    let started = Instant::now();
    let result = async {
        ask(&mut link, summary, opts, events, &mut plan.paths, rtc_offer).await?;
        download(&mut link, &plan, opts, events).await
    }
    .await;
    plan.paths.close().await;
    match result {
        Ok((fetched, Some(seat))) => {
            // Tell the sender first: it counts this receiver done and says when all are;
            // until then (at most --seed-for) this receiver serves the others.
            let _ = link
                .send(&PeerMsg::Done {
                    ok: true,
                    message: None,
                })
                .await;
            events(Event::Done {
                bytes: total,
                seconds: started.elapsed().as_secs_f64(),
                fetched: Some(fetched),
            });
            serve_swarm(&mut link, &seat.torrent, opts.seed_for, events).await;
            seat.shutdown().await;
            link.close(Mood::Happy).await;
        }
        other => {
            let fetched = conclude(link, other.map(|(f, _)| f), plan.swarm).await?;
            events(Event::Done {
                bytes: total,
                seconds: started.elapsed().as_secs_f64(),
                fetched: Some(fetched),
            });
        }
    }
    Ok(ReceiveReport {
        received: Received::Files {
            paths: plan.staging.tops().to_vec(),
            count: plan.content.manifest.files.len(),
        },
        bytes: total,
        elapsed: started.elapsed(),
    })
}

/// Fetch, verify and install. Returns the ciphertext bytes fetched over the network, and in
/// a swarm the session that goes on serving the other receivers.
pub(crate) async fn download(
    link: &mut PeerLink,
    plan: &Plan,
    opts: &ReceiveOptions,
    events: &EventSink,
) -> Result<(u64, Option<Seat>)> {
    let relay = &opts.relay;
    let resume = plan.staging.exists();
    let files = Arc::new(plan.staging.create(&plan.content)?);
    let download_started = Instant::now();
    let folder = plan.staging.root.clone();

    if !plan.paths.any() {
        return Err(Error::Transfer(
            "the sender offers no path this receiver may use; check --transport on both sides".into(),
        ));
    }
    // `--transport direct` is plain BitTorrent: tracker peers and the sender's addresses.
    // `auto` adds the path selector as a second peer for the fallbacks, which stands aside
    // while librqbit's own direct connection works. Forced WebRTC or relay: the selector only.
    let torrent: Arc<CurrentTorrent> = Arc::default();
    let selector_addr: Arc<OnceLock<SocketAddr>> = Arc::default();
    let transport = plan.paths.transport;
    let mut paths = plan.paths.clone();
    // Armed while librqbit dials the sender directly; disarmed once we fell back.
    let fallback_armed = Arc::new(AtomicBool::new(false));
    if transport == Transport::Auto && !paths.hints.is_empty() {
        fallback_armed.store(true, Ordering::Relaxed);
        let (torrent, selector_addr, armed) =
            (torrent.clone(), selector_addr.clone(), fallback_armed.clone());
        paths.direct_elsewhere = Some(Arc::new(move || {
            armed.load(Ordering::Relaxed) && direct_peer_live(&torrent, &selector_addr)
        }));
    }
    let selector = match transport {
        Transport::Direct => None,
        _ => Some(PathSelector::spawn(paths, events.clone()).await?),
    };
    let (tracker, peers) = match &selector {
        None => {
            events(Event::Transport {
                path: path::DIRECT.into(),
            });
            (Some(relay.announce_url()), plan.paths.hints.clone())
        }
        Some(s) if transport == Transport::Auto => {
            let _ = selector_addr.set(s.addr());
            let mut peers = plan.paths.hints.clone();
            peers.push(s.addr());
            (Some(relay.announce_url()), peers)
        }
        Some(s) => (None, vec![s.addr()]),
    };
    let mut relay_said = plan.paths.relay_said.subscribe();
    if plan.swarm && tracker.is_some() {
        // The tracker serves a swarm while any member's connection is registered: so the
        // receivers still find each other once the sender has gone.
        link.register_swarm(&hex::encode(plan.info_hash)).await?;
    }
    let torrent_session = bt::start_session(&folder, None).await?;
    let written = Arc::new(ChunkSet::new(plan.cipher.chunk_count(), resume));
    let writer = Writer::spawn(files.clone(), plan.cipher.clone(), written.clone(), !resume)
        .map(Arc::new)
        .map_err(Error::io("starting the writer"))?;
    let storage = OpeningStorageFactory::new(
        files.clone(),
        plan.cipher.clone(),
        written.clone(),
        writer.clone(),
        plan.repacks,
    );
    let total = plan.content.layout.total();
    let fetched = async {
        let mut direct_shown = transport == Transport::Direct;
        let (mut tracker, mut peers, mut resume) = (tracker, peers, resume);
        let mut fetched_before = 0;
        let mut sender_here = true;
        let mut steering = None;
        let mut have_tick = tokio::time::interval(HAVE_EVERY);
        // A resumed receiver's chunk map starts full (librqbit checks what is really there),
        // so it would claim pieces it may not have: only a fresh one reports.
        let report_have = plan.swarm && !resume;
        loop {
            let handle = bt::add(
                &torrent_session,
                plan.torrent.clone(),
                storage.clone().boxed_factory(),
                bt::AddOptions {
                    tracker: tracker.clone(),
                    peers: peers.clone(),
                    paused: false,
                    announce_every: plan.swarm.then_some(bt::SWARM_ANNOUNCE_EVERY),
                },
                &folder,
            )
            .await?;
            torrent.set(handle.clone());
            if let (Some(start), None) = (plan.start, &steering) {
                let (handle, written) = (handle.clone(), written.clone());
                let arrived = move |i| written.queued(i) || written.get(i);
                steering = Some(torrent_session.spawn(bt::steer(handle, start, CIPHER_CHUNK, arrived)));
            }
            if resume {
                let had = bt::wait_checked(&handle).await?;
                events(Event::Resumed {
                    bytes: plan.cipher.plain_progress(had),
                });
            }
            let progress = |done: u64, _| {
                // Bytes that arrived while the selector carried nothing came direct.
                if !direct_shown && done > 0 && selector.as_ref().is_some_and(|s| s.current().is_none()) {
                    direct_shown = true;
                    events(Event::Transport {
                        path: path::DIRECT.into(),
                    });
                }
                events(Event::Progress {
                    bytes: plan.cipher.plain_progress(done),
                    total: Some(total),
                });
            };
            // In `auto`, a stalled direct connection hands over to the fallbacks quickly.
            let stall = if fallback_armed.load(Ordering::Relaxed) {
                FAILOVER_AFTER
            } else {
                bt::STALL_TIMEOUT
            };
            let download = bt::wait_downloaded(&handle, stall, progress);
            tokio::pin!(download);
            let outcome = loop {
                tokio::select! {
                    r = &mut download => break r?,
                    // When the tunnel is the only path, the relay ending it ends the transfer.
                    // (The watch guard is dropped inside: it must not live across an await.)
                    said = async { relay_said.wait_for(Option::is_some).await.ok().and_then(|s| s.clone()) },
                        if transport == Transport::Relay => {
                        return Err(tunnel_ended(said));
                    }
                    _ = have_tick.tick(), if report_have && sender_here => {
                        let pieces = held_pieces(&written, plan.cipher.chunk_count(), plan.piece_len / CIPHER_CHUNK);
                        let _ = link.send(&PeerMsg::Have { pieces }).await;
                    }
                    msg = link.recv(), if sender_here => match msg {
                        // In a swarm the others may hold every piece: carry on without the sender.
                        Err(_) if plan.swarm => sender_here = false,
                        Err(e) => return Err(e),
                        Ok(PeerMsg::SwarmDone) if plan.swarm => {}
                        Ok(other) => return Err(Error::Protocol(format!("unexpected {} from the sender during the transfer", other.kind()))),
                    },
                }
            };
            match outcome {
                bt::Downloaded::Complete(n) => return Ok(fetched_before + n),
                bt::Downloaded::Stalled if fallback_armed.swap(false, Ordering::Relaxed) => {
                    // Start again through the path selector alone; librqbit re-checks what
                    // arrived, so no verified piece is fetched twice.
                    tracing::debug!("direct path stalled; continuing over the fallbacks");
                    // The network changed under us: a WebRTC connection negotiated before
                    // may look alive for a while but carry nothing. The relay does not.
                    plan.paths.close().await;
                    fetched_before += handle.stats().live.map_or(0, |l| l.snapshot.fetched_bytes);
                    bt::remove(&torrent_session, &handle).await;
                    // In a swarm the other receivers (found through the tracker) may hold
                    // what the sender cannot deliver any more: keep them.
                    if !plan.swarm {
                        tracker = None;
                        peers = selector.as_ref().map(|s| vec![s.addr()]).unwrap_or_default();
                    }
                    resume = true;
                }
                bt::Downloaded::Stalled => {
                    return Err(match relay_said.borrow().clone() {
                        Some(said) => tunnel_ended(Some(said)),
                        None => bt::stalled_error(),
                    });
                }
            }
        }
    }
    .await;
    if let Some(s) = selector {
        s.shutdown().await;
    }
    let seeding = plan.swarm && fetched.is_ok();
    if !seeding {
        bt::shutdown(&torrent_session).await;
    }
    let finished = writer.finish().await;
    if !seeding {
        files.close_all();
    }
    // Whichever side noticed first (librqbit's write, or the writer's last chunks), a full
    // disk is named as one.
    if (fetched.is_err() || finished.is_err()) && writer.disk_full() {
        bt::shutdown(&torrent_session).await;
        files.close_all();
        return Err(Error::DiskFull {
            dir: display::safe(&opts.out_dir.display().to_string(), false),
            needed_mib: written.missing_share(total).div_ceil(1 << 20),
        });
    }
    let fetched = match fetched {
        Ok(f) => f,
        Err(e) => {
            bt::shutdown(&torrent_session).await;
            return Err(e);
        }
    };
    if let Some(t) = torrent.get() {
        report_sources(&t, &plan.paths.hints, selector_addr.get(), events);
    }
    let written = finished.map_err(Error::Transfer)?;
    if let Some(why) = written.corrupt {
        bt::shutdown(&torrent_session).await;
        files.close_all();
        return Err(Error::Protocol(format!(
            "the sender's compressed data does not decode ({why}); nothing was installed"
        )));
    }
    let verify_started = Instant::now();
    tracing::debug!(elapsed = ?verify_started.duration_since(download_started), "download complete");
    let verified = verify_and_install(
        link,
        (&plan.staging, &plan.content),
        written.sha256,
        opts.overwrite,
    )
    .await;
    let seat = match (seeding, verified.is_ok(), torrent.get()) {
        (true, true, Some(t)) => {
            // The files are in place: serve them from there (open files follow the rename).
            files.relocate(plan.staging.final_paths());
            Some(Seat {
                engine: torrent_session,
                torrent: t,
                files: files.clone(),
            })
        }
        (true, ..) => {
            bt::shutdown(&torrent_session).await;
            files.close_all();
            None
        }
        _ => None,
    };
    verified?;
    tracing::debug!(elapsed = ?verify_started.elapsed(), "verified, synced and moved into place");
    Ok((fetched, seat))
}

/// Check every file against the sender's SHA-256 (`hashed` holds the digests computed as
/// the data arrived, else the files are read back) and move them into place; a mismatch
/// discards the staging folder, so nothing unverified is ever kept.
pub(crate) async fn verify_and_install(
    link: &mut PeerLink,
    (staging, content): (&Staging, &CheckedManifest),
    hashed: Option<Vec<[u8; 32]>>,
    overwrite: bool,
) -> Result<()> {
    let (staging, content) = (staging.clone(), content.clone());
    let verify = tokio::task::spawn_blocking(move || {
        if let Some(bad) = staging.verify(&content, hashed.as_deref())? {
            staging.discard();
            return Err(Error::Transfer(format!(
                "{} does not match the sender's SHA-256; nothing was kept",
                display::safe(&bad, false)
            )));
        }
        staging.install(&content, overwrite)
    });
    link.keep_alive_while(verify)
        .await
        .map_err(|e| Error::Transfer(format!("verifying failed: {e}")))
        .and_then(|r| r)
}

/// A swarm receiver's BitTorrent session, kept after its download to serve the others.
pub(crate) struct Seat {
    engine: bt::Engine,
    torrent: Arc<ManagedTorrent>,
    files: Arc<crate::transfer::files::FileSet>,
}

impl Seat {
    async fn shutdown(self) {
        bt::shutdown(&self.engine).await;
        self.files.close_all();
    }
}

/// How often a swarm receiver tells the sender which pieces it holds.
const HAVE_EVERY: Duration = Duration::from_secs(2);

/// The pieces whose every chunk is on disk, as a BitTorrent-style bitfield in base64.
fn held_pieces(written: &ChunkSet, chunks: u64, per_piece: u64) -> String {
    let per_piece = per_piece.max(1);
    let pieces = chunks.div_ceil(per_piece);
    let mut bits = vec![0u8; usize::try_from(pieces.div_ceil(8)).unwrap_or(0)];
    for p in 0..pieces {
        let first = p * per_piece;
        if (first..(first + per_piece).min(chunks)).all(|i| written.get(i)) {
            convey_shared::bits::set(&mut bits, p);
        }
    }
    B64.encode(bits)
}

/// Say where the bytes came from: the sender (its direct addresses or the path selector)
/// or other receivers (every other peer).
fn report_sources(
    torrent: &ManagedTorrent,
    sender_hints: &[SocketAddr],
    selector: Option<&SocketAddr>,
    events: &EventSink,
) {
    let Some(live) = torrent.live() else { return };
    let Ok(all) = serde_json::from_value(serde_json::json!({ "state": "all" })) else {
        return;
    };
    let sender: Vec<String> = sender_hints
        .iter()
        .chain(selector)
        .map(ToString::to_string)
        .collect();
    let (mut from_sender, mut from_receivers) = (0, 0);
    for (addr, stats) in live.per_peer_stats_snapshot(all).peers {
        if sender.contains(&addr) {
            from_sender += stats.counters.fetched_bytes;
        } else {
            from_receivers += stats.counters.fetched_bytes;
        }
    }
    events(Event::Sources {
        from_sender,
        from_receivers,
    });
}

/// After our own download in a swarm: serve the other receivers until the sender says all
/// are done, for at most `seed_for`, and once the sender has gone only while someone still
/// fetches from us.
async fn serve_swarm(link: &mut PeerLink, torrent: &ManagedTorrent, seed_for: Duration, events: &EventSink) {
    if seed_for.is_zero() {
        return;
    }
    events(Event::Seeding {
        seconds: seed_for.as_secs(),
    });
    let until = tokio::time::sleep(seed_for);
    tokio::pin!(until);
    let mut sender_here = true;
    let mut last = (torrent.stats().uploaded_bytes, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = &mut until => return,
            msg = link.recv(), if sender_here => match msg {
                Ok(PeerMsg::SwarmDone) => return,
                Ok(_) => {}
                Err(_) => sender_here = false,
            },
            _ = tick.tick() => {
                let up = torrent.stats().uploaded_bytes;
                if up != last.0 {
                    last = (up, Instant::now());
                } else if !sender_here && last.1.elapsed() > SWARM_IDLE {
                    return;
                }
            }
        }
    }
}
