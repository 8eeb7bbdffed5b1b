//! Receiving a pushed files offer: the files arrive while the sender still reads them.
//! The offer is checked and asked as any files offer; then frames come over one push
//! connection through the path selector ([`push_recv`]), written into a staging folder named
//! after the content key (so a rerun of the same transfer finds what is there and asks only
//! for the rest). The sender's digests, torrent and chunk map arrive when its pass is over.
//! If the push cannot bring everything (every path failed mid-way), the torrent fetches the
//! rest over BitTorrent, checking what the push wrote. Nothing is installed before every
//! file's SHA-256 matched.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use convey_shared::{
    content::ContentKey,
    display,
    manifest::{CheckedManifest, Manifest},
    protocol::{
        peer::{self, PeerMsg},
        route,
    },
};
use sha2::{Digest, Sha256};
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{
    Error, Event, EventSink,
    error::Result,
    receive::{
        OfferSummary, Plan, ReceiveOptions, ReceiveReport, Received, ask, check_files, conclude, download,
        reject, top_names, verify_and_install,
    },
    relay_link::RouteAttacher,
    session::PeerLink,
    transfer::{
        push_recv::{PushSink, Stop},
        staging::Staging,
    },
    transport::select::{PathSelector, Paths},
};

/// Push connections tried in a row without a frame arriving before BitTorrent takes over.
/// The pauses between them (1, 2, 4, 8 s) let a relay that restarts (the tunnel path) come
/// back first.
const PUSH_TRIES: u32 = 5;
/// Push connections tried before giving up when no path has carried one at all.
const NEVER_CONNECTED_TRIES: u32 = 2;
/// How often progress is reported.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// The file beside the staging files that records which frames are on disk.
const PUSH_RECORD: &str = "pushed";

/// Where a pushed transfer is staged: named after its content key (the torrent is not
/// known yet), one-way, so the folder name says nothing about the key.
fn staging_id(key: &ContentKey) -> [u8; 20] {
    let digest = Sha256::new()
        .chain_update(b"convey pushed staging\n")
        .chain_update(key.as_bytes())
        .finalize();
    let mut id = [0u8; 20];
    id.copy_from_slice(&digest[..20]);
    id
}

pub(crate) async fn receive_pushed(
    mut link: PeerLink,
    (manifest, key): (Manifest, ContentKey),
    mut paths: Paths,
    (rtc_offer, route): (Option<&str>, bool),
    opts: &ReceiveOptions,
    events: &EventSink,
) -> Result<ReceiveReport> {
    let content = match manifest.check() {
        Ok(c) => c,
        Err(e) => return reject(link, Error::Refused(e.to_string())).await,
    };
    let staging = Staging::new(&opts.out_dir, &staging_id(&key), &content);
    let total = content.layout.total();
    if let Err(e) = staging
        .check_destinations(opts.overwrite)
        .and_then(|()| staging.check_space(total))
    {
        return reject(link, e).await;
    }
    let (names, more) = top_names(&content);
    let summary = OfferSummary {
        kind: "files",
        files: content.manifest.files.len(),
        bytes: Some(total),
        names,
        more,
    };
    let started = Instant::now();
    // The path selector outlives the transfer: the peer route through it carries the
    // verdict when the relay is gone.
    let mut selector = None;
    let result = async {
        ask(&mut link, summary, opts, events, &mut paths, rtc_offer).await?;
        fetch(
            &mut link,
            (&content, &key),
            &staging,
            (&paths, &mut selector, route),
            opts,
            events,
        )
        .await
    }
    .await;
    let concluded = conclude(link, result, false).await;
    if let Some(selector) = selector {
        selector.shutdown().await;
    }
    paths.close().await;
    let fetched = concluded?;
    events(Event::Done {
        bytes: total,
        seconds: started.elapsed().as_secs_f64(),
        fetched: Some(fetched),
    });
    Ok(ReceiveReport {
        received: Received::Files {
            paths: staging.tops().to_vec(),
            count: content.manifest.files.len(),
        },
        bytes: total,
        elapsed: started.elapsed(),
    })
}

/// Take the push, then (if it did not bring everything) BitTorrent; verify and install.
/// Returns the bytes fetched over the network.
async fn fetch(
    link: &mut PeerLink,
    (content, key): (&CheckedManifest, &ContentKey),
    staging: &Staging,
    (paths, selector, route): (&Paths, &mut Option<PathSelector>, bool),
    opts: &ReceiveOptions,
    events: &EventSink,
) -> Result<u64> {
    if !paths.any() {
        return Err(Error::Transfer(
            "the sender offers no path this receiver may use; check --transport on both sides".into(),
        ));
    }
    let total = content.layout.total();
    let files = Arc::new(staging.create(content)?);
    let sink = PushSink::start(files.clone(), key, staging.root.join(PUSH_RECORD))?;
    if sink.bytes() > 0 {
        events(Event::Resumed { bytes: sink.bytes() });
    }
    let selector = &*selector.insert(PathSelector::spawn(paths.clone(), events.clone()).await?);
    let routes = link.routes();
    // Over the tunnel alone a route would fail with the relay it is meant to survive; a
    // sender that serves none (the page) is not asked for one.
    let peer_to_peer = route
        && ((paths.transport.allows_direct() && !paths.hints.is_empty())
            || (paths.transport.allows_webrtc() && paths.rtc.is_some()));
    if peer_to_peer {
        open_route(selector, link.keys().route_hello, &routes).await;
    }
    let mut prepared = None;
    let hello = link.keys().push_hello;
    let pushed = async {
        let mut tries = 0;
        while !sink.complete() && sink.stopped().is_none() && tries < PUSH_TRIES {
            // No path has ever carried a connection: more tries (and BitTorrent, on the same
            // paths) would fail as these did.
            if tries >= NEVER_CONNECTED_TRIES && !selector.opened_any() {
                break;
            }
            // The relay ended the tunnel for good: BitTorrent's fallback says why.
            if paths.relay_said.borrow().is_some() || sink.limit_reached() {
                break;
            }
            tries += 1;
            let before = sink.bytes();
            // Four a second, as on every other path (not one event a frame).
            let mut shown = Instant::now();
            let progress = move |bytes| {
                if shown.elapsed() >= PROGRESS_EVERY || bytes == total {
                    shown = Instant::now();
                    events(Event::Progress {
                        bytes,
                        total: Some(total),
                    });
                }
            };
            let pause = Duration::from_secs(1 << tries.saturating_sub(2)) * u32::from(tries > 1);
            let (route_hello, reopen) = (link.keys().route_hello, peer_to_peer && tries > 1);
            let push = async {
                tokio::time::sleep(pause).await;
                if reopen && !routes.is_up() {
                    open_route(selector, route_hello, &routes).await;
                }
                sink.fetch(selector.addr(), &hello, progress).await
            };
            tokio::pin!(push);
            let stop = loop {
                tokio::select! {
                    stop = &mut push => break stop,
                    msg = link.recv() => match msg? {
                        PeerMsg::Prepared(p) if prepared.is_none() => prepared = Some(*p),
                        other => {
                            return Err(Error::Protocol(format!(
                                "unexpected {} from the sender during the transfer",
                                other.kind()
                            )));
                        }
                    },
                }
            };
            if sink.bytes() > before {
                tries = 0;
            }
            if let Stop::Broken(why) = stop {
                tracing::debug!(%why, "push connection ended");
            }
        }
        Ok::<_, Error>(())
    }
    .await;
    let never_connected = !sink.complete() && !selector.opened_any();
    let fetched = sink.fetched();
    let on_disk = sink.bytes();
    let outcome = sink.finish().await;
    files.close_all();
    pushed?;
    match outcome.stop {
        Some(Stop::DiskFull) => {
            return Err(Error::DiskFull {
                dir: display::safe(&opts.out_dir.display().to_string(), false),
                needed_mib: total.saturating_sub(on_disk).div_ceil(1 << 20),
            });
        }
        Some(Stop::Write(e)) => return Err(Error::Transfer(e)),
        Some(Stop::Corrupt(why)) => {
            return Err(Error::Protocol(format!(
                "the sender's compressed data does not decode ({why}); nothing was installed"
            )));
        }
        Some(Stop::Broken(_)) | None => {}
    }
    if never_connected {
        return Err(no_path(paths, selector.why_not()));
    }
    let prepared = match prepared {
        Some(p) => p,
        None => await_prepared(link, opts).await?,
    };
    let checked = with_digests(content, &prepared.sha256)?;
    if outcome.complete {
        tracing::debug!("every frame arrived over the push");
        verify_and_install(link, (staging, &checked), outcome.sha256, opts.overwrite).await?;
        return Ok(fetched);
    }
    // The push could not bring everything: BitTorrent fetches the rest, checking what is here.
    tracing::debug!(
        on_disk,
        total,
        "the push stopped early; continuing over BitTorrent"
    );
    link.send(&PeerMsg::Fetch).await?;
    let seeded = loop {
        let p = await_prepared(link, opts).await?;
        if p.torrent.is_some() {
            break p;
        }
    };
    if seeded.sha256 != prepared.sha256 {
        return Err(Error::Transfer(
            "the sender's files changed during the transfer; nothing was installed: run both commands again"
                .into(),
        ));
    }
    let plan = plan_for(checked, key, seeded, staging, paths, opts)?;
    let (over_bt, _) = download(link, &plan, opts, events).await?;
    Ok(fetched + over_bt)
}

/// The error for a transfer no allowed path could carry: which paths failed, and how.
fn no_path(paths: &Paths, why: Option<String>) -> Error {
    Error::NoPath {
        transport: paths.transport,
        why: why.unwrap_or_else(|| "no connection could be opened".into()),
    }
}

/// Open the session's peer route through the path selector: the sender's digests and this
/// side's verdict then need no relay. Best effort: the relay still carries them.
async fn open_route(selector: &PathSelector, hello: [u8; route::HELLO_LEN], routes: &RouteAttacher) {
    let opened = async {
        let mut conn = TcpStream::connect(selector.addr()).await?;
        conn.write_all(&hello).await?;
        Ok::<_, std::io::Error>(conn)
    };
    match opened.await {
        Ok(conn) => routes.attach(conn),
        Err(e) => tracing::debug!(%e, "no peer route"),
    }
}

/// The offer's manifest with the digests the sender's pass found, checked again.
fn with_digests(content: &CheckedManifest, digests: &[String]) -> Result<CheckedManifest> {
    let mut manifest = content.manifest.clone();
    if digests.len() != manifest.files.len() {
        return Err(Error::Protocol(format!(
            "the sender's pass gave {} digests for {} files",
            digests.len(),
            manifest.files.len()
        )));
    }
    for (entry, digest) in manifest.files.iter_mut().zip(digests) {
        entry.sha256.clone_from(digest);
    }
    let checked = manifest.check().map_err(|e| Error::Protocol(e.to_string()))?;
    if checked.layout.total() != content.layout.total() {
        return Err(Error::Protocol(
            "the sender's pass changed the offer's sizes".into(),
        ));
    }
    Ok(checked)
}

/// Wait (at most the silence limit) for what the sender's pass found.
async fn await_prepared(link: &mut PeerLink, opts: &ReceiveOptions) -> Result<peer::Prepared> {
    let silent = || {
        Error::Timeout(format!(
            "the sender sent nothing for {}s before finishing its pass over the files; it may have stopped: run both commands again to resume",
            opts.silence.as_secs()
        ))
    };
    loop {
        match tokio::time::timeout(opts.silence, link.recv()).await {
            Ok(Ok(PeerMsg::Prepared(p))) => return Ok(*p),
            Ok(Ok(PeerMsg::Preparing)) => {}
            Ok(Ok(other)) => {
                return Err(Error::Protocol(format!(
                    "expected the sender's digests, got {}",
                    other.kind()
                )));
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(silent()),
        }
    }
}

/// Check the torrent and chunk map the sender seeds, as a files offer is checked, for this
/// staging folder.
fn plan_for(
    content: CheckedManifest,
    key: &ContentKey,
    seeded: peer::Prepared,
    staging: &Staging,
    paths: &Paths,
    opts: &ReceiveOptions,
) -> Result<Plan> {
    let torrent = seeded.torrent.unwrap_or_default();
    let plan = check_files(
        content.manifest,
        (key, seeded.packing.as_ref()),
        &torrent,
        paths.clone(),
        opts,
    )?;
    Ok(Plan {
        staging: staging.clone(),
        ..plan
    })
}
