//! The sending side: claim a code, run the PAKE, encrypt-and-hash in the background,
//! seed the ciphertext, offer it, and wait until the receiver says it verified the file.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use convey_shared::{
    Code,
    content::{ContentCipher, ContentKey},
    crypto::Side,
    manifest::{FileEntry, Manifest},
    protocol::{
        peer::{ABILITY_BITTORRENT, Offer, PeerMsg},
        rendezvous::Mood,
    },
};

use crate::{
    Error, Event, EventSink, RelayAddr,
    error::Result,
    rendezvous::Rendezvous,
    session::{self, PeerLink},
    transfer::{
        bt,
        prepare::{Prepared, prepare},
        storage::SealingStorageFactory,
    },
};

/// What to send, and where to meet the receiver.
#[derive(Debug, Clone)]
pub struct SendOptions {
    pub relay: RelayAddr,
    /// A pre-agreed code; `None` lets the relay pick the number and us the words.
    pub code: Option<Code>,
    pub path: PathBuf,
    /// Upload cap in bytes per second.
    pub upload_limit: Option<std::num::NonZeroU32>,
}

/// How a completed send went.
#[derive(Debug, Clone)]
pub struct SendReport {
    pub code: Code,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Send one file. Returns once the receiver confirmed it has the file, verified.
pub async fn send(opts: SendOptions, events: EventSink) -> Result<SendReport> {
    let path = opts.path.clone();
    let meta = std::fs::metadata(&path).map_err(Error::io(format!("cannot send {}", path.display())))?;
    if !meta.is_file() {
        return Err(Error::Refused(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Refused(format!("{} has no UTF-8 file name", path.display())))?
        .to_owned();

    let mut rv = Rendezvous::connect(&opts.relay).await?;
    let (code, peer_present) = match opts.code.clone() {
        Some(code) => {
            let present = rv.claim(code.nameplate()).await?;
            (code, present)
        }
        None => {
            let nameplate = rv.allocate().await?;
            (Code::generate(&mut rand::thread_rng(), nameplate), false)
        }
    };
    events(Event::Code {
        code: code.to_string(),
    });

    // Encrypt, hash and start seeding (paused) while the receiver types the code.
    events(Event::Preparing { bytes: meta.len() });
    let cancel = Arc::new(AtomicBool::new(false));
    let folder = path.parent().map(Path::to_path_buf).unwrap_or_else(|| ".".into());
    let ready = get_ready(&path, &folder, &opts, cancel.clone());
    tokio::pin!(ready);
    let linked = async {
        if !peer_present {
            events(Event::Waiting);
            rv.wait_for_peer().await?;
        }
        session::establish(rv, &code, Side::Sender).await
    };
    let code_for_report = code.clone();
    tokio::pin!(linked);

    let mut seeding = None;
    let linked = loop {
        tokio::select! {
            r = &mut linked => break r,
            r = &mut ready, if seeding.is_none() => match r {
                Ok(s) => seeding = Some(s),
                // The file cannot be sent: say so now, not after the receiver typed the code.
                Err(e) => return Err(e),
            },
        }
    };
    let mut link = match linked {
        Ok(link) => link,
        Err(e) => {
            cancel.store(true, Ordering::Relaxed);
            if seeding.is_none() {
                seeding = ready.await.ok();
            }
            if let Some(s) = seeding {
                bt::shutdown(&s.session).await;
            }
            return Err(e);
        }
    };
    events(Event::Connected);
    let seeding = match seeding {
        Some(s) => s,
        None => match ready.await {
            Ok(s) => s,
            Err(e) => return fail(link, e).await,
        },
    };

    let started = Instant::now();
    let result = offer_and_wait(&mut link, &seeding, name, &events).await;
    bt::shutdown(&seeding.session).await;
    match result {
        Ok(()) => {
            link.close(Mood::Happy).await;
            Ok(SendReport {
                code: code_for_report,
                bytes: seeding.prepared.size,
                elapsed: started.elapsed(),
            })
        }
        Err(e) => fail(link, e).await,
    }
}

async fn fail<T>(link: PeerLink, e: Error) -> Result<T> {
    link.close(Mood::Errory).await;
    Err(e)
}

/// A prepared file, checked by librqbit and ready to seed (still paused).
struct Seeding {
    prepared: Prepared,
    cipher: ContentCipher,
    torrent: Vec<u8>,
    session: Arc<librqbit::Session>,
    handle: Arc<librqbit::ManagedTorrent>,
}

/// Hash and encrypt the file once, then let librqbit check it, without announcing it yet.
async fn get_ready(
    path: &Path,
    folder: &Path,
    opts: &SendOptions,
    cancel: Arc<AtomicBool>,
) -> Result<Seeding> {
    let began = Instant::now();
    let prepared = {
        let path = path.to_owned();
        let key = ContentKey::generate();
        tokio::task::spawn_blocking(move || prepare(&path, key, &cancel))
            .await
            .map_err(|e| Error::Transfer(format!("preparing the file failed: {e}")))??
    };
    tracing::debug!(elapsed = ?began.elapsed(), "hashed and encrypted");
    let cipher = ContentCipher::new(&prepared.key, prepared.size);
    let torrent = prepared.torrent_bytes(None);
    let session = bt::start_session(folder, opts.upload_limit).await?;
    let storage = SealingStorageFactory::new(path, cipher.clone());
    let added = bt::add(
        &session,
        torrent.clone(),
        storage.boxed_factory(),
        bt::AddOptions {
            tracker: opts.relay.announce_url(),
            peers: Vec::new(),
            paused: true,
        },
        folder,
    )
    .await;
    let checked = match added {
        Ok(handle) => bt::wait_seeding(&handle).await.map(|()| handle),
        Err(e) => Err(e),
    };
    tracing::debug!(elapsed = ?began.elapsed(), "checked by librqbit");
    match checked {
        Ok(handle) => Ok(Seeding {
            prepared,
            cipher,
            torrent,
            session,
            handle,
        }),
        Err(e) => {
            bt::shutdown(&session).await;
            Err(e)
        }
    }
}

async fn offer_and_wait(
    link: &mut PeerLink,
    seeding: &Seeding,
    name: String,
    events: &EventSink,
) -> Result<()> {
    let Seeding {
        prepared,
        cipher,
        torrent,
        session,
        handle,
    } = seeding;
    // Register first, so the tracker already knows the swarm when librqbit announces.
    link.register_swarm(&prepared.info_hash_hex()).await?;
    bt::start(session, handle).await?;
    let port = session
        .announce_port()
        .ok_or_else(|| Error::Transfer("BitTorrent is not listening".into()))?;
    let manifest = Manifest {
        files: vec![FileEntry {
            path: name,
            size: prepared.size,
            sha256: prepared.sha256.clone(),
        }],
    };
    let offer = Offer {
        abilities: vec![ABILITY_BITTORRENT.to_owned()],
        manifest,
        content_key: prepared.key.clone(),
        torrent: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, torrent),
        direct_hints: bt::direct_hints(port),
    };
    link.send(&PeerMsg::Offer(Box::new(offer))).await?;
    match link.recv().await? {
        PeerMsg::Answer { accept: true, .. } => {}
        PeerMsg::Answer {
            accept: false,
            reason,
        } => return Err(Error::Declined(reason)),
        other => return Err(Error::Protocol(format!("expected an answer, got {other:?}"))),
    }
    events(Event::Transport {
        path: "direct".into(),
    });

    let done = link.recv();
    tokio::pin!(done);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let reply = loop {
        tokio::select! {
            msg = &mut done => break msg?,
            _ = tick.tick() => {
                let up = handle.stats().uploaded_bytes;
                events(Event::Progress { bytes: cipher.plain_progress(up), total: prepared.size });
            }
        }
    };
    match reply {
        PeerMsg::Done { ok: true, .. } => {
            events(Event::Progress {
                bytes: prepared.size,
                total: prepared.size,
            });
            Ok(())
        }
        PeerMsg::Done { ok: false, message } => Err(Error::Transfer(format!(
            "the receiver reported: {}",
            message.unwrap_or_else(|| "unknown error".into())
        ))),
        other => Err(Error::Protocol(format!("expected done, got {other:?}"))),
    }
}
