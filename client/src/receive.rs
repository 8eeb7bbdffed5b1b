//! The receiving side: claim the code's nameplate, run the PAKE, check the offer (never
//! trusting a name, size or torrent from the network), download into a hidden partial
//! file, verify the SHA-256, and only then move the file into place.

use std::{
    fs::{File, OpenOptions},
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use convey_shared::{
    Code,
    content::{CIPHER_CHUNK, ContentCipher},
    crypto::Side,
    manifest::{FileEntry, sanitize_relative_path},
    protocol::{
        peer::{Offer, PeerMsg},
        rendezvous::Mood,
    },
};
use sha2::{Digest, Sha256};

use crate::{
    Error, Event, EventSink, RelayAddr,
    error::Result,
    rendezvous::Rendezvous,
    session::{self, PeerLink},
    transfer::{bt, prepare::parse_torrent, storage::OpeningStorageFactory},
};

/// Longest a key exchange with a present peer may take.
const PAKE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest piece length accepted from a sender.
const MAX_PIECE_LENGTH: u64 = 64 * 1024 * 1024;

/// What the user is asked to accept.
#[derive(Debug, Clone)]
pub struct OfferSummary {
    pub files: usize,
    pub bytes: u64,
    /// Display-safe names (control characters escaped).
    pub names: Vec<String>,
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

#[derive(Debug, Clone)]
pub struct ReceiveReport {
    pub path: PathBuf,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// A checked offer, ready to download.
struct Plan {
    entry: FileEntry,
    dest: PathBuf,
    partial: PathBuf,
    torrent: Vec<u8>,
    cipher: ContentCipher,
    hints: Vec<std::net::SocketAddr>,
}

pub async fn receive(opts: ReceiveOptions, events: EventSink) -> Result<ReceiveReport> {
    let mut rv = Rendezvous::connect(&opts.relay).await?;
    let nameplate = opts.code.nameplate();
    if !rv.claim(nameplate).await? {
        events(Event::Waiting);
        tokio::time::timeout(opts.wait, rv.wait_for_peer()).await.map_err(|_| {
            Error::Timeout(format!(
                "no sender appeared for code {nameplate}-… within {}s; check the code and that `convey send` is still running",
                opts.wait.as_secs()
            ))
        })??;
    }
    let mut link = tokio::time::timeout(PAKE_TIMEOUT, session::establish(rv, &opts.code, Side::Receiver))
        .await
        .map_err(|_| Error::Timeout("the key exchange with the sender did not finish in time".into()))??;
    events(Event::Connected);

    let offer = match link.recv().await? {
        PeerMsg::Offer(o) => *o,
        other => return reject(link, Error::Protocol(format!("expected an offer, got {other:?}"))).await,
    };
    let plan = match check_offer(offer, &opts) {
        Ok(p) => p,
        Err(e) => return reject(link, e).await,
    };
    let summary = OfferSummary {
        files: 1,
        bytes: plan.entry.size,
        names: vec![plan.entry.path.escape_debug().to_string()],
    };
    events(Event::Offer {
        files: summary.files,
        bytes: summary.bytes,
        names: summary.names.clone(),
    });
    let accept = opts.accept.clone();
    let accepted = tokio::task::spawn_blocking(move || accept(&summary))
        .await
        .unwrap_or(false);
    if !accepted {
        link.send(&PeerMsg::Answer {
            accept: false,
            reason: Some("declined by the receiver".into()),
        })
        .await?;
        link.close(Mood::Happy).await;
        return Err(Error::Declined(None));
    }

    let started = Instant::now();
    let result = download(&mut link, &plan, &opts.relay, &events).await;
    match result {
        Ok(()) => {
            link.send(&PeerMsg::Done {
                ok: true,
                message: None,
            })
            .await?;
            link.close(Mood::Happy).await;
            events(Event::Done {
                bytes: plan.entry.size,
                seconds: started.elapsed().as_secs_f64(),
            });
            Ok(ReceiveReport {
                path: plan.dest,
                bytes: plan.entry.size,
                elapsed: started.elapsed(),
            })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&plan.partial);
            let _ = link
                .send(&PeerMsg::Done {
                    ok: false,
                    message: Some(e.to_string()),
                })
                .await;
            link.close(Mood::Errory).await;
            Err(e)
        }
    }
}

async fn reject<T>(mut link: PeerLink, e: Error) -> Result<T> {
    let _ = link
        .send(&PeerMsg::Answer {
            accept: false,
            reason: Some(e.to_string()),
        })
        .await;
    link.close(Mood::Errory).await;
    Err(e)
}

/// Validate everything the sender claimed before touching the disk.
fn check_offer(offer: Offer, opts: &ReceiveOptions) -> Result<Plan> {
    let [entry]: [FileEntry; 1] = offer.manifest.files.try_into().map_err(|files: Vec<FileEntry>| {
        Error::Protocol(format!(
            "the offer lists {} files; this version receives exactly one",
            files.len()
        ))
    })?;
    let parts = sanitize_relative_path(&entry.path).map_err(|e| Error::Refused(e.to_string()))?;
    if entry.sha256.len() != 64 || !entry.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Protocol("the offer's SHA-256 is malformed".into()));
    }
    let torrent = B64
        .decode(&offer.torrent)
        .map_err(|e| Error::Protocol(format!("the offer's torrent is not base64: {e}")))?;
    let (info, _) = parse_torrent(&torrent)?;
    let cipher = ContentCipher::new(&offer.content_key, entry.size);
    let pieces = cipher.cipher_len().div_ceil(info.piece_length.max(1));
    if info.length != cipher.cipher_len()
        || info.piece_length == 0
        || info.piece_length % CIPHER_CHUNK != 0
        || info.piece_length > MAX_PIECE_LENGTH
        || info.pieces.len() as u64 != pieces * 20
        || info.private != 1
    {
        return Err(Error::Protocol(
            "the offer's torrent does not match its manifest".into(),
        ));
    }
    let dest = parts.iter().fold(opts.out_dir.clone(), |p, c| p.join(c));
    if dest.symlink_metadata().is_ok() && !opts.overwrite {
        return Err(Error::Refused(format!(
            "{} already exists; use --overwrite to replace it or --out to choose another folder",
            dest.display()
        )));
    }
    let parent = dest.parent().unwrap_or(&opts.out_dir).to_path_buf();
    let partial = parent.join(format!(
        ".{}.convey-part",
        parts.last().map(String::as_str).unwrap_or("file")
    ));
    let mut hints = offer.direct_hints;
    hints.truncate(bt::MAX_HINTS);
    Ok(Plan {
        entry,
        dest,
        partial,
        torrent,
        cipher,
        hints,
    })
}

async fn download(link: &mut PeerLink, plan: &Plan, relay: &RelayAddr, events: &EventSink) -> Result<()> {
    let folder = plan.partial.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&folder).map_err(Error::io(format!("creating {}", folder.display())))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&plan.partial)
        .map_err(Error::io(format!("creating {}", plan.partial.display())))?;
    file.set_len(plan.entry.size)
        .map_err(Error::io(format!("making room for {}", plan.partial.display())))?;
    link.send(&PeerMsg::Answer {
        accept: true,
        reason: None,
    })
    .await?;
    events(Event::Transport {
        path: "direct".into(),
    });

    let download_started = Instant::now();
    let torrent_session = bt::start_session(&folder, None).await?;
    let storage = OpeningStorageFactory::new(file, plan.cipher.clone());
    let fetched = async {
        let handle = bt::add(
            &torrent_session,
            plan.torrent.clone(),
            storage.boxed_factory(),
            bt::AddOptions {
                tracker: relay.announce_url(),
                peers: plan.hints.clone(),
                paused: false,
            },
            &folder,
        )
        .await?;
        let progress = |done: u64, _| {
            events(Event::Progress {
                bytes: plan.cipher.plain_progress(done),
                total: plan.entry.size,
            });
        };
        tokio::select! {
            r = bt::wait_downloaded(&handle, progress) => r,
            msg = link.recv() => match msg {
                Err(e) => Err(e),
                Ok(other) => Err(Error::Protocol(format!("unexpected message during transfer: {other:?}"))),
            },
        }
    }
    .await;
    bt::shutdown(&torrent_session).await;
    fetched?;
    let verify_started = Instant::now();
    tracing::debug!(elapsed = ?verify_started.duration_since(download_started), "download complete");

    let (partial, expected) = (plan.partial.clone(), plan.entry.sha256.clone());
    let ok = tokio::task::spawn_blocking(move || verify_sha256(&partial, &expected))
        .await
        .map_err(|e| Error::Transfer(format!("verifying failed: {e}")))??;
    if !ok {
        return Err(Error::Transfer(
            "the received file does not match the sender's SHA-256; nothing was kept".into(),
        ));
    }
    tracing::debug!(elapsed = ?verify_started.elapsed(), "SHA-256 verified and synced");
    std::fs::rename(&plan.partial, &plan.dest).map_err(Error::io(format!(
        "moving the file into place at {}",
        plan.dest.display()
    )))?;
    Ok(())
}

fn verify_sha256(path: &Path, expected_hex: &str) -> Result<bool> {
    let mut f = File::open(path).map_err(Error::io(format!("reading {}", path.display())))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(Error::io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    f.sync_all()
        .map_err(Error::io(format!("syncing {}", path.display())))?;
    Ok(hex::encode(h.finalize()) == expected_hex.to_ascii_lowercase())
}
