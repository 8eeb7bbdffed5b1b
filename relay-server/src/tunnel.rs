//! The WebSocket tunnel: the transport of last resort when the peers cannot reach each other
//! directly or over WebRTC. One `listen` and one `dial` connection with the same token are
//! paired and their binary messages spliced. The relay sees only what the peers send, which
//! is BitTorrent framing around ciphertext. Every session (token) has a byte and a time cap.

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
    extract::{
        ConnectInfo, Path, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use convey_shared::protocol::tunnel::{MAX_TUNNEL_MESSAGE, TunnelSide, is_token};
use futures::{SinkExt, StreamExt, stream::SplitSink, stream::SplitStream};
use tokio::sync::oneshot;
use tracing::{Instrument, debug, info_span};

use crate::{metrics::Metrics, state::AppState};

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
    waiting: Mutex<HashMap<(String, TunnelSide), oneshot::Sender<WebSocket>>>,
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

pub(crate) async fn handler(
    ws: WebSocketUpgrade,
    Path((token, side)): Path<(String, String)>,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let Some(side) = TunnelSide::parse(&side).filter(|_| is_token(&token)) else {
        return (StatusCode::NOT_FOUND, "no such tunnel endpoint\n").into_response();
    };
    if state.stopping.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the relay is shutting down\n").into_response();
    }
    // The sender listens; on a private relay that needs the token, the receiver dials with
    // only what the session gave it.
    if side == TunnelSide::Listen && !state.admits(&headers) {
        state.metrics.reject("unauthorized");
        return (
            StatusCode::UNAUTHORIZED,
            "this relay is private: the sender's end of a tunnel needs its access token\n",
        )
            .into_response();
    }
    let token = token.to_ascii_lowercase();
    if let Some(reason) = state.tunnels.exhausted(&token, &state.tunnel_limits) {
        return (StatusCode::FORBIDDEN, format!("{reason}\n")).into_response();
    }
    let tasks = state.tasks.clone();
    ws.max_message_size(MAX_TUNNEL_MESSAGE + 1024)
        .on_upgrade(move |socket| {
            let span = info_span!("tunnel", side = side.as_str(), %peer);
            tasks.track_future(run(socket, token, side, state).instrument(span))
        })
        .into_response()
}

async fn close(socket: &mut SplitSink<WebSocket, Message>, reason: &str) {
    let frame = CloseFrame {
        code: axum::extract::ws::close_code::POLICY,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn run(socket: WebSocket, token: String, side: TunnelSide, state: AppState) {
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
                let (mut sink, _) = mine.split();
                close(&mut sink, "another connection of this side is already waiting").await;
                break None;
            }
            Err(Some(rx)) => {
                let got = tokio::select! {
                    r = rx => r.ok(),
                    _ = tokio::time::sleep(state.tunnel_limits.wait) => None,
                    _ = state.stopping.draining.cancelled() => None,
                };
                if got.is_none() {
                    let mut waiting = tunnels.waiting.lock().unwrap_or_else(|e| e.into_inner());
                    // Only remove our own entry (the tx is gone once a partner took it).
                    if waiting
                        .get(&(token.clone(), side))
                        .is_some_and(|tx| tx.is_closed())
                    {
                        waiting.remove(&(token.clone(), side));
                    }
                }
                break got.map(|partner| (mine, partner));
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

/// Forward binary messages from `rx` to `tx`, counting them against the session's cap.
async fn forward(
    rx: &mut SplitStream<WebSocket>,
    tx: &mut SplitSink<WebSocket, Message>,
    usage: &Usage,
    max_bytes: u64,
    metrics: &Metrics,
) -> &'static str {
    while let Some(msg) = rx.next().await {
        match msg {
            Ok(Message::Binary(data)) => {
                let used = usage.bytes.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
                metrics
                    .tunnel_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if used > max_bytes {
                    metrics.reject("tunnel_byte_cap");
                    return BYTE_CAP;
                }
                if tx.send(Message::Binary(data)).await.is_err() {
                    return "peer gone";
                }
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(Message::Text(_)) => return "text frames are not allowed in a tunnel",
            Ok(Message::Close(_)) | Err(_) => return "closed",
        }
    }
    "closed"
}

async fn splice(a: WebSocket, b: WebSocket, usage: &Usage, state: &AppState) -> &'static str {
    let limits = state.tunnel_limits;
    let (mut a_tx, mut a_rx) = a.split();
    let (mut b_tx, mut b_rx) = b.split();
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
    close(&mut a_tx, reason).await;
    close(&mut b_tx, reason).await;
    reason
}
