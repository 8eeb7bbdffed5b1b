//! Entry points for the fuzz targets in `fuzz/`: the relay's parsers of network bytes,
//! reachable without a socket. Each panics only on a broken invariant (which is the bug a
//! fuzzer looks for). Not an API: hidden from the docs and subject to change.

use std::{net::SocketAddr, sync::OnceLock};

use tokio_util::sync::CancellationToken;

use crate::{
    Config,
    state::{AppState, Stopping},
    tracker::{announce, fast},
    tunnel::frames,
};

/// A client frame header as the tunnel reads it: the first two bytes say how long the
/// header is; a complete one is parsed.
pub fn tunnel_header(data: &[u8]) {
    let [a, b, ..] = *data else { return };
    let n = frames::header_len([a, b]);
    assert!((2..=14).contains(&n));
    if let Some(head) = data.get(..n)
        && let Ok(h) = frames::parse_client_header(head)
    {
        assert!(h.len <= frames::MAX_FRAME);
        let (start, used) = frames::relayed_frame_start(h.len, h.mask);
        assert!(used <= start.len());
    }
}

/// An announce or scrape query string.
pub fn tracker_query(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    if let Ok(r) = announce::parse(&query) {
        assert!(r.port != 0);
        assert!(r.numwant as u64 <= announce::ABSURD_NUMWANT);
    }
    if let Ok(hashes) = announce::parse_scrape(&query) {
        assert!(!hashes.is_empty() && hashes.len() <= announce::MAX_SCRAPE_HASHES);
    }
}

/// A connection's first bytes as the listener's announce fast path sees them, against an
/// in-memory relay state.
pub fn tracker_fast_path(data: &[u8]) {
    static STATE: OnceLock<AppState> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let config = Config::with_listen(SocketAddr::from(([127, 0, 0, 1], 0)));
        let stopping = Stopping {
            draining: CancellationToken::new(),
            now: CancellationToken::new(),
        };
        AppState::new(&config, stopping, None)
    });
    if let Some(reply) = fast::answer(state, SocketAddr::from(([127, 0, 0, 1], 6881)), data) {
        assert!(reply.starts_with(b"HTTP/1."));
    }
}
