//! The rendezvous WebSocket: one connection per side, speaking
//! [`convey_shared::protocol::rendezvous`]. Bodies are opaque to the relay.

mod mailbox;
mod store;

use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU64, Ordering},
};

use axum::{
    extract::{
        ConnectInfo, State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use convey_shared::{
    Nameplate,
    protocol::{
        ProtocolVersion,
        rendezvous::{ClientMsg, ErrorKind, KEEPALIVE_SILENCE, Mood, ServerMsg},
    },
};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span};

use mailbox::{ConnId, MailboxError};
pub(crate) use mailbox::{MAX_WAITING_GUESTS, Mailboxes, locked_error};
pub(crate) use store::{Nameplates, SharedNameplates};

use crate::{limits::client_ip, metrics::Metrics, state::AppState, tracker::InfoHash};

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Swarms one rendezvous connection may register (a transfer needs one).
const MAX_SWARMS_PER_SESSION: usize = 8;

/// Bytes read from a rendezvous socket at a time.
const READ_BUFFER: usize = 4096;

pub(crate) async fn handler(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let ws = ws.protocols(ProtocolVersion::ALL.iter().map(|v| v.subprotocol()));
    if ws.selected_protocol().is_none() {
        let supported: Vec<_> = ProtocolVersion::ALL.iter().map(|v| v.subprotocol()).collect();
        return (
            StatusCode::BAD_REQUEST,
            format!("this relay speaks {supported:?} (WebSocket sub-protocol); upgrade convey\n"),
        )
            .into_response();
    }
    let conn = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
    Metrics::inc(&state.metrics.connections);
    let ip = client_ip(peer, &headers, state.trust_forwarded_for);
    let authorized = state.admits(&headers);
    let max = state.max_message_bytes;
    let tasks = state.tasks.clone();
    // Small buffers: thousands of sessions wait here, each with a few small messages
    // (tungstenite's 128 KiB defaults cost about 135 KiB a session).
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            let span = info_span!("rendezvous", conn, %ip);
            tasks.track_future(
                Connection::new(conn, ip, authorized, state)
                    .run(socket)
                    .instrument(span),
            )
        })
        .into_response()
}

/// One side's connection and what it holds on the relay.
struct Connection {
    id: ConnId,
    ip: IpAddr,
    /// Presented the relay's access token (or the relay has none).
    authorized: bool,
    state: AppState,
    nameplate: Option<Nameplate>,
    paired: bool,
    swarms: Vec<InfoHash>,
    mood: Option<Mood>,
    /// Closed because the shared store was away (its partner is closed for that too).
    store_lost: bool,
    tx: mpsc::Sender<ServerMsg>,
    rx: mpsc::Receiver<ServerMsg>,
}

/// What to do after handling one client message.
enum Flow {
    Continue,
    Close,
}

impl Connection {
    fn new(id: ConnId, ip: IpAddr, authorized: bool, state: AppState) -> Self {
        let (tx, rx) = mpsc::channel(2 * convey_shared::protocol::MAX_QUEUED_MESSAGES);
        Self {
            id,
            ip,
            authorized,
            state,
            nameplate: None,
            paired: false,
            swarms: Vec::new(),
            mood: None,
            store_lost: false,
            tx,
            rx,
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        let mut out = vec![ServerMsg::Welcome {
            motd: None,
            stun_port: self.state.stun_port,
        }];
        let idle = self.state.idle;
        let lone_deadline = tokio::time::sleep(self.state.nameplate_ttl);
        let claim_deadline = tokio::time::sleep(idle);
        let silent_deadline = tokio::time::sleep(idle);
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + idle / 4, idle / 4);
        tokio::pin!(lone_deadline, claim_deadline, silent_deadline);
        let stopping = self.state.stopping.clone();
        let mut renewals = self.state.nameplates.renewals();
        let mut pinging = false;
        'conn: loop {
            if !flush(&mut sink, &mut out).await {
                break 'conn;
            }
            // `Some(last)`: close the connection, after sending `last` if there is one.
            let closing: Option<Option<ServerMsg>> = tokio::select! {
                _ = stopping.now.cancelled() => Some(Some(shutting_down())),
                _ = stopping.draining.cancelled(), if !self.paired => Some(Some(shutting_down())),
                _ = &mut lone_deadline, if self.nameplate.is_some() && !self.paired => {
                    Some(Some(error(ErrorKind::Expired, "nobody else used this code in time; start a new transfer")))
                }
                _ = &mut claim_deadline, if self.nameplate.is_none() => {
                    Some(Some(self.idle_error("without claiming a code")))
                }
                _ = &mut silent_deadline => Some(Some(self.idle_error("without a word (not even a pong)"))),
                () = renewed(&mut renewals), if self.nameplate.is_some() => self.store_renewed().await,
                _ = ping.tick() => {
                    if sink.send(Message::Ping(Default::default())).await.is_err() {
                        break 'conn;
                    }
                    self.keep_records_alive().await;
                    None
                }
                Some(msg) = self.rx.recv() => {
                    if msg == ServerMsg::PeerJoined {
                        self.paired = true;
                    }
                    out.push(msg);
                    None
                }
                frame = stream.next() => {
                    // A client that pings (a confirmed session's does, every few seconds)
                    // is let go once it falls silent for the keep-alive bound: it is gone
                    // behind a NAT or load balancer that forgot it, and its peer should be
                    // told, and its resume slot freed for its next connection.
                    pinging |= matches!(frame, Some(Ok(Message::Ping(_))));
                    let bound = if pinging { idle.min(KEEPALIVE_SILENCE) } else { idle };
                    silent_deadline.as_mut().reset(tokio::time::Instant::now() + bound);
                    match frame {
                        Some(Ok(Message::Text(text))) => match serde_json::from_str::<ClientMsg>(&text) {
                            Ok(msg) => match self.handle(msg, &mut out).await {
                                Flow::Continue => None,
                                Flow::Close => Some(None),
                            },
                            Err(err) => {
                                out.push(error(ErrorKind::BadRequest, &format!("malformed message: {err}")));
                                None
                            }
                        },
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                        Some(Ok(Message::Binary(_))) => {
                            out.push(error(ErrorKind::BadRequest, "binary frames are not part of the rendezvous protocol"));
                            None
                        }
                        Some(Err(err)) => {
                            debug!(%err, "unreadable frame");
                            let why = format!("the relay closed this connection: {err}");
                            Some(Some(error(ErrorKind::BadRequest, &why)))
                        }
                        Some(Ok(Message::Close(_))) | None => break,
                    }
                }
            };
            if let Some(last) = closing {
                out.extend(last);
                self.flush_and_close(&mut sink, &mut out).await;
                break;
            }
        }
        self.cleanup().await;
    }

    /// This connection is alive: so are its nameplate and registrations (shared store).
    async fn keep_records_alive(&self) {
        if let Some(n) = self.nameplate {
            let _ = self.state.nameplates.refresh(n).await;
        }
        for h in &self.swarms {
            self.state.swarms.refresh(*h, self.id).await;
        }
    }

    /// The shared store came back after a loss. A paired side may have missed messages:
    /// close it (its partner is not told) so the session meets again on its resume slot. A
    /// side still waiting goes on if its record is still there; else its code is gone.
    async fn store_renewed(&mut self) -> Option<Option<ServerMsg>> {
        let n = self.nameplate?;
        let why = if self.paired {
            "the relay's shared store was away and messages may have been lost; connect again"
        } else if self.state.nameplates.refresh(n).await {
            return None;
        } else {
            "the relay's shared store restarted and forgot this code; start again with a new code"
        };
        self.store_lost = true;
        Some(Some(error(ErrorKind::Unavailable, why)))
    }

    fn idle_error(&self, what: &str) -> ServerMsg {
        self.state.metrics.reject("idle");
        error(
            ErrorKind::Idle,
            &format!(
                "the relay closed this connection after {} s {what}; start again",
                self.state.idle.as_secs()
            ),
        )
    }

    async fn flush_and_close(&self, sink: &mut Sink, out: &mut Vec<ServerMsg>) {
        if flush(sink, out).await {
            let _ = sink.send(Message::Close(None)).await;
        }
    }

    async fn handle(&mut self, msg: ClientMsg, out: &mut Vec<ServerMsg>) -> Flow {
        match (msg, self.nameplate) {
            (ClientMsg::Allocate { .. } | ClientMsg::Claim { .. }, None) if self.rate_limited(out) => {
                return Flow::Close;
            }
            (ClientMsg::Allocate { .. }, None) if !self.authorized => {
                return self.refuse(MailboxError::Unauthorized, out);
            }
            (ClientMsg::Allocate { host: Some(h) } | ClientMsg::Claim { host: Some(h), .. }, None)
                if h.secret.len() > 64 =>
            {
                out.push(error(
                    ErrorKind::BadRequest,
                    "a host secret has at most 64 characters",
                ));
            }
            (ClientMsg::Allocate { host }, None) => {
                let host = host.unwrap_or_default();
                match self
                    .state
                    .nameplates
                    .allocate(self.id, self.tx.clone(), &host)
                    .await
                {
                    Ok(n) => {
                        debug!(nameplate = %n, many = host.many, "allocated");
                        self.nameplate = Some(n);
                        out.push(ServerMsg::Claimed {
                            nameplate: n,
                            peer_present: false,
                        });
                    }
                    Err(e) => return self.refuse(e, out),
                }
            }
            (ClientMsg::Claim { nameplate, host }, None) => {
                match self
                    .state
                    .nameplates
                    .claim(
                        nameplate,
                        self.id,
                        self.tx.clone(),
                        self.authorized,
                        host.as_ref(),
                    )
                    .await
                {
                    Ok(peer_present) => {
                        debug!(%nameplate, peer_present, host = host.is_some(), "claimed");
                        if peer_present {
                            Metrics::inc(&self.state.metrics.pairings);
                        }
                        self.nameplate = Some(nameplate);
                        self.paired = peer_present;
                        out.push(ServerMsg::Claimed {
                            nameplate,
                            peer_present,
                        });
                    }
                    Err(e) => return self.refuse(e, out),
                }
            }
            (ClientMsg::Send { body }, Some(n)) => {
                if let Err(e) = self.state.nameplates.send(n, self.id, body).await {
                    return self.refuse(e, out);
                }
            }
            (ClientMsg::Lock { nameplate, secret }, _) if !secret.is_empty() => {
                self.state.nameplates.lock(nameplate, &secret).await;
            }
            (ClientMsg::RegisterSwarm { info_hash }, Some(_)) if self.paired => {
                match InfoHash::from_hex(&info_hash) {
                    Some(_) if self.swarms.len() >= MAX_SWARMS_PER_SESSION => out.push(error(
                        ErrorKind::BadRequest,
                        "a session may register only a few swarms",
                    )),
                    Some(h) => {
                        if !self.swarms.contains(&h) {
                            self.state.swarms.register(h, self.id).await;
                            self.swarms.push(h);
                        }
                        out.push(ServerMsg::SwarmRegistered { info_hash });
                    }
                    None => out.push(error(
                        ErrorKind::BadRequest,
                        "info_hash must be 40 hex characters",
                    )),
                }
            }
            (ClientMsg::Close { mood }, _) => {
                if mood == Mood::Scary {
                    Metrics::inc(&self.state.metrics.failed_confirmations);
                }
                self.mood = Some(mood);
                return Flow::Close;
            }
            (ClientMsg::Unknown, _) => out.push(error(ErrorKind::BadRequest, "unknown message type")),
            (msg, _) => out.push(error(
                ErrorKind::BadRequest,
                &format!("{msg:?} is not allowed now"),
            )),
        }
        Flow::Continue
    }

    /// Whether this address opened too many codes lately; if so, say so.
    fn rate_limited(&self, out: &mut Vec<ServerMsg>) -> bool {
        let Err(wait) = self.state.code_rate.check(self.ip) else {
            return false;
        };
        self.state.metrics.reject("rate_limited");
        let secs = wait.as_secs() + 1;
        out.push(error(
            ErrorKind::RateLimited,
            &format!(
                "too many new codes from your address ({}); try again in {secs} s",
                self.ip
            ),
        ));
        true
    }

    fn refuse(&self, e: MailboxError, out: &mut Vec<ServerMsg>) -> Flow {
        self.state.metrics.reject(e.label());
        refuse(e, out)
    }

    async fn cleanup(&mut self) {
        if let Some(n) = self.nameplate.take() {
            if self.store_lost {
                self.state.nameplates.leave_quietly(n, self.id).await;
            } else {
                self.state.nameplates.leave(n, self.id, self.mood).await;
            }
        }
        for h in self.swarms.drain(..) {
            self.state.swarms.unregister(h, self.id).await;
        }
        debug!(mood = ?self.mood, "connection closed");
    }
}

/// Resolves when the shared store came back after a loss; never without a shared store.
async fn renewed(renewals: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    if let Some(rx) = renewals.as_mut()
        && rx.changed().await.is_ok()
    {
        return;
    }
    *renewals = None;
    std::future::pending().await
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;

/// Send every queued message; `false` once the socket is gone.
async fn flush(sink: &mut Sink, out: &mut Vec<ServerMsg>) -> bool {
    for msg in out.drain(..) {
        let text = serde_json::to_string(&msg).expect("server messages always serialize");
        if sink.send(Message::Text(text.into())).await.is_err() {
            return false;
        }
    }
    true
}

fn shutting_down() -> ServerMsg {
    error(
        ErrorKind::ShuttingDown,
        "the relay is shutting down; try again in a minute",
    )
}

fn error(kind: ErrorKind, message: &str) -> ServerMsg {
    ServerMsg::Error {
        kind,
        message: message.to_owned(),
    }
}

fn refuse(e: MailboxError, out: &mut Vec<ServerMsg>) -> Flow {
    let kind = match e {
        MailboxError::InUse => ErrorKind::InUse,
        MailboxError::Exhausted => ErrorKind::Exhausted,
        MailboxError::Backlog => ErrorKind::BadRequest,
        MailboxError::Unauthorized => ErrorKind::Unauthorized,
        MailboxError::Unavailable => ErrorKind::Unavailable,
    };
    out.push(error(kind, &e.to_string()));
    Flow::Close
}
