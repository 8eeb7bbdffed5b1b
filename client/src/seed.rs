//! Seeding files and folders to a swarm (several receivers): while the receivers type the
//! code, walk the paths, hash and encrypt the content once, and let librqbit check it
//! (paused, not announced). After each key confirmation, register the swarm, start seeding
//! (once), send the offer, and wait for that receiver's verdict. One receiver is sent to
//! by [`crate::send_push`] instead, which starts at once.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use convey_shared::{
    content::ContentCipher,
    layout::Layout,
    manifest::Manifest,
    protocol::peer::{
        ABILITY_BITTORRENT, ABILITY_PEER_ROUTE, ABILITY_PUSH, ABILITY_PUSH_ACKS, ABILITY_SWARM, OfferBody,
        Packing,
    },
};

use crate::{
    Error, Event, EventSink,
    error::Result,
    send::{SendOptions, await_done_with, offer},
    session::PeerLink,
    transfer::{
        bt, codec,
        content_key::content_key,
        files::FileSet,
        prepare::{Prepared, prepare},
        push_send::{PushServer, PushSource, RouteHandler, Tap},
        select::select,
        storage::SealingStorageFactory,
    },
    transport::serve::Offered,
};
use tokio::sync::watch;

/// Prepared content, checked by librqbit and ready to seed (paused until the first
/// receiver's offer). Built once, whatever the number of receivers.
pub(crate) struct Seeding {
    pub(crate) prepared: Prepared,
    manifest: Manifest,
    /// The files, for a receiver that takes a push (a browser page) instead of BitTorrent.
    files: Arc<FileSet>,
    pub(crate) cipher: ContentCipher,
    torrent: Vec<u8>,
    pub(crate) engine: bt::Engine,
    pub(crate) handle: Arc<librqbit::ManagedTorrent>,
    /// Announcing and serving started (once, for the first receiver).
    started: tokio::sync::OnceCell<()>,
}

/// Walk, hash and encrypt the content once, then let librqbit check it without announcing.
pub(crate) async fn get_ready(
    paths: Vec<PathBuf>,
    opts: &SendOptions,
    cancel: Arc<AtomicBool>,
    events: EventSink,
) -> Result<Seeding> {
    let began = Instant::now();
    let compress = opts.compress;
    let (mut manifest, files, prepared) = tokio::task::spawn_blocking(move || {
        let sel = select(&paths)?;
        let files = Arc::new(FileSet::new(
            sel.sources,
            Layout::new(sel.manifest.files.iter().map(|f| f.size))
                .ok_or_else(|| Error::Refused("the files add up to more bytes than can be counted".into()))?,
            false,
        ));
        events(Event::Preparing {
            bytes: files.layout().total(),
        });
        let prepared = prepare(&files, content_key(&sel.fingerprint), compress, &cancel)?;
        Ok::<_, Error>((sel.manifest, files, prepared))
    })
    .await
    .map_err(|e| Error::Transfer(format!("preparing the files failed: {e}")))??;
    for (entry, digest) in manifest.files.iter_mut().zip(&prepared.sha256) {
        entry.sha256.clone_from(digest);
    }
    tracing::debug!(elapsed = ?began.elapsed(), "hashed and encrypted");
    let cipher = prepared.cipher();
    let torrent = prepared.torrent_bytes(None);
    let checked = seeder(files.clone(), cipher.clone(), torrent.clone(), opts, true).await;
    tracing::debug!(elapsed = ?began.elapsed(), "checked by librqbit");
    let (engine, handle) = checked?;
    Ok(Seeding {
        prepared,
        manifest,
        files,
        cipher,
        torrent,
        engine,
        handle,
        started: tokio::sync::OnceCell::new(),
    })
}

/// A librqbit session of its own seeding `files` as `torrent` (sealed on read by `cipher`),
/// once librqbit's check found every piece; `paused`, it neither announces nor connects
/// until [`bt::start`]. On any failure the session is shut down.
pub(crate) async fn seeder(
    files: Arc<FileSet>,
    cipher: ContentCipher,
    torrent: Vec<u8>,
    opts: &SendOptions,
    paused: bool,
) -> Result<(bt::Engine, Arc<librqbit::ManagedTorrent>)> {
    let folder = std::env::temp_dir();
    let engine = bt::start_session(&folder, opts.upload_limit).await?;
    let storage = SealingStorageFactory::new(files, cipher);
    let added = bt::add(
        &engine,
        torrent,
        storage.boxed_factory(),
        bt::AddOptions {
            // Announcing reveals our address to the tracker: not when only the relay may be used.
            tracker: opts.transport.allows_direct().then(|| opts.relay.announce_url()),
            peers: Vec::new(),
            paused,
            announce_every: None,
        },
        &folder,
    )
    .await;
    let checked = match added {
        Ok(handle) => bt::wait_seeding(&handle).await.map(|()| handle),
        Err(e) => Err(e),
    };
    match checked {
        Ok(handle) => Ok((engine, handle)),
        Err(e) => {
            bt::shutdown(&engine).await;
            Err(e)
        }
    }
}

/// Which pieces the receivers of a swarm hold together, from their `have` reports, and how
/// many each one reported last (their sum grows while the receivers make progress).
#[derive(Debug)]
pub(crate) struct Holdings {
    pieces: u64,
    bits: std::sync::Mutex<Vec<u8>>,
    counts: std::sync::Mutex<std::collections::HashMap<u32, u64>>,
}

impl Holdings {
    pub(crate) fn new(seeding: &Seeding) -> Self {
        Self::with_pieces(
            seeding
                .cipher
                .cipher_len()
                .div_ceil(seeding.prepared.info.piece_length.max(1)),
        )
    }

    fn with_pieces(pieces: u64) -> Self {
        Self {
            pieces,
            bits: std::sync::Mutex::new(vec![0; usize::try_from(pieces.div_ceil(8)).unwrap_or(0)]),
            counts: std::sync::Mutex::default(),
        }
    }

    /// Add receiver `from`'s report (base64 bitfield): how many pieces it holds. A
    /// malformed one is ignored (`None`).
    fn add(&self, from: u32, report: &str) -> Option<u64> {
        let theirs = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, report).ok()?;
        let mut bits = self.bits.lock().unwrap_or_else(|e| e.into_inner());
        if theirs.len() != bits.len() {
            return None;
        }
        let held = theirs.iter().map(|t| u64::from(t.count_ones())).sum();
        for (b, t) in bits.iter_mut().zip(theirs) {
            *b |= t;
        }
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(from, held);
        Some(held.min(self.pieces))
    }

    /// The pieces the receivers reported holding, summed over their latest reports: it
    /// stops growing when the receivers that still fetch get nothing.
    pub(crate) fn reported(&self) -> u64 {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }

    /// A receiver completed: it holds every piece.
    pub(crate) fn add_all(&self) {
        self.bits.lock().unwrap_or_else(|e| e.into_inner()).fill(0xff);
    }

    /// Do the receivers together hold every piece?
    pub(crate) fn complete(&self) -> bool {
        let bits = self.bits.lock().unwrap_or_else(|e| e.into_inner());
        (0..self.pieces).all(|p| convey_shared::bits::has(&bits, p))
    }
}

/// Who a receiver is among the receivers of one offer: the offer says the receivers seed
/// each other, and where this one (`index` from 0, of `of` or any number) should start
/// fetching; its piece reports go to `holdings`.
#[derive(Debug, Clone)]
pub(crate) struct Role {
    pub(crate) index: u32,
    pub(crate) of: Option<u32>,
    pub(crate) holdings: Arc<Holdings>,
}

impl Role {
    /// Where receiver `index` starts, as a fraction of the content: evenly spread over `of`
    /// receivers, or by the golden ratio for any number (each newcomer lands in the largest gap).
    fn start_fraction(index: u32, of: Option<u32>) -> f64 {
        match of {
            Some(n) if n > 0 => f64::from(index % n) / f64::from(n),
            _ => (f64::from(index) * 0.618_033_988_749_895).fract(),
        }
    }
}

/// How a receiver of a swarm got the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// Over BitTorrent: it holds every piece and serves the others.
    Swarm,
    /// As a push from the sender (a browser page): it serves nobody.
    Pushed,
}

/// Offer `seeding` to one receiver of a swarm on `link`: register the swarm through its connection,
/// start seeding (once), serve its paths, and wait for its verdict. `on_accept` runs when
/// it accepts, `on_progress` with the plaintext bytes its reports say it holds (or, for a
/// receiver that takes a push, the bytes pushed to it).
///
/// The paths the offer names lead to a push listener of this receiver's own, which hands
/// BitTorrent connections on to librqbit: a receiver that cannot speak BitTorrent (the
/// relay's page) takes the content as a push over the same paths, read and sealed again
/// from the files. Direct hints still name librqbit's own port, as for every swarm.
pub(crate) async fn serve_receiver(
    link: &mut PeerLink,
    seeding: &Seeding,
    opts: &SendOptions,
    role: Role,
    (on_accept, on_progress): (impl FnOnce(), impl Fn(u64)),
) -> Result<Served> {
    let Seeding {
        prepared,
        manifest,
        files,
        cipher,
        torrent,
        engine,
        handle,
        started,
    } = seeding;
    if opts.transport.allows_direct() {
        // Register first, so the tracker already knows the swarm when librqbit announces.
        link.register_swarm(&prepared.info_hash_hex()).await?;
    }
    started.get_or_try_init(|| bt::start(engine, handle)).await?;
    let port = engine
        .session()
        .announce_port()
        .ok_or_else(|| Error::Transfer("BitTorrent is not listening".into()))?;
    let tap = Arc::new(Tap::default());
    tap.close();
    let source = Arc::new(PushSource {
        files: files.clone(),
        key: prepared.key.clone(),
        tap,
        map: watch::channel(Some(Some(prepared.map.clone()))).1,
        pushed: AtomicU64::new(0),
        upload_limit: opts.upload_limit,
    });
    let routes = link.routes();
    let on_route: RouteHandler = Arc::new(move |conn| routes.attach(conn));
    let server = PushServer::bind(
        link.keys().push_hello,
        (link.keys().route_hello, on_route),
        source.clone(),
    )
    .await?;
    server.forward_bittorrent(port);
    let mut offered = Offered::new(opts.transport, &opts.relay, link, server.port()).await;
    offered.resume_tunnels();
    if opts.transport.allows_direct() {
        offered.hints = bt::direct_hints(port);
    }
    let body = OfferBody::Files {
        manifest: manifest.clone(),
        content_key: prepared.key.clone(),
        torrent: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, torrent),
        direct_hints: offered.hints.clone(),
        packing: prepared.map.to_wire().map(|frames| Packing {
            codec: codec::codec_id(),
            frames,
        }),
    };
    let Role { index, of, holdings } = role;
    let piece = prepared.info.piece_length.max(1);
    let pieces = cipher.cipher_len().div_ceil(piece);
    // Float precision is irrelevant here: it is a hint, rounded to a piece.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let first = (Role::start_fraction(index, of) * pieces as f64) as u64;
    let start = Some(first.min(pieces.saturating_sub(1)) * piece);
    let pushed = || source.pushed.load(Ordering::Relaxed);
    let result = async {
        offer(
            link,
            body,
            &offered,
            (
                &[
                    ABILITY_BITTORRENT,
                    ABILITY_SWARM,
                    ABILITY_PUSH,
                    ABILITY_PUSH_ACKS,
                    ABILITY_PEER_ROUTE,
                ],
                start,
            ),
        )
        .await?;
        on_accept();
        let done = await_done_with(link, |report| {
            if let Some(held) = holdings.add(index, report) {
                on_progress(held_plain(held, pieces, prepared.size));
            }
        });
        tokio::pin!(done);
        let mut tick = tokio::time::interval(PUSH_PROGRESS_EVERY);
        loop {
            tokio::select! {
                r = &mut done => break r,
                _ = tick.tick() => if pushed() > 0 {
                    on_progress(pushed().min(prepared.size));
                },
            }
        }
    }
    .await;
    offered.shutdown().await;
    server.shutdown().await;
    result?;
    if pushed() > 0 {
        return Ok(Served::Pushed);
    }
    holdings.add_all();
    Ok(Served::Swarm)
}

/// How often the progress of a push to a swarm's receiver is reported.
const PUSH_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The plaintext share of `size` that `held` of `pieces` pieces stand for.
fn held_plain(held: u64, pieces: u64, size: u64) -> u64 {
    if pieces == 0 {
        return size;
    }
    u64::try_from(u128::from(size) * u128::from(held.min(pieces)) / u128::from(pieces)).unwrap_or(size)
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::STANDARD as B64};

    use super::Holdings;

    /// Two receivers holding one half each hold everything together; a report of the
    /// wrong length or not base64 counts for nothing.
    #[test]
    fn holdings_are_the_union_of_well_formed_reports() {
        let h = Holdings::with_pieces(12);
        assert_eq!(h.add(0, &B64.encode([0xff, 0xff, 0xff])), None);
        assert_eq!(h.add(0, "not base64!"), None);
        assert!(!h.complete(), "malformed reports are ignored");
        assert_eq!(h.add(0, &B64.encode([0b1111_1100, 0x00])), Some(6));
        assert!(!h.complete());
        assert_eq!(h.add(1, &B64.encode([0b0000_0011, 0b1111_0000])), Some(6));
        assert!(h.complete(), "pieces 0-5 and 6-11 from two receivers");
        assert_eq!(h.reported(), 6 + 6, "each receiver's latest report counts");
        h.add(0, &B64.encode([0b1111_1110, 0x00]));
        assert_eq!(h.reported(), 7 + 6);
        let fresh = Holdings::with_pieces(3);
        fresh.add_all();
        assert!(fresh.complete());
    }

    #[test]
    fn held_pieces_are_shown_as_their_share_of_the_plaintext() {
        assert_eq!(super::held_plain(0, 4, 1000), 0);
        assert_eq!(super::held_plain(1, 4, 1000), 250);
        assert_eq!(super::held_plain(9, 4, 1000), 1000, "never more than the whole");
        assert_eq!(super::held_plain(0, 0, 0), 0);
        assert_eq!(super::held_plain(u64::MAX, u64::MAX, u64::MAX), u64::MAX);
    }
}
