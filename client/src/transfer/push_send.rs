//! The sender's push: the first pass over the content is the transfer. While the pass reads,
//! packs and seals each frame (and hashes it for the torrent), a [`Tap`] hands the sealed
//! frame to the receiver's push connection, so bytes move at once and the content is read
//! once. Frames the pass had read before the receiver connected (or all of them, when it
//! came after the pass) are read and sealed again afterwards: the ciphertext is a
//! deterministic function of key and data, so they come out as the torrent describes them.
//!
//! The push listener also forwards BitTorrent connections (they open with byte 19) to the
//! sender's librqbit, once it seeds: so the paths offered for the push (direct addresses,
//! WebRTC, the relay tunnel) carry BitTorrent too when the receiver falls back to it.

use std::{
    net::SocketAddr,
    num::NonZeroU32,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use convey_shared::{
    bits::{has, set},
    chunk_map::{ChunkMap, FRAME_PLAIN, Place},
    content::{ContentCipher, ContentKey, PLAIN_CHUNK, TAG_LEN},
    protocol::push::{ACK_LEN, HELLO_LEN, HaveField, Item, WINDOW, have_len},
};
use futures::{FutureExt, future::FusedFuture};
use subtle::ConstantTimeEq;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, tcp::OwnedWriteHalf},
    sync::{mpsc, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::{codec, files::FileSet};
use crate::{Error, error::Result, transport::task::OwnedTask};

/// Frames queued between the pass and the connection (4 MiB at most).
const TAP_DEPTH: usize = 16;
/// With nothing to send for this long, the sender says it is still there.
const KEEP_ALIVE: Duration = Duration::from_secs(1);
/// How long a new connection may take to say who it is.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// The first byte of a BitTorrent handshake (the length of "BitTorrent protocol").
const BITTORRENT_FIRST: u8 = 19;

/// One frame, sealed as the torrent describes it.
#[derive(Debug)]
pub struct PushFrame {
    pub frame: u64,
    pub first_chunk: u64,
    pub code: u8,
    pub sealed: Vec<u8>,
}

/// Where the pass hands its sealed frames while a receiver's push connection is attached.
#[derive(Debug, Default)]
pub struct Tap {
    slot: Mutex<TapSlot>,
}

#[derive(Debug, Default)]
struct TapSlot {
    tx: Option<mpsc::Sender<PushFrame>>,
    closed: bool,
}

impl Tap {
    fn lock(&self) -> std::sync::MutexGuard<'_, TapSlot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Receive the frames the pass seals from now on, or `None` when the pass is over. A
    /// later attach replaces this one.
    fn attach(&self) -> Option<mpsc::Receiver<PushFrame>> {
        let mut slot = self.lock();
        if slot.closed {
            return None;
        }
        let (tx, rx) = mpsc::channel(TAP_DEPTH);
        slot.tx = Some(tx);
        Some(rx)
    }

    /// Does anyone want the frame being sealed (so the pass keeps its sealed bytes)?
    pub fn wants(&self) -> bool {
        self.lock().tx.as_ref().is_some_and(|tx| !tx.is_closed())
    }

    /// Hand a sealed frame over, waiting while the connection is behind (so the pass runs at
    /// the pace of the network). A connection that went away just stops receiving.
    pub fn offer(&self, frame: PushFrame) {
        let tx = self.lock().tx.clone();
        if let Some(tx) = tx
            && tx.blocking_send(frame).is_err()
        {
            let mut slot = self.lock();
            if slot.tx.as_ref().is_some_and(mpsc::Sender::is_closed) {
                slot.tx = None;
            }
        }
    }

    /// The pass is over: no more frames.
    pub fn close(&self) {
        let mut slot = self.lock();
        slot.closed = true;
        slot.tx = None;
    }
}

/// What the push connections are served from.
#[derive(Debug)]
pub struct PushSource {
    pub files: Arc<FileSet>,
    pub key: ContentKey,
    pub tap: Arc<Tap>,
    /// The chunk map once the pass is over: `Some(None)` when it failed.
    pub map: watch::Receiver<Option<Option<ChunkMap>>>,
    /// Plaintext bytes pushed so far, over every connection.
    pub pushed: AtomicU64,
    pub upload_limit: Option<NonZeroU32>,
}

impl PushSource {
    fn plain_len(&self) -> u64 {
        self.files.layout().total()
    }

    fn frames(&self) -> u64 {
        ChunkMap::frame_count_for(self.plain_len())
    }
}

/// The sender's push listener, owned: `shutdown` stops every connection it serves.
#[derive(Debug)]
pub struct PushServer {
    port: u16,
    bittorrent: Arc<OnceLock<u16>>,
    task: OwnedTask,
}

impl PushServer {
    /// Listen for the receiver, whose push connection must open with `hello`; a connection
    /// that opens with `route.0` instead is the session's peer route, handed to `route.1`.
    pub async fn bind(
        hello: [u8; HELLO_LEN],
        route: ([u8; HELLO_LEN], RouteHandler),
        source: Arc<PushSource>,
    ) -> Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, 0))
            .await
            .map_err(Error::io("cannot listen for the receiver"))?;
        let port = listener
            .local_addr()
            .map_err(Error::io("cannot listen for the receiver"))?
            .port();
        let bittorrent = Arc::new(OnceLock::new());
        let bt = bittorrent.clone();
        let hellos = Hellos {
            push: hello,
            route: route.0,
        };
        let task =
            OwnedTask::spawn(move |cancel| accept_loop(listener, (hellos, route.1), source, bt, cancel));
        Ok(Self {
            port,
            bittorrent,
            task,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, hand BitTorrent connections to librqbit on this local port.
    pub fn forward_bittorrent(&self, port: u16) {
        let _ = self.bittorrent.set(port);
    }

    pub async fn shutdown(self) {
        self.task.shutdown().await;
    }
}

/// Takes the session's peer route (a connection whose route hello was checked).
pub type RouteHandler = Arc<dyn Fn(TcpStream) + Send + Sync>;

/// What a receiver's connection may open with.
#[derive(Clone, Copy)]
struct Hellos {
    push: [u8; HELLO_LEN],
    route: [u8; HELLO_LEN],
}

/// What a new connection turned out to be.
enum Arrival {
    /// A push connection, the frames the receiver already holds, and how it takes them
    /// (the flags of its opening's [`HaveField`]).
    Push(TcpStream, Vec<u8>, HaveField),
    /// The session's peer route.
    Route(TcpStream),
    /// Something else, handled (or dropped) already.
    Other,
}

async fn accept_loop(
    listener: TcpListener,
    (hellos, on_route): (Hellos, RouteHandler),
    source: Arc<PushSource>,
    bittorrent: Arc<OnceLock<u16>>,
    cancel: CancellationToken,
) {
    let mut arrivals = JoinSet::new();
    let mut pushes = JoinSet::new();
    let mut current: Option<CancellationToken> = None;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((conn, from)) = accepted else { continue };
                let (bt, frames) = (bittorrent.clone(), source.frames());
                let cancel = cancel.clone();
                arrivals.spawn(async move {
                    tokio::select! {
                        a = arrive(conn, from, hellos, frames, bt) => a,
                        () = cancel.cancelled() => Arrival::Other,
                    }
                });
            }
            Some(Ok(arrival)) = arrivals.join_next(), if !arrivals.is_empty() => {
                if let Arrival::Route(conn) = arrival {
                    on_route(conn);
                } else if let Arrival::Push(conn, have, takes) = arrival {
                    // A receiver that connects again (its path died) replaces the old push.
                    if let Some(old) = current.take() {
                        old.cancel();
                    }
                    let stop = cancel.child_token();
                    current = Some(stop.clone());
                    let source = source.clone();
                    pushes.spawn(async move {
                        tokio::select! {
                            r = serve(conn, (have, takes), &source) => {
                                if let Err(err) = r {
                                    tracing::debug!(%err, "push connection ended");
                                }
                            }
                            () = stop.cancelled() => {}
                        }
                    });
                }
            }
            Some(_) = pushes.join_next(), if !pushes.is_empty() => {}
            () = cancel.cancelled() => break,
        }
    }
    arrivals.shutdown().await;
    pushes.shutdown().await;
}

/// Tell a push connection from a BitTorrent one; check the push hello and read what the
/// receiver holds. A BitTorrent connection is spliced to librqbit (once it seeds).
async fn arrive(
    mut conn: TcpStream,
    from: SocketAddr,
    hellos: Hellos,
    frames: u64,
    bittorrent: Arc<OnceLock<u16>>,
) -> Arrival {
    conn.set_nodelay(true).ok();
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.peek(&mut first)).await;
    if !matches!(peeked, Ok(Ok(1))) {
        return Arrival::Other;
    }
    if first[0] == BITTORRENT_FIRST {
        if let Some(port) = bittorrent.get().copied()
            && let Ok(mut local) = TcpStream::connect((crate::transport::loopback(), port)).await
        {
            local.set_nodelay(true).ok();
            let _ = tokio::io::copy_bidirectional(&mut conn, &mut local).await;
        }
        return Arrival::Other;
    }
    let handshake = async {
        let mut presented = [0u8; HELLO_LEN];
        conn.read_exact(&mut presented).await.ok()?;
        if bool::from(presented.ct_eq(&hellos.route)) {
            return Some(None);
        }
        if !bool::from(presented.ct_eq(&hellos.push)) {
            return None;
        }
        let takes = HaveField::parse(conn.read_u32_le().await.ok()?);
        let len = takes.len as usize;
        let want = have_len(frames);
        if len != 0 && len != want {
            return None;
        }
        let mut have = vec![0u8; want];
        conn.read_exact(&mut have[..len]).await.ok()?;
        Some(Some((have, takes)))
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Some(Some((have, takes)))) => Arrival::Push(conn, have, takes),
        Ok(Some(None)) => Arrival::Route(conn),
        _ => {
            tracing::debug!(%from, "dropping a push connection without the hello");
            Arrival::Other
        }
    }
}

/// Paces writes to the upload limit.
struct Pacer {
    started: tokio::time::Instant,
    bytes: u64,
    limit: Option<NonZeroU32>,
}

impl Pacer {
    async fn sent(&mut self, n: usize) {
        let Some(limit) = self.limit else { return };
        self.bytes += n as u64;
        let due = Duration::from_secs_f64(self.bytes as f64 / f64::from(limit.get()));
        tokio::time::sleep_until(self.started + due).await;
    }
}

/// Push every frame the receiver lacks: what the pass seals while we are attached, then the
/// rest, read and sealed again once the pass is over; then say it is all there. A receiver
/// that takes frames only in order gets the pass's frames only while each is the first it
/// lacks; once the pass is ahead of it, the rest comes after the pass. A receiver that
/// acknowledges gets at most [`WINDOW`] frames beyond what it said it holds.
async fn serve(conn: TcpStream, (sent, takes): (Vec<u8>, HaveField), source: &PushSource) -> Result<()> {
    let (mut rd, mut wr) = conn.into_split();
    let held = sent.iter().map(|b| u64::from(b.count_ones())).sum();
    let (acks_tx, acks) = watch::channel(held);
    // What the receiver writes after its opening: acknowledgements, or nothing until it
    // closes; read until it closes (which also tells a finished push when to let go).
    let reads = async move {
        let mut ack = [0u8; ACK_LEN];
        while rd.read_exact(&mut ack).await.is_ok() {
            let frames = u64::from_le_bytes(ack);
            acks_tx.send_if_modified(|held| {
                let more = frames > *held;
                *held = (*held).max(frames);
                more
            });
        }
    }
    .fuse();
    tokio::pin!(reads);
    let body = push_all(&mut wr, (sent, takes, acks), source);
    tokio::pin!(body);
    let result = tokio::select! {
        r = &mut body => r,
        // The receiver stopped writing: the push goes on, and fails if it has gone.
        () = &mut reads => body.await,
    };
    result?;
    // The receiver closes once it has written everything; wait (bounded) so the last
    // bytes are not cut off by our close.
    if !reads.is_terminated() {
        let _ = tokio::time::timeout(Duration::from_secs(30), reads).await;
    }
    Ok(())
}

/// The writing half of [`serve`]: every frame the receiver lacks, then the end.
async fn push_all(
    conn: &mut OwnedWriteHalf,
    (mut sent, takes, mut acks): (Vec<u8>, HaveField, watch::Receiver<u64>),
    source: &PushSource,
) -> Result<()> {
    let gone = |_| Error::PeerGone;
    let mut pacer = Pacer {
        started: tokio::time::Instant::now(),
        bytes: 0,
        limit: source.upload_limit,
    };
    let plain_len = source.plain_len();
    let mut holds = *acks.borrow();
    let mut write = async |conn: &mut OwnedWriteHalf, f: PushFrame, sent: &mut Vec<u8>| -> Result<()> {
        // An acknowledging receiver has at most WINDOW frames it has not used yet.
        while takes.acked && holds >= acks.borrow_and_update().saturating_add(WINDOW) {
            acks.changed().await.map_err(|_| Error::PeerGone)?;
        }
        let head = Item::Frame {
            frame: f.frame,
            first_chunk: f.first_chunk,
            code: f.code,
            sealed: f.sealed.len(),
        };
        conn.write_all(&head.to_bytes()).await.map_err(gone)?;
        conn.write_all(&f.sealed).await.map_err(gone)?;
        set(sent, f.frame);
        holds += 1;
        let plain = convey_shared::protocol::push::frame_plain_len(plain_len, f.frame);
        source.pushed.fetch_add(plain, Ordering::Relaxed);
        pacer.sent(f.sealed.len()).await;
        Ok(())
    };
    // The first frame the receiver lacks, found from here (`sent` only grows).
    let mut lacks_from = 0;
    let frames = source.frames();
    let first_missing = |sent: &[u8], from: &mut u64| {
        while *from < frames && has(sent, *from) {
            *from += 1;
        }
        *from
    };
    if let Some(mut live) = source.tap.attach() {
        loop {
            match tokio::time::timeout(KEEP_ALIVE, live.recv()).await {
                Ok(Some(f)) if has(&sent, f.frame) => {}
                Ok(Some(f)) if takes.in_order && f.frame != first_missing(&sent, &mut lacks_from) => break,
                Ok(Some(f)) => write(conn, f, &mut sent).await?,
                Ok(None) => break,
                Err(_) => conn.write_all(&Item::KeepAlive.to_bytes()).await.map_err(gone)?,
            }
        }
    }
    let mut maps = source.map.clone();
    let map = loop {
        if let Some(done) = maps.borrow_and_update().clone() {
            break done;
        }
        match tokio::time::timeout(KEEP_ALIVE, maps.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Error::Transfer("the pass over the content ended".into())),
            Err(_) => conn.write_all(&Item::KeepAlive.to_bytes()).await.map_err(gone)?,
        }
    };
    let Some(map) = map else {
        return Err(Error::Transfer("the pass over the content failed".into()));
    };
    let missing: Vec<u64> = (0..source.frames()).filter(|k| !has(&sent, *k)).collect();
    let (tx, mut rx) = mpsc::channel(TAP_DEPTH / 2);
    let (files, cipher) = (source.files.clone(), ContentCipher::new(&source.key, map));
    let again = tokio::task::spawn_blocking(move || {
        for k in missing {
            let frame = seal_again(&files, &cipher, k)?;
            if tx.blocking_send(frame).is_err() {
                break;
            }
        }
        Ok::<_, Error>(())
    });
    while let Some(f) = rx.recv().await {
        write(conn, f, &mut sent).await?;
    }
    again
        .await
        .map_err(|e| Error::Transfer(format!("re-reading the files failed: {e}")))??;
    conn.write_all(&Item::End.to_bytes()).await.map_err(gone)?;
    conn.flush().await.map_err(gone)
}

/// Frame `k` sealed again from the files, exactly as the pass sealed it.
fn seal_again(files: &FileSet, cipher: &ContentCipher, k: u64) -> Result<PushFrame> {
    let map = cipher.map();
    let chunks = map.frame_chunks(k);
    let offset = k * FRAME_PLAIN;
    let mut plain = vec![0u8; usize::try_from(map.frame_len(k)).unwrap_or(0)];
    files.read_exact_at(offset, &mut plain).map_err(Error::io(
        "reading the files to send (did one shrink while being sent?)",
    ))?;
    let packed = matches!(map.place(chunks.start), Place::Packed { .. });
    let data = if packed {
        let changed = || {
            Error::Transfer(
                "a file changed while it was being sent; send it again once it is no longer being written"
                    .into(),
            )
        };
        let p = codec::pack(&plain)
            .map_err(Error::io("compressing the files to send"))?
            .ok_or_else(changed)?;
        if p.len() as u64 != (chunks.end - chunks.start) * PLAIN_CHUNK {
            return Err(changed());
        }
        p
    } else {
        plain
    };
    let code = if packed {
        u8::try_from(chunks.end - chunks.start).unwrap_or(0)
    } else {
        0
    };
    let last_frame = k + 1 == map.frame_count();
    let count = data.len().div_ceil(PLAIN_CHUNK as usize).max(1);
    let mut sealed = Vec::with_capacity(data.len() + count * TAG_LEN as usize);
    for (c, part) in data.chunks(PLAIN_CHUNK as usize).enumerate() {
        let at = sealed.len();
        sealed.extend_from_slice(part);
        sealed.resize(at + part.len() + TAG_LEN as usize, 0);
        cipher.seal_chunk_as(
            chunks.start + c as u64,
            last_frame && c + 1 == count,
            &mut sealed[at..],
        );
    }
    Ok(PushFrame {
        frame: k,
        first_chunk: chunks.start,
        code,
        sealed,
    })
}

#[cfg(test)]
#[path = "push_send_tests.rs"]
mod tests;
