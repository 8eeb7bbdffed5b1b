//! librqbit configured for convey: one private torrent per session, trackers and direct
//! hints only (no DHT, no LSD, no UPnP; PEX is off because the torrent is private).

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use librqbit::{
    AddTorrent, AddTorrentOptions, ListenerMode, ListenerOptions, ManagedTorrent, Session, SessionOptions,
    TorrentStatsState, limits::LimitsConfig, storage::BoxStorageFactory,
};

use crate::{Error, error::Result};

/// A transfer that has made no progress for this long has failed.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Most direct-address hints accepted from a peer.
pub const MAX_HINTS: usize = 16;

/// A librqbit session that listens on an ephemeral TCP port.
pub async fn start_session(folder: &Path, upload_limit: Option<NonZeroU32>) -> Result<Arc<Session>> {
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
    Session::new_with_opts(folder.to_owned(), opts)
        .await
        .map_err(|e| Error::Transfer(format!("cannot start BitTorrent: {e:#}")))
}

/// Stop a session without librqbit's fixed one-second sleep: remove every torrent (which
/// pauses it and releases our storage), then cancel the session's tasks.
pub async fn shutdown(session: &Arc<Session>) {
    let ids = session.with_torrents(|ts| ts.map(|(id, _)| id).collect::<Vec<_>>());
    for id in ids {
        if let Err(err) = session.delete(id.into(), false).await {
            tracing::debug!(%err, "removing torrent at shutdown");
        }
    }
    session.cancellation_token().cancel();
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
}

/// Add the torrent with our storage.
pub async fn add(
    session: &Arc<Session>,
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
        overwrite: true,
        output_folder: Some(folder.to_string_lossy().into_owned()),
        ..Default::default()
    };
    session
        .add_torrent(AddTorrent::from_bytes(torrent), Some(opts))
        .await
        .map_err(|e| Error::Transfer(format!("cannot add the torrent: {e:#}")))?
        .into_handle()
        .ok_or_else(|| Error::Transfer("the torrent was not started".into()))
}

/// Start announcing and serving a torrent added with `paused: true`.
pub async fn start(session: &Arc<Session>, handle: &Arc<ManagedTorrent>) -> Result<()> {
    session
        .unpause(handle)
        .await
        .map_err(|e| Error::Transfer(format!("cannot start seeding: {e:#}")))
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
pub async fn remove(session: &Arc<Session>, handle: &ManagedTorrent) {
    if let Err(err) = session.delete(handle.id().into(), false).await {
        tracing::debug!(%err, "removing torrent");
    }
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
            return Err(Error::Transfer(format!("BitTorrent error: {e}")));
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
