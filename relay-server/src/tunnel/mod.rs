//! The WebSocket tunnel: the transport of last resort when the peers cannot reach each other
//! directly or over WebRTC. One `listen` and one `dial` connection with the same token are
//! paired and each one's frames passed on to the other ([`forward`]). The relay sees only what
//! the peers send, masked: BitTorrent framing around ciphertext. Every session (token) has a
//! byte and a time cap.

mod forward;
pub(crate) mod frames;
mod waiting;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use convey_shared::protocol::tunnel::{TUNNEL_PROTOCOL, TunnelSide, is_token};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info_span};

use crate::{metrics::Metrics, state::AppState};
use forward::{CLOSED, Conn, Ended, Inbound, Outbound};
use waiting::Waited;

/// Caps on relayed sessions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TunnelLimits {
    /// Bytes one session (token) may relay, both directions together.
    pub(crate) max_bytes: u64,
    /// How long one session may use the tunnel.
    pub(crate) max_time: Duration,
    /// How long one end waits for the other.
    pub(crate) wait: Duration,
}

/// What one session has used.
#[derive(Debug)]
struct Usage {
    bytes: AtomicU64,
    started: Instant,
}

/// Ends waiting for their partner, and per-session usage.
#[derive(Debug, Default)]
pub(crate) struct Tunnels {
    waiting: Mutex<HashMap<(String, TunnelSide), oneshot::Sender<Conn>>>,
    usage: Mutex<HashMap<String, (Arc<Usage>, usize)>>,
}

impl Tunnels {
    /// Usage of `token`, counted as in use until [`Tunnels::release`].
    fn acquire(&self, token: &str) -> Arc<Usage> {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let entry = usage.entry(token.to_owned()).or_insert_with(|| {
            (
                Arc::new(Usage {
                    bytes: AtomicU64::new(0),
                    started: Instant::now(),
                }),
                0,
            )
        });
        entry.1 += 1;
        entry.0.clone()
    }

    /// One connection of `token` ended. Its usage is kept (see [`Tunnels::prune`]), so
    /// reconnecting does not reset a session's caps.
    fn release(&self, token: &str) {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = usage.get_mut(token) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }

    /// Why `token` may not use the tunnel any more, if it has used up a cap.
    fn exhausted(&self, token: &str, limits: &TunnelLimits) -> Option<&'static str> {
        let usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let (u, _) = usage.get(token)?;
        if u.bytes.load(Ordering::Relaxed) >= limits.max_bytes {
            Some(BYTE_CAP)
        } else if u.started.elapsed() >= limits.max_time {
            Some(TIME_CAP)
        } else {
            None
        }
    }

    /// Forget sessions with no connection whose time cap has passed.
    pub(crate) fn prune(&self, max_time: Duration) {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        usage.retain(|_, (u, conns)| *conns > 0 || u.started.elapsed() < max_time);
    }
}

const BYTE_CAP: &str = "the relay's byte cap for this transfer is reached";
const TIME_CAP: &str = "the relay's time cap for this transfer is reached";

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Does header `name` list `token` (comma-separated, any case)?
fn lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

pub(crate) async fn handler(
    Path((token, side)): Path<(String, String)>,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    let Some(side) = TunnelSide::parse(&side).filter(|_| is_token(&token)) else {
        return (StatusCode::NOT_FOUND, "no such tunnel endpoint\n").into_response();
    };
    let headers = req.headers();
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| accept_key(k.as_bytes()));
    let Some(key) = key.filter(|_| {
        lists(headers, header::CONNECTION, "upgrade")
            && lists(headers, header::UPGRADE, "websocket")
            && headers
                .get(header::SEC_WEBSOCKET_VERSION)
                .is_some_and(|v| v == "13")
    }) else {
        return (
            StatusCode::BAD_REQUEST,
            "the tunnel is a WebSocket (version 13) endpoint\n",
        )
            .into_response();
    };
    if state.stopping.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the relay is shutting down\n").into_response();
    }
    // The sender listens; on a private relay that needs the token, the receiver dials with
    // only what the session gave it.
    if side == TunnelSide::Listen && !state.admits(headers) {
        state.metrics.reject("unauthorized");
        return (
            StatusCode::UNAUTHORIZED,
            "this relay is private: the sender's end of a tunnel needs its access token\n",
        )
            .into_response();
    }
    // A browser that offers sub-protocols (the token's) needs one answered.
    let asked_tunnel_protocol = lists(headers, header::SEC_WEBSOCKET_PROTOCOL, TUNNEL_PROTOCOL);
    let token = token.to_ascii_lowercase();
    if let Some(reason) = state.tunnels.exhausted(&token, &state.tunnel_limits) {
        return (StatusCode::FORBIDDEN, format!("{reason}\n")).into_response();
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let tasks = state.tasks.clone();
    let span = info_span!("tunnel", side = side.as_str(), %peer);
    tasks.spawn(
        async move {
            let upgraded = match upgrade.await {
                Ok(u) => u,
                Err(err) => return debug!(%err, "tunnel upgrade failed"),
            };
            run(TokioIo::new(upgraded), token, side, state).await;
        }
        .instrument(span),
    );
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    if asked_tunnel_protocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(TUNNEL_PROTOCOL),
        );
    }
    resp
}

async fn run(socket: Conn, token: String, side: TunnelSide, state: AppState) {
    let tunnels = state.tunnels.clone();
    let usage = tunnels.acquire(&token);
    let mut socket = Some(socket);
    // Join a waiting partner, or wait for one; retry if the partner gave up meanwhile.
    let paired = loop {
        let Some(mine) = socket.take() else { break None };
        let partner = {
            let mut waiting = tunnels.waiting.lock().unwrap_or_else(|e| e.into_inner());
            match waiting.remove(&(token.clone(), side.other())) {
                Some(tx) => Ok(tx),
                None if waiting.contains_key(&(token.clone(), side)) => Err(None),
                None => {
                    let (tx, rx) = oneshot::channel();
                    waiting.insert((token.clone(), side), tx);
                    Err(Some(rx))
                }
            }
        };
        match partner {
            Ok(tx) => match tx.send(mine) {
                // The partner's task splices both.
                Ok(()) => break None,
                Err(back) => socket = Some(back),
            },
            Err(None) => {
                state.metrics.reject("tunnel_side_busy");
                let (_, mut out) = forward::split(mine);
                out.close("another connection of this side is already waiting")
                    .await;
                break None;
            }
            Err(Some(mut rx)) => {
                let mut end = forward::split(mine);
                let wait = state.tunnel_limits.wait;
                let drained = state.stopping.draining.cancelled();
                let waited = if side == TunnelSide::Listen {
                    waiting::keep_alive(&mut end, &mut rx, wait, drained).await
                } else {
                    tokio::select! {
                        r = &mut rx => r.map_or(Waited::Over, Waited::Paired),
                        () = tokio::time::sleep(wait) => Waited::Over,
                        () = drained => Waited::Over,
                    }
                };
                let got = match waited {
                    Waited::Paired(partner) => Some(partner),
                    over => {
                        // A partner that comes from now on finds this end closed and waits
                        // itself; one that came just now is taken, unless this end is gone.
                        rx.close();
                        let late = rx.try_recv().ok();
                        let mut waiting = tunnels.waiting.lock().unwrap_or_else(|e| e.into_inner());
                        // Only remove our own entry (the tx is gone once a partner took it).
                        if waiting
                            .get(&(token.clone(), side))
                            .is_some_and(|tx| tx.is_closed())
                        {
                            waiting.remove(&(token.clone(), side));
                        }
                        match over {
                            Waited::Gone(why) => {
                                state.metrics.reject("tunnel_waiting_end_gone");
                                debug!(why, "a waiting tunnel end went away");
                                None
                            }
                            _ => late,
                        }
                    }
                };
                break got.map(|partner| (end, forward::split(partner)));
            }
        }
    };
    if let Some((mine, partner)) = paired {
        Metrics::inc(&state.metrics.tunnels_paired);
        let reason = splice(mine, partner, &usage, &state).await;
        debug!(
            reason,
            bytes = usage.bytes.load(Ordering::Relaxed),
            "tunnel closed"
        );
    }
    tunnels.release(&token);
}

/// Pass frames from `rx` to `tx`, counting their payloads against the session's cap.
async fn forward(
    rx: &mut Inbound,
    tx: &mut Outbound,
    usage: &Usage,
    max_bytes: u64,
    metrics: &Metrics,
) -> Ended {
    match pass_frames(rx, tx, usage, max_bytes, metrics).await {
        Err(reason) => reason,
        Ok(never) => match never {},
    }
}

async fn pass_frames(
    rx: &mut Inbound,
    tx: &mut Outbound,
    usage: &Usage,
    max_bytes: u64,
    metrics: &Metrics,
) -> Result<std::convert::Infallible, Ended> {
    loop {
        let frame = rx.header().await?;
        match frame.opcode {
            frames::OP_BINARY | frames::OP_CONTINUATION => {
                let used = usage.bytes.fetch_add(frame.len, Ordering::Relaxed) + frame.len;
                metrics.tunnel_bytes.fetch_add(frame.len, Ordering::Relaxed);
                if used > max_bytes {
                    metrics.reject("tunnel_byte_cap");
                    return Err(BYTE_CAP);
                }
                rx.pass(frame, tx).await?;
            }
            frames::OP_PING | frames::OP_PONG => rx.skip(frame.len).await?,
            frames::OP_TEXT => return Err("text frames are not allowed in a tunnel"),
            _ => return Err(CLOSED),
        }
    }
}

async fn splice(a: (Inbound, Outbound), b: (Inbound, Outbound), usage: &Usage, state: &AppState) -> Ended {
    let ((mut a_rx, mut a_tx), (mut b_rx, mut b_tx)) = (a, b);
    let limits = state.tunnel_limits;
    let left = limits.max_time.saturating_sub(usage.started.elapsed());
    let reason = tokio::select! {
        r = forward(&mut a_rx, &mut b_tx, usage, limits.max_bytes, &state.metrics) => r,
        r = forward(&mut b_rx, &mut a_tx, usage, limits.max_bytes, &state.metrics) => r,
        _ = tokio::time::sleep(left) => {
            state.metrics.reject("tunnel_time_cap");
            TIME_CAP
        }
        _ = state.stopping.now.cancelled() => "the relay is shutting down",
    };
    // A reason tells a client the tunnel ended for good (a cap, a shutdown). One end that
    // closed or vanished is not that: its peer may be reconnecting (a proxy cut it), so the
    // other end gets a close without a reason and tries again.
    let told = if reason == CLOSED { "" } else { reason };
    a_tx.close(told).await;
    b_tx.close(told).await;
    reason
}
