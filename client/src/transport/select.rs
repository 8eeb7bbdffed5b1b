//! The receiver's path selector: a listener on 127.0.0.1 that librqbit (or the stream
//! reader) connects to as if it were the sender. Behind it, each connection is carried over
//! the best path that works: a direct TCP connection to the sender's addresses, or the
//! relay's WebSocket tunnel, tried happy-eyeballs style (direct at once, the tunnel a moment
//! later, first to connect wins). When a path dies mid-transfer, librqbit drops the
//! connection (10 s without data), keeps every verified piece, and reconnects: the selector
//! then races the paths again and the transfer continues on whichever still works.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use convey_shared::protocol::tunnel::TunnelSide;
use futures::{StreamExt, stream::FuturesUnordered};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use super::{Transport, path, rtc, rtc::RtcPeer, task::OwnedTask, tunnel, tunnel_resume};
use crate::{Error, Event, EventSink, RelayAddr, error::Result};

/// How long the tunnel waits before racing a direct attempt.
const FALLBACK_DELAY: Duration = Duration::from_millis(1500);
/// How long WebRTC waits before racing a direct attempt.
const RTC_DELAY: Duration = Duration::from_millis(250);
/// How long a WebRTC data channel may take to come up.
const RTC_TIMEOUT: Duration = Duration::from_secs(8);
/// How long the tunnel waits when WebRTC is also tried.
const RELAY_DELAY_AFTER_RTC: Duration = Duration::from_secs(4);
/// Longest a connection waits while librqbit's own direct connection is live.
const HOLD: Duration = Duration::from_secs(7);
/// Buffer per direction when bridging two TCP sockets.
const SPLICE_BUFFER: usize = 256 * 1024;
/// How long one direct connection attempt may take.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the sender can be reached, and which paths are allowed.
#[derive(Clone)]
pub struct Paths {
    pub transport: Transport,
    /// The sender's direct addresses.
    pub hints: Vec<SocketAddr>,
    /// The sender serves the relay tunnel.
    pub tunnel: bool,
    /// The sender's tunnel ends take resumable connections: a lost tunnel is dialled again
    /// under the local connection, which stays open.
    pub tunnel_resume: bool,
    pub relay: RelayAddr,
    pub token: String,
    /// The WebRTC connection, when the sender offered one and we answered.
    pub rtc: Option<Arc<RtcPeer>>,
    /// Set when librqbit dials the direct addresses itself: true while such a direct
    /// connection is live. The selector then carries only the fallbacks, and holds back while
    /// direct works.
    pub direct_elsewhere: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    /// The relay's last word when it refused or closed the tunnel (a cap, a shutdown).
    pub relay_said: Arc<watch::Sender<Option<String>>>,
}

impl std::fmt::Debug for Paths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Paths")
            .field("transport", &self.transport)
            .field("hints", &self.hints)
            .field("tunnel", &self.tunnel)
            .finish_non_exhaustive()
    }
}

impl Paths {
    /// Can any allowed path be tried at all?
    pub fn any(&self) -> bool {
        (self.transport.allows_direct() && !self.hints.is_empty())
            || (self.transport.allows_relay() && self.tunnel)
            || (self.transport.allows_webrtc() && self.rtc.is_some())
    }

    /// Close the WebRTC connection, if any.
    pub async fn close(&self) {
        if let Some(rtc) = &self.rtc {
            rtc.close().await;
        }
    }
}

/// A connection to the sender over some path.
enum Conn {
    Tcp(TcpStream),
    Tunnel(Box<tunnel::Ws>),
    Rtc(Arc<dyn webrtc::data_channel::DataChannel>),
}

/// The receiver's local peer for librqbit; its accept loop stops when it is shut down or
/// dropped (an early return while the transfer starts).
#[derive(Debug)]
pub struct PathSelector {
    addr: SocketAddr,
    task: OwnedTask,
    current: Arc<Mutex<Option<&'static str>>>,
    /// Why the last connection no path could carry failed, path by path.
    failed: Arc<Mutex<Option<String>>>,
}

impl PathSelector {
    pub async fn spawn(paths: Paths, events: EventSink) -> Result<Self> {
        let listener = TcpListener::bind((super::loopback(), 0))
            .await
            .map_err(Error::io("opening the local path selector"))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("opening the local path selector"))?;
        let current = Arc::new(Mutex::new(None));
        let failed = Arc::new(Mutex::new(None));
        let (shown, why) = (current.clone(), failed.clone());
        let task = OwnedTask::spawn(move |cancel| accept_loop(listener, paths, events, cancel, (shown, why)));
        Ok(Self {
            addr,
            task,
            current,
            failed,
        })
    }

    /// Has any path carried a connection yet?
    pub fn opened_any(&self) -> bool {
        self.current().is_some()
    }

    /// Why the most recent connection that no path could carry failed ("WebRTC: ICE …;
    /// direct TCP: …"), if one did.
    pub fn why_not(&self) -> Option<String> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The address to hand librqbit (or the stream reader) as the sender.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The path of the connection opened most recently, if any.
    pub fn current(&self) -> Option<&'static str> {
        *self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub async fn shutdown(self) {
        self.task.shutdown().await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    paths: Paths,
    events: EventSink,
    cancel: CancellationToken,
    (current, failed): (Shared<&'static str>, Shared<String>),
) {
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Ok((local, _)) = accepted else { continue };
        let (paths, events, cancel, current, failed) = (
            paths.clone(),
            events.clone(),
            cancel.clone(),
            current.clone(),
            failed.clone(),
        );
        conns.spawn(async move {
            let opened = tokio::select! {
                r = open(&paths) => r,
                () = cancel.cancelled() => return,
            };
            let (conn, name) = match opened {
                Ok(c) => c,
                Err(why) => {
                    if !why.is_empty() {
                        let why = why.join("; ");
                        tracing::debug!(%why, "no path carried a connection");
                        *failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                    }
                    return;
                }
            };
            let changed = current.lock().unwrap_or_else(|e| e.into_inner()).replace(name) != Some(name);
            if changed {
                events(Event::Transport { path: name.into() });
            }
            if name == path::DIRECT
                && let Some(rtc) = &paths.rtc
            {
                // Direct works: an idle WebRTC connection would only cost CPU (its driver
                // keeps ICE and DTLS alive). The relay tunnel stays as the fallback.
                rtc.close().await;
            }
            let splice = async {
                match conn {
                    Conn::Tcp(mut remote) => {
                        // Either direction ending ends the connection, so a path that went
                        // silent does not keep this task waiting on the other direction.
                        // Large buffers: tokio::io::copy's 8 KiB would cost a syscall pair
                        // per 8 KiB on the bulk direction.
                        let mut local = local;
                        let (lr, mut lw) = local.split();
                        let (rr, mut rw) = remote.split();
                        let mut lr = tokio::io::BufReader::with_capacity(SPLICE_BUFFER, lr);
                        let mut rr = tokio::io::BufReader::with_capacity(SPLICE_BUFFER, rr);
                        tokio::select! {
                            _ = tokio::io::copy_buf(&mut lr, &mut rw) => {},
                            _ = tokio::io::copy_buf(&mut rr, &mut lw) => {},
                        }
                    }
                    Conn::Tunnel(ws) if paths.tunnel_resume => {
                        let redial: tunnel_resume::Redial<'_> = Box::new(|| {
                            Box::pin(tunnel::connect(&paths.relay, &paths.token, TunnelSide::Dial))
                        });
                        if let Some(said) = tunnel_resume::dial(*ws, local, redial).await {
                            paths.relay_said.send_replace(Some(said));
                        }
                    }
                    Conn::Tunnel(ws) => {
                        if let Some(said) = tunnel::splice(*ws, local, None).await.relay_said {
                            paths.relay_said.send_replace(Some(said));
                        }
                    }
                    Conn::Rtc(dc) => rtc::splice(dc, local).await,
                }
            };
            tokio::select! {
                () = splice => {},
                () = cancel.cancelled() => {},
            }
        });
    }
    conns.shutdown().await;
}

/// A value the accept loop's connections report to the selector.
type Shared<T> = Arc<Mutex<Option<T>>>;

/// What one path attempt gives: the connection, or why the path failed.
type Attempt = std::result::Result<(Conn, &'static str), String>;

/// Open the best allowed path to the sender, or say why each failed. Direct starts at once,
/// WebRTC a moment later, the relay tunnel last (later still when WebRTC is in play, since
/// its connection may still be coming up); the first to connect wins. An empty list: the
/// connection was held back while librqbit's own direct connection worked.
async fn open(paths: &Paths) -> std::result::Result<(Conn, &'static str), Vec<String>> {
    if let Some(busy) = &paths.direct_elsewhere {
        // librqbit's own direct connection gets a head start; while it carries the
        // transfer this connection waits, and gives up before librqbit's 10 s handshake
        // timeout would (librqbit then retries it later, when direct may have died).
        tokio::time::sleep(FALLBACK_DELAY).await;
        if busy() {
            if let Some(rtc) = &paths.rtc {
                // An idle WebRTC connection only costs CPU; the relay stays the fallback.
                rtc.close().await;
            }
            let freed = async {
                while busy() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            tokio::time::timeout(HOLD, freed).await.map_err(|_| Vec::new())?;
        }
    }
    let direct =
        paths.transport.allows_direct() && !paths.hints.is_empty() && paths.direct_elsewhere.is_none();
    let rtc = paths.rtc.as_ref().filter(|_| paths.transport.allows_webrtc());
    let relay = paths.transport.allows_relay() && paths.tunnel;
    let mut tries: FuturesUnordered<futures::future::BoxFuture<'_, Attempt>> = FuturesUnordered::new();
    if direct {
        tries.push(Box::pin(async {
            dial_direct(&paths.hints)
                .await
                .map(|c| (Conn::Tcp(c), path::DIRECT))
                .map_err(|why| format!("direct TCP: {why}"))
        }));
    }
    if let Some(peer) = rtc {
        tries.push(Box::pin(async move {
            if direct {
                tokio::time::sleep(RTC_DELAY).await;
            }
            peer.open(RTC_TIMEOUT)
                .await
                .map(|dc| (Conn::Rtc(dc), path::WEBRTC))
                .map_err(|why| format!("WebRTC: {why}"))
        }));
    }
    if relay {
        let delay = match (direct, rtc.is_some()) {
            (_, true) => RELAY_DELAY_AFTER_RTC,
            (true, false) => FALLBACK_DELAY,
            (false, false) => Duration::ZERO,
        };
        tries.push(Box::pin(async move {
            tokio::time::sleep(delay).await;
            match tunnel::connect(&paths.relay, &paths.token, TunnelSide::Dial).await {
                Ok(ws) => Ok((Conn::Tunnel(Box::new(ws)), path::RELAY)),
                Err(err) => {
                    tracing::debug!(%err, "relay tunnel unavailable");
                    let why = format!("the relay tunnel: {err}");
                    if let Error::RelayRefused(said) = err {
                        paths.relay_said.send_replace(Some(said));
                    }
                    Err(why)
                }
            }
        }));
    }
    let mut why = Vec::new();
    while let Some(r) = tries.next().await {
        match r {
            Ok(c) => return Ok(c),
            Err(e) => why.push(e),
        }
    }
    if why.is_empty() {
        why.push("no path is allowed on both sides (check --transport)".into());
    }
    Err(why)
}

/// Connect to the first of `hints` that answers (later ones start a little later); else
/// what went wrong.
async fn dial_direct(hints: &[SocketAddr]) -> std::result::Result<TcpStream, String> {
    let mut tries: FuturesUnordered<_> = hints
        .iter()
        .enumerate()
        .map(|(n, addr)| async move {
            tokio::time::sleep(Duration::from_millis(150 * n as u64)).await;
            tokio::time::timeout(DIRECT_TIMEOUT, TcpStream::connect(addr)).await
        })
        .collect();
    let mut last = String::from("no address to try");
    while let Some(r) = tries.next().await {
        match r {
            Ok(Ok(conn)) => {
                conn.set_nodelay(true).ok();
                return Ok(conn);
            }
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = format!("no answer within {} s", DIRECT_TIMEOUT.as_secs()),
        }
    }
    Err(format!("{} address(es) of the sender tried, {last}", hints.len()))
}
