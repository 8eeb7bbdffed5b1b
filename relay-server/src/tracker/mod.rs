//! The bundled BitTorrent HTTP tracker (BEP 3, compact peers per BEP 23, `peers6` per
//! BEP 7, scrape per BEP 48). It serves only info-hashes a live sender session registered,
//! so it is not an open tracker, unless the operator asks for one (`--open-tracker`).
//! Every reply carries `interval` and `peers`; errors are a bencoded `failure reason` with
//! status 200, as clients expect.

pub(crate) mod announce;
pub(crate) mod fast;
mod store;
mod swarm;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, RawQuery, State},
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_bytes::ByteBuf;

use announce::Event;
pub(crate) use store::SwarmStore;
pub(crate) use swarm::Swarms;
use swarm::{Announce, AnnounceOutcome, Refusal};

use crate::{limits::client_ip, metrics::Metrics, state::AppState};

/// The tracker's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TrackerSettings {
    /// Announce interval handed to peers.
    pub(crate) interval: Duration,
    /// Most peers handed out in one reply.
    pub(crate) max_numwant: usize,
}

impl TrackerSettings {
    /// A peer that missed three announces is gone.
    pub(crate) fn stale_after(&self) -> Duration {
        self.interval * 3
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct InfoHash(pub(crate) [u8; 20]);

impl InfoHash {
    pub(crate) fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 20];
        hex_decode(s, &mut out).then_some(Self(out))
    }
}

fn hex_decode(s: &str, out: &mut [u8; 20]) -> bool {
    if s.len() != 40 {
        return false;
    }
    for (i, o) in out.iter_mut().enumerate() {
        match u8::from_str_radix(s.get(2 * i..2 * i + 2).unwrap_or("zz"), 16) {
            Ok(b) => *o = b,
            Err(_) => return false,
        }
    }
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PeerId(pub(crate) [u8; 20]);

#[derive(Serialize)]
struct Failure {
    #[serde(rename = "failure reason")]
    reason: String,
    interval: u64,
}

#[derive(Serialize)]
struct DictPeer {
    ip: String,
    port: u16,
    #[serde(rename = "peer id")]
    peer_id: ByteBuf,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Peers {
    Compact(ByteBuf),
    Dicts(Vec<DictPeer>),
}

#[derive(Serialize)]
struct Success {
    interval: u64,
    #[serde(rename = "min interval")]
    min_interval: u64,
    complete: usize,
    incomplete: usize,
    peers: Peers,
    #[serde(skip_serializing_if = "Option::is_none")]
    peers6: Option<ByteBuf>,
}

fn bencoded<T: Serialize>(value: &T) -> Response {
    reply_response(serde_bencode::to_bytes(value))
}

/// A bencoded body as the HTTP response a tracker client expects. A client announces once
/// an interval, so the connection closes after it, as on the listener's fast path.
fn reply_response(body: Result<Vec<u8>, serde_bencode::Error>) -> Response {
    match body {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/plain"),
                (header::CONNECTION, "close"),
            ],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(%err, "cannot bencode tracker reply");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `GET /announce` through axum: the requests the listener's fast path did not take
/// (split across reads, behind the shared store, or with a body).
pub(crate) async fn announce(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    // The peer's address as the rendezvous sees it: behind a trusted proxy, the client's.
    let ip = client_ip(remote, &headers, state.trust_forwarded_for);
    reply_response(announce_reply(&state, ip, query.as_deref().unwrap_or("")).await)
}

/// The bencoded reply to an announce with this `query` from a peer at `ip`: peers and
/// counts, or a `failure reason`. Completes at once with the in-memory store.
pub(crate) async fn announce_reply(
    state: &AppState,
    ip: IpAddr,
    query: &str,
) -> Result<Vec<u8>, serde_bencode::Error> {
    let interval = state.tracker.interval.as_secs();
    Metrics::inc(&state.metrics.announces);
    let fail = |label: &'static str, reason: String| {
        state.metrics.reject(label);
        serde_bencode::to_bytes(&Failure { reason, interval })
    };
    let req = match announce::parse(query) {
        Ok(r) => r,
        Err(reason) => return fail("tracker_malformed", reason),
    };
    let a = Announce {
        info_hash: req.info_hash,
        peer_id: req.peer_id,
        addr: SocketAddr::new(ip, req.port),
        left: req.left,
        stopped: req.event == Event::Stopped,
        completed: req.event == Event::Completed,
        numwant: req.numwant.min(state.tracker.max_numwant),
    };
    match state.swarms.announce(&a, state.tracker.stale_after()).await {
        Ok(outcome) => serde_bencode::to_bytes(&success(outcome, req.compact, interval)),
        Err(Refusal::Unregistered) => fail(
            "tracker_unregistered",
            "unregistered info_hash: this tracker only serves transfers in progress on this relay".into(),
        ),
        Err(Refusal::Full) => fail(
            "tracker_full",
            "this tracker serves as many swarms as it can; try again later".into(),
        ),
        Err(Refusal::Unavailable) => fail(
            "store_unavailable",
            "the tracker cannot reach its shared store; try again later".into(),
        ),
    }
}

#[derive(Serialize)]
struct ScrapeFile {
    complete: usize,
    downloaded: u64,
    incomplete: usize,
}

#[derive(Serialize)]
struct Scrape {
    files: BTreeMap<ByteBuf, ScrapeFile>,
}

/// `GET /scrape` (BEP 48): counts for the named swarms this tracker serves.
pub(crate) async fn scrape(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let hashes = match announce::parse_scrape(query.as_deref().unwrap_or("")) {
        Ok(h) => h,
        Err(reason) => {
            state.metrics.reject("tracker_malformed");
            let interval = state.tracker.interval.as_secs();
            return bencoded(&Failure { reason, interval });
        }
    };
    let files = state
        .swarms
        .scrape(&hashes, state.tracker.stale_after())
        .await
        .into_iter()
        .map(|(h, s)| {
            let file = ScrapeFile {
                complete: s.complete,
                downloaded: s.downloaded,
                incomplete: s.incomplete,
            };
            (ByteBuf::from(h.0.to_vec()), file)
        })
        .collect();
    bencoded(&Scrape { files })
}

fn success(outcome: AnnounceOutcome, compact: bool, interval: u64) -> Success {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (_, addr) in &outcome.peers {
        match addr {
            SocketAddr::V4(a) => {
                v4.extend_from_slice(&a.ip().octets());
                v4.extend_from_slice(&a.port().to_be_bytes());
            }
            SocketAddr::V6(a) => {
                v6.extend_from_slice(&a.ip().octets());
                v6.extend_from_slice(&a.port().to_be_bytes());
            }
        }
    }
    let peers = if compact {
        Peers::Compact(ByteBuf::from(v4))
    } else {
        Peers::Dicts(
            outcome
                .peers
                .iter()
                .map(|(id, addr)| DictPeer {
                    ip: addr.ip().to_string(),
                    port: addr.port(),
                    peer_id: ByteBuf::from(id.0.to_vec()),
                })
                .collect(),
        )
    };
    Success {
        interval,
        min_interval: interval,
        complete: outcome.stats.complete,
        incomplete: outcome.stats.incomplete,
        peers,
        peers6: (compact && !v6.is_empty()).then(|| ByteBuf::from(v6)),
    }
}
