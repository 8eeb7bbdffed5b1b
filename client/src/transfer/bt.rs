//! librqbit configured for convey: one private torrent per session, trackers and direct
//! hints only (no DHT, no LSD, no UPnP; PEX is off because the torrent is private).

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

use librqbit::{
    AddTorrent, AddTorrentOptions, ListenerMode, ListenerOptions, ManagedTorrent, Session, SessionOptions,
    TorrentStatsState, limits::LimitsConfig, storage::BoxStorageFactory,
};

use crate::{Error, error::Result};

/// A transfer that has made no progress for this long has failed.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Most direct-address hints accepted from a peer.
pub const MAX_HINTS: usize = 16;

/// A librqbit session on a thread of its own, with a single-threaded tokio runtime.
///
/// On a multi-threaded runtime librqbit runs every 16 KiB block it reads or writes inside
/// `block_in_place`, which hands the worker to another thread each time: tens of thousands
/// of thread hand-offs a second. On a current-thread runtime it calls our storage inline.
/// Every call that makes librqbit spawn tasks runs on this runtime, so they all stay here.
pub struct Engine {
    session: Arc<Session>,
    runtime: tokio::runtime::Handle,
    /// Ends the thread's runtime; taken by [`shutdown`].
    stop: Mutex<Option<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Run `fut` on the engine's thread and wait for it.
    async fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
        self.runtime
            .spawn(fut)
            .await
            .map_err(|e| Error::Transfer(format!("BitTorrent stopped: {e}")))
    }

    /// Run `fut` on the engine's thread in the background; it stops when the handle drops.
    pub fn spawn(
        &self,
        fut: impl Future<Output = ()> + Send + 'static,
    ) -> tokio_util::task::AbortOnDropHandle<()> {
        tokio_util::task::AbortOnDropHandle::new(self.runtime.spawn(fut))
    }

    /// End the thread (its runtime drops whatever librqbit left) and wait for it.
    fn stop(&self) -> Option<std::thread::JoinHandle<()>> {
        let (stop, thread) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take()?;
        drop(stop);
        Some(thread)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Only on paths that did not call `shutdown`; the runtime ends at once.
        if let Some(thread) = self.stop() {
            let _ = thread.join();
        }
    }
}

/// A librqbit session that listens on an ephemeral TCP port.
pub async fn start_session(folder: &Path, upload_limit: Option<NonZeroU32>) -> Result<Engine> {
    let opts = SessionOptions {
        dht: None,
        disable_local_service_discovery: true,
        persistence: None,
        fastresume: false,
        listen: Some(ListenerOptions {
            mode: ListenerMode::TcpOnly,
            listen_addr: SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
            enable_upnp_port_forwarding: false,
            ..Default::default()
        }),
        ratelimits: LimitsConfig {
            upload_bps: upload_limit,
            download_bps: None,
        },
        ..Default::default()
    };
    let cannot = |e: String| Error::Transfer(format!("cannot start BitTorrent: {e}"));
    let (started_tx, started_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let folder = folder.to_owned();
    let thread = std::thread::Builder::new()
        .name("convey-bittorrent".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = started_tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let started = Session::new_with_opts(folder, opts)
                    .await
                    .map(|s| (s, tokio::runtime::Handle::current()))
                    .map_err(|e| format!("{e:#}"));
                let ok = started.is_ok();
                if started_tx.send(started).is_ok() && ok {
                    let _ = stop_rx.await;
                }
            });
        })
        .map_err(|e| cannot(e.to_string()))?;
    match started_rx.await {
        Ok(Ok((session, runtime))) => Ok(Engine {
            session,
            runtime,
            stop: Mutex::new(Some((stop_tx, thread))),
        }),
        Ok(Err(e)) => {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            Err(cannot(e))
        }
        Err(_) => Err(cannot("its thread ended".into())),
    }
}

/// Stop a session without librqbit's fixed one-second sleep: remove every torrent (which
/// pauses it and releases our storage), cancel the session's tasks, end the thread.
pub async fn shutdown(engine: &Engine) {
    let session = engine.session.clone();
    let removed = engine
        .run(async move {
            let ids = session.with_torrents(|ts| ts.map(|(id, _)| id).collect::<Vec<_>>());
            for id in ids {
                if let Err(err) = session.delete(id.into(), false).await {
                    tracing::debug!(%err, "removing torrent at shutdown");
                }
            }
            session.cancellation_token().cancel();
        })
        .await;
    if let Err(err) = removed {
        tracing::debug!(%err, "stopping BitTorrent");
    }
    if let Some(thread) = engine.stop() {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// How to add a torrent.
#[derive(Debug, Clone)]
pub struct AddOptions {
    /// The relay's announce URL; `None` keeps this peer off the tracker.
    pub tracker: Option<String>,
    /// Addresses to dial straight away.
    pub peers: Vec<SocketAddr>,
    /// Check the data but neither announce nor connect until [`start`].
    pub paused: bool,
    /// Announce this often instead of at the tracker's interval (a swarm member, which
    /// learns of the receivers that joined after it only from a later announce).
    pub announce_every: Option<Duration>,
}

/// How often a swarm receiver announces: receivers admitted together announce within
/// moments of each other, each before the others, and the tracker's interval (30 s by
/// default) would leave most of them knowing only the sender and the first receiver
/// until then (measured: 8 receivers on 100 Mbit/s links formed a star around the first,
/// whose uplink carried the swarm). The relay's tracker answers an announce in
/// about 40 µs (see Performance), so 200 members cost it under 1 % of a core.
pub const SWARM_ANNOUNCE_EVERY: Duration = Duration::from_secs(1);

/// Add the torrent with our storage.
pub async fn add(
    engine: &Engine,
    torrent: Vec<u8>,
    storage: BoxStorageFactory,
    opts: AddOptions,
    folder: &Path,
) -> Result<Arc<ManagedTorrent>> {
    let opts = AddTorrentOptions {
        storage_factory: Some(storage),
        trackers: Some(opts.tracker.into_iter().collect()),
        initial_peers: Some(opts.peers),
        paused: opts.paused,
        force_tracker_interval: opts.announce_every,
        overwrite: true,
        output_folder: Some(folder.to_string_lossy().into_owned()),
        ..Default::default()
    };
    let session = engine.session.clone();
    engine
        .run(async move {
            session
                .add_torrent(AddTorrent::from_bytes(torrent), Some(opts))
                .await
                .map_err(|e| format!("{e:#}"))
        })
        .await?
        .map_err(|e| Error::Transfer(format!("cannot add the torrent: {e}")))?
        .into_handle()
        .ok_or_else(|| Error::Transfer("the torrent was not started".into()))
}

/// Start announcing and serving a torrent added with `paused: true`.
pub async fn start(engine: &Engine, handle: &Arc<ManagedTorrent>) -> Result<()> {
    let (session, handle) = (engine.session.clone(), handle.clone());
    engine
        .run(async move { session.unpause(&handle).await.map_err(|e| format!("{e:#}")) })
        .await?
        .map_err(|e| Error::Transfer(format!("cannot start seeding: {e}")))
}

/// Wait until the sender's initial check is done and it has every piece.
pub async fn wait_seeding(handle: &ManagedTorrent) -> Result<()> {
    handle
        .wait_until_initialized()
        .await
        .map_err(|e| Error::Transfer(format!("cannot start seeding: {e:#}")))?;
    let stats = handle.stats();
    if !stats.finished {
        return Err(Error::Transfer(
            "the file changed while it was being prepared; send it again once it is no longer being written"
                .into(),
        ));
    }
    Ok(())
}

/// Wait for the initial check of a resumed download; returns the ciphertext bytes it found.
pub async fn wait_checked(handle: &ManagedTorrent) -> Result<u64> {
    handle
        .wait_until_initialized()
        .await
        .map_err(|e| Error::Transfer(format!("cannot check the partial download: {e:#}")))?;
    // Just after the check librqbit may report a live torrent whose piece tracker it cannot
    // read yet (total 0); ask again until the figures are real (every torrent has bytes).
    for _ in 0..250 {
        let s = handle.stats();
        if s.total_bytes > 0 {
            return Ok(s.progress_bytes);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(0)
}

/// How a download ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downloaded {
    /// Complete; the ciphertext bytes fetched from the network (less than the whole when
    /// resuming).
    Complete(u64),
    /// Nothing arrived for the given stall limit.
    Stalled,
}

/// The error for a download that stalled for good.
pub fn stalled_error() -> Error {
    Error::Transfer(format!(
        "no data from the sender for {}s; check that both machines can reach each other",
        STALL_TIMEOUT.as_secs()
    ))
}

/// Remove one torrent from a session (its data stays with our storage).
pub async fn remove(engine: &Engine, handle: &ManagedTorrent) {
    let (session, id) = (engine.session.clone(), handle.id());
    let removed = engine
        .run(async move { session.delete(id.into(), false).await })
        .await;
    if let Ok(Err(err)) = removed {
        tracing::debug!(%err, "removing torrent");
    }
}

/// librqbit's error text on one line: its cause chain joined with ": ", without the
/// "Caused by:" headings, numbering or any backtrace.
pub fn one_line(text: &str) -> String {
    let mut parts = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.to_ascii_lowercase().starts_with("stack backtrace") {
            break;
        }
        if line.is_empty() || line == "Caused by:" {
            continue;
        }
        let cause = line
            .split_once(": ")
            .filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()));
        parts.push(cause.map_or(line, |(_, rest)| rest));
    }
    parts.join(": ")
}

/// Poll until the download is complete, reporting ciphertext bytes to `progress`.
/// Fails on a torrent error; reports [`Downloaded::Stalled`] when nothing arrives for `stall`.
pub async fn wait_downloaded(
    handle: &ManagedTorrent,
    stall: Duration,
    mut progress: impl FnMut(u64, u64),
) -> Result<Downloaded> {
    let mut last = (0, Instant::now());
    loop {
        let s = handle.stats();
        if let Some(e) = &s.error {
            return Err(Error::Transfer(format!("BitTorrent error: {}", one_line(e))));
        }
        if matches!(s.state, TorrentStatsState::Error) {
            return Err(Error::Transfer("BitTorrent stopped with an error".into()));
        }
        // While librqbit checks existing data, `progress_bytes` counts bytes *checked*, not
        // bytes held; and just after, a live torrent may briefly report no totals at all.
        let counting = !matches!(s.state, TorrentStatsState::Initializing { .. }) && s.total_bytes > 0;
        if !counting {
            last.1 = Instant::now();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        progress(s.progress_bytes, s.total_bytes);
        if s.finished && matches!(s.state, TorrentStatsState::Live) {
            return Ok(Downloaded::Complete(
                s.live.map_or(0, |l| l.snapshot.fetched_bytes),
            ));
        }
        if s.progress_bytes != last.0 {
            last = (s.progress_bytes, Instant::now());
        } else if last.1.elapsed() > stall {
            return Ok(Downloaded::Stalled);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// In a swarm, fetch from ciphertext offset `start` onwards first: a librqbit stream placed
/// there (never read) makes the pieces ahead of it the first asked for, from every peer that
/// has them. The cursor skips what has arrived, every [`STEER_EVERY`], and at the end of the
/// content goes on from the start, until everything has arrived. Without the wrap, every
/// receiver fell back to librqbit's own order (from piece 0) at the end: in the last pieces,
/// which all receivers lack together, all of them asked the sender for the same piece at
/// the same time (measured with 8 receivers: the sender at full speed, the pieces held by
/// any receiver growing by 1.5 MiB/s for 6 s).
pub async fn steer(handle: Arc<ManagedTorrent>, start: u64, chunk_len: u64, arrived: impl Fn(u64) -> bool) {
    use tokio::io::AsyncSeekExt;
    let total = handle.stats().total_bytes;
    let Ok(mut stream) = handle.stream(0).await else {
        return;
    };
    let mut at = start;
    while let Some(next) = next_missing(at, total, chunk_len, &arrived) {
        at = next;
        if stream.seek(std::io::SeekFrom::Start(at)).await.is_err() {
            return;
        }
        tokio::time::sleep(STEER_EVERY).await;
    }
}

/// The first offset from `at` on, going round past the end to the start, whose chunk has
/// not arrived; `None` once every chunk has.
fn next_missing(mut at: u64, total: u64, chunk_len: u64, arrived: impl Fn(u64) -> bool) -> Option<u64> {
    let mut scanned = 0;
    while scanned < total {
        if at >= total {
            at = 0;
        }
        if !arrived(at / chunk_len) {
            return Some(at);
        }
        at += chunk_len;
        scanned += chunk_len;
    }
    None
}

/// How often [`steer`] moves its cursor.
const STEER_EVERY: Duration = Duration::from_millis(200);

/// Addresses where this machine's BitTorrent listener may be reachable.
pub fn direct_hints(port: u16) -> Vec<SocketAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_unspecified() && !v4.is_link_local(),
            IpAddr::V6(v6) => !v6.is_unspecified() && !v6.is_unicast_link_local(),
        })
        .collect();
    // Non-loopback first: they are what a peer on another machine can use.
    ips.sort_by_key(|ip| ip.is_loopback());
    ips.dedup();
    ips.into_iter()
        .take(MAX_HINTS)
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_steering_cursor_goes_round_to_what_is_missing() {
        let missing = |set: &'static [u64]| move |i: u64| !set.contains(&i);
        // Four chunks of 10 bytes; start in chunk 2.
        assert_eq!(super::next_missing(20, 40, 10, missing(&[2, 3])), Some(20));
        assert_eq!(super::next_missing(20, 40, 10, missing(&[3])), Some(30));
        assert_eq!(super::next_missing(20, 40, 10, missing(&[0])), Some(0));
        assert_eq!(super::next_missing(35, 40, 10, missing(&[1])), Some(10));
        assert_eq!(super::next_missing(40, 40, 10, missing(&[3])), Some(30));
        assert_eq!(super::next_missing(20, 40, 10, missing(&[])), None);
        assert_eq!(super::next_missing(0, 0, 10, missing(&[0])), None);
    }

    #[test]
    fn librqbit_errors_come_out_on_one_line_without_a_backtrace() {
        let text = "error writing to file 0 (\"convey-payload\")\n\nCaused by:\n    0: writing the received files\n    1: No space left on device (os error 28)\n\nStack backtrace:\n   0: std::backtrace::Backtrace::create\n";
        assert_eq!(
            super::one_line(text),
            "error writing to file 0 (\"convey-payload\"): writing the received files: No space left on device (os error 28)"
        );
        assert_eq!(super::one_line("plain"), "plain");
    }
}
