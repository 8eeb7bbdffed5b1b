//! Sending files and folders to one receiver, starting at once: the pass that hashes,
//! packs and seals the content begins while the receiver types the code, and once the
//! receiver accepts, every frame the pass seals goes straight to it ([`push_send`]). The
//! offer names the files at once; their digests, the torrent and the chunk map follow when
//! the pass is over. Whatever the push cannot bring (its paths all failed) BitTorrent
//! fetches from the same content, seeded only then: the piece hashes and librqbit's check
//! pass are paid only by a transfer that needs them.

use std::{
    future::Future,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use convey_shared::{
    content::ContentKey,
    layout::Layout,
    manifest::Manifest,
    protocol::peer::{
        self, ABILITY_BITTORRENT, ABILITY_PEER_ROUTE, ABILITY_PUSH, ABILITY_PUSH_ACKS, OfferBody, Packing,
        PeerMsg,
    },
};
use tokio::sync::{oneshot, watch};

use crate::{
    Error, Event, EventSink,
    error::Result,
    seed,
    send::{SendOptions, finish, offer},
    session::PeerLink,
    transfer::{
        bt, codec,
        content_key::content_key,
        files::FileSet,
        prepare::{Prepared, prepare, prepare_pushed},
        push_send::{PushServer, PushSource, RouteHandler, Tap},
        select::select,
    },
    transport::serve::Offered,
};

/// What the walk found: enough to make the offer before the pass is over.
struct Walked {
    manifest: Manifest,
    files: Arc<FileSet>,
    key: ContentKey,
}

/// The pass over the content, on a blocking thread: walk the paths (say what was found
/// on `walked`), then hash, pack and seal, handing frames to `tap`.
fn start_pass(
    paths: Vec<PathBuf>,
    (compress, cancel, tap): (bool, Arc<AtomicBool>, Arc<Tap>),
    walked: oneshot::Sender<Walked>,
    events: EventSink,
) -> tokio::task::JoinHandle<Result<Prepared>> {
    tokio::task::spawn_blocking(move || {
        let walk = || {
            let sel = select(&paths)?;
            let layout = Layout::new(sel.manifest.files.iter().map(|f| f.size))
                .ok_or_else(|| Error::Refused("the files add up to more bytes than can be counted".into()))?;
            let files = Arc::new(FileSet::new(sel.sources, layout, false));
            Ok::<_, Error>((sel.manifest, files, content_key(&sel.fingerprint)))
        };
        let (manifest, files, key) = match walk() {
            Ok(w) => w,
            Err(e) => {
                tap.close();
                return Err(e);
            }
        };
        events(Event::Preparing {
            bytes: files.layout().total(),
        });
        let _ = walked.send(Walked {
            manifest,
            files: files.clone(),
            key: key.clone(),
        });
        prepare_pushed(&files, key, compress, &cancel, tap)
    })
}

fn joined(r: std::result::Result<Result<Prepared>, tokio::task::JoinError>) -> Result<Prepared> {
    r.map_err(|e| Error::Transfer(format!("preparing the files failed: {e}")))?
}

/// Why a pass that never said what it found ended.
async fn pass_error(pass: tokio::task::JoinHandle<Result<Prepared>>) -> Error {
    joined(pass.await)
        .err()
        .unwrap_or_else(|| Error::Transfer("walking the files failed".into()))
}

/// Send `paths` to the one receiver `linked` resolves to. Returns the bytes sent.
pub(crate) async fn send_files(
    paths: &[PathBuf],
    linked: impl Future<Output = Result<PeerLink>>,
    opts: &SendOptions,
    events: &EventSink,
) -> Result<u64> {
    let cancel = Arc::new(AtomicBool::new(false));
    let tap = Arc::new(Tap::default());
    let (walked_tx, mut walked_rx) = oneshot::channel();
    let mut pass = start_pass(
        paths.to_vec(),
        (opts.compress, cancel.clone(), tap.clone()),
        walked_tx,
        events.clone(),
    );
    let stop_pass = |pass: tokio::task::JoinHandle<_>| {
        cancel.store(true, Ordering::Relaxed);
        tap.close();
        async move {
            let _ = pass.await;
        }
    };
    tokio::pin!(linked);
    let (mut walked, mut walk_pending, mut finished) = (None, true, None);
    let linked = loop {
        tokio::select! {
            r = &mut linked => break r,
            w = &mut walked_rx, if walk_pending => {
                walk_pending = false;
                walked = w.ok();
            }
            r = &mut pass, if finished.is_none() => match joined(r) {
                Ok(p) => finished = Some(p),
                // The content cannot be sent: say so now, not after the receiver typed the code.
                Err(e) => return Err(e),
            },
        }
    };
    let mut link = match linked {
        Ok(link) => link,
        Err(e) => {
            if finished.is_none() {
                stop_pass(pass).await;
            }
            return Err(e);
        }
    };
    let walked = match (walked, walk_pending) {
        (Some(w), _) => w,
        (None, true) => match link.heartbeat_while(walked_rx).await {
            Ok(Ok(w)) => w,
            Ok(Err(_)) => return finish(link, Err(pass_error(pass).await)).await,
            Err(e) => {
                stop_pass(pass).await;
                return finish(link, Err(e)).await;
            }
        },
        (None, false) => return finish(link, Err(pass_error(pass).await)).await,
    };
    let (map_tx, map_rx) = watch::channel(finished.as_ref().map(|p| Some(p.map.clone())));
    let source = Arc::new(PushSource {
        files: walked.files.clone(),
        key: walked.key.clone(),
        tap: tap.clone(),
        map: map_rx,
        pushed: AtomicU64::new(0),
        upload_limit: opts.upload_limit,
    });
    let routes = link.routes();
    let on_route: RouteHandler = Arc::new(move |conn| routes.attach(conn));
    let server = match PushServer::bind(
        link.keys().push_hello,
        (link.keys().route_hello, on_route),
        source.clone(),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            stop_pass(pass).await;
            return finish(link, Err(e)).await;
        }
    };
    let offered = Offered::new(opts.transport, &opts.relay, &link, server.port()).await;
    let mut pushing = Pushing {
        walked: &walked,
        source: &source,
        server: &server,
        offered: &offered,
        map_tx,
        prepared: finished,
        seeding: None,
    };
    let result = pushing.run(&mut link, &mut pass, opts, events).await;
    let seeding = pushing.seeding.take();
    if !pass.is_finished() {
        stop_pass(pass).await;
    }
    offered.shutdown().await;
    server.shutdown().await;
    if let Some((engine, _)) = seeding {
        bt::shutdown(&engine).await;
    }
    let size = walked.files.layout().total();
    finish(link, result.map(|()| size)).await
}

/// One receiver's push, and BitTorrent if it asks for it.
struct Pushing<'a> {
    walked: &'a Walked,
    source: &'a PushSource,
    server: &'a PushServer,
    offered: &'a Offered,
    map_tx: watch::Sender<Option<Option<convey_shared::chunk_map::ChunkMap>>>,
    /// The pass's result, once it is over.
    prepared: Option<Prepared>,
    /// librqbit seeding the content, once the receiver asked for it.
    seeding: Option<(bt::Engine, Arc<librqbit::ManagedTorrent>)>,
}

impl Pushing<'_> {
    async fn run(
        &mut self,
        link: &mut PeerLink,
        pass: &mut tokio::task::JoinHandle<Result<Prepared>>,
        opts: &SendOptions,
        events: &EventSink,
    ) -> Result<()> {
        let mut manifest = self.walked.manifest.clone();
        for f in &mut manifest.files {
            f.sha256 = "0".repeat(64);
        }
        let body = OfferBody::Pushed {
            manifest,
            content_key: self.walked.key.clone(),
            direct_hints: self.offered.hints.clone(),
        };
        offer(
            link,
            body,
            self.offered,
            (
                &[
                    ABILITY_PUSH,
                    ABILITY_PUSH_ACKS,
                    ABILITY_PEER_ROUTE,
                    ABILITY_BITTORRENT,
                ],
                None,
            ),
        )
        .await?;
        if let Some(p) = &self.prepared {
            link.send(&prepared_msg(p)).await?;
        }
        let total = self.walked.files.layout().total();
        let mut fetch_wanted = false;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let mut shown_path = None;
        loop {
            tokio::select! {
                r = &mut *pass, if self.prepared.is_none() => {
                    let p = match joined(r) {
                        Ok(p) => p,
                        Err(e) => {
                            let _ = self.map_tx.send(Some(None));
                            return Err(e);
                        }
                    };
                    let _ = self.map_tx.send(Some(Some(p.map.clone())));
                    link.send(&prepared_msg(&p)).await?;
                    self.prepared = Some(p);
                    if fetch_wanted {
                        self.seed(link, opts).await?;
                    }
                }
                msg = link.recv() => match msg? {
                    PeerMsg::Done { ok: true, .. } => break,
                    PeerMsg::Done { ok: false, message } => {
                        return Err(Error::Transfer(format!(
                            "the receiver reported: {}",
                            message.unwrap_or_else(|| "unknown error".into())
                        )));
                    }
                    PeerMsg::Fetch if self.prepared.is_some() => self.seed(link, opts).await?,
                    PeerMsg::Fetch => fetch_wanted = true,
                    other => {
                        return Err(Error::Protocol(format!(
                            "unexpected {} from the receiver during the transfer",
                            other.kind()
                        )));
                    }
                },
                _ = tick.tick() => {
                    let sent = self.sent();
                    let now = self.offered.path_in_use(sent > 0);
                    if now.is_some() && now != shown_path {
                        shown_path = now;
                        events(Event::Transport { path: now.unwrap_or_default().into() });
                    }
                    events(Event::Progress { bytes: sent.min(total), total: Some(total) });
                }
            }
        }
        events(Event::Progress {
            bytes: total,
            total: Some(total),
        });
        Ok(())
    }

    /// Plaintext bytes sent so far, pushed or over BitTorrent.
    fn sent(&self) -> u64 {
        let pushed = self.source.pushed.load(Ordering::Relaxed);
        let seeded = match (&self.seeding, &self.prepared) {
            (Some((_, handle)), Some(p)) => p.map.plain_progress(handle.stats().uploaded_bytes),
            _ => 0,
        };
        pushed + seeded
    }

    /// Seed the content over BitTorrent (once), then send the torrent: the receiver's push
    /// did not bring it all. The pass for the push hashed no pieces, so a second pass does.
    async fn seed(&mut self, link: &mut PeerLink, opts: &SendOptions) -> Result<()> {
        if self.seeding.is_some() {
            return Ok(());
        }
        let Some(first) = &self.prepared else {
            return Ok(());
        };
        if !first.pieces {
            let (files, key, compress) = (self.walked.files.clone(), self.walked.key.clone(), opts.compress);
            let never = AtomicBool::new(false);
            let full = link
                .heartbeat_while(tokio::task::spawn_blocking(move || {
                    prepare(&files, key, compress, &never)
                }))
                .await?;
            let full = joined(full)?;
            if full.sha256 != first.sha256 || full.map != first.map {
                return Err(Error::Transfer(
                    "a file changed while it was being sent; send it again once it is no longer being written"
                        .into(),
                ));
            }
            self.prepared = Some(full);
        }
        let Some(prepared) = &self.prepared else {
            return Ok(());
        };
        if opts.transport.allows_direct() {
            // Register first, so the tracker already knows the swarm when librqbit announces.
            link.register_swarm(&prepared.info_hash_hex()).await?;
        }
        let seeding = seed::seeder(
            self.walked.files.clone(),
            prepared.cipher(),
            prepared.torrent_bytes(None),
            opts,
            false,
        );
        let (engine, handle) = link.keep_alive_while(seeding).await?;
        match engine.session().announce_port() {
            Some(port) => {
                self.server.forward_bittorrent(port);
                self.seeding = Some((engine, handle));
                link.send(&prepared_msg(prepared)).await
            }
            None => {
                bt::shutdown(&engine).await;
                Err(Error::Transfer("BitTorrent is not listening".into()))
            }
        }
    }
}

/// What the offer could not say before the pass was over.
fn prepared_msg(p: &Prepared) -> PeerMsg {
    PeerMsg::Prepared(Box::new(peer::Prepared {
        sha256: p.sha256.clone(),
        torrent: p.pieces.then(|| {
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, p.torrent_bytes(None))
        }),
        packing: p.map.to_wire().map(|frames| Packing {
            codec: codec::codec_id(),
            frames,
        }),
    }))
}
