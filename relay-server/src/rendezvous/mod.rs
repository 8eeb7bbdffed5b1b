//! The rendezvous WebSocket: one connection per side, speaking
//! [`convey_shared::protocol::rendezvous`]. Bodies are opaque to the relay.

mod mailbox;

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
};

use axum::{
    extract::{
        ConnectInfo, State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    http::StatusCode,
    response::{IntoResponse, Response},
};
use convey_shared::{
    Nameplate,
    protocol::{
        MAX_MESSAGE_BYTES, ProtocolVersion,
        rendezvous::{ClientMsg, ErrorKind, Mood, ServerMsg},
    },
};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info_span};

pub(crate) use mailbox::Mailboxes;
use mailbox::{ConnId, MailboxError};

use crate::{metrics::Metrics, state::AppState, tracker::InfoHash};

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

pub(crate) async fn handler(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
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
    ws.max_message_size(MAX_MESSAGE_BYTES + 4096)
        .on_upgrade(move |socket| {
            Connection::new(conn, state)
                .run(socket)
                .instrument(info_span!("rendezvous", conn, %peer))
        })
        .into_response()
}

/// One side's connection and what it holds on the relay.
struct Connection {
    id: ConnId,
    state: AppState,
    nameplate: Option<Nameplate>,
    paired: bool,
    swarms: Vec<InfoHash>,
    mood: Option<Mood>,
    tx: mpsc::Sender<ServerMsg>,
    rx: mpsc::Receiver<ServerMsg>,
}

/// What to do after handling one client message.
enum Flow {
    Continue,
    Close,
}

impl Connection {
    fn new(id: ConnId, state: AppState) -> Self {
        let (tx, rx) = mpsc::channel(2 * convey_shared::protocol::MAX_QUEUED_MESSAGES);
        Self {
            id,
            state,
            nameplate: None,
            paired: false,
            swarms: Vec::new(),
            mood: None,
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
        let deadline = tokio::time::sleep(self.state.nameplate_ttl);
        tokio::pin!(deadline);
        'conn: loop {
            if !flush(&mut sink, &mut out).await {
                break 'conn;
            }
            tokio::select! {
                _ = self.state.shutdown.cancelled() => break,
                _ = &mut deadline, if self.nameplate.is_some() && !self.paired => {
                    out.push(error(ErrorKind::Expired, "nobody else used this code in time; start a new transfer"));
                    self.flush_and_close(&mut sink, &mut out).await;
                    break;
                }
                Some(msg) = self.rx.recv() => {
                    if msg == ServerMsg::PeerJoined {
                        self.paired = true;
                    }
                    out.push(msg);
                }
                frame = stream.next() => {
                    let text = match frame {
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Binary(_))) => {
                            out.push(error(ErrorKind::BadRequest, "binary frames are not part of the rendezvous protocol"));
                            continue;
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    };
                    let flow = match serde_json::from_str::<ClientMsg>(&text) {
                        Ok(msg) => self.handle(msg, &mut out),
                        Err(err) => {
                            out.push(error(ErrorKind::BadRequest, &format!("malformed message: {err}")));
                            Flow::Continue
                        }
                    };
                    if let Flow::Close = flow {
                        self.flush_and_close(&mut sink, &mut out).await;
                        break;
                    }
                }
            }
        }
        self.cleanup();
    }

    async fn flush_and_close(&self, sink: &mut Sink, out: &mut Vec<ServerMsg>) {
        if flush(sink, out).await {
            let _ = sink.send(Message::Close(None)).await;
        }
    }

    fn handle(&mut self, msg: ClientMsg, out: &mut Vec<ServerMsg>) -> Flow {
        match (msg, self.nameplate) {
            (ClientMsg::Allocate, None) => match self.state.mailboxes.allocate(self.id, self.tx.clone()) {
                Ok(n) => {
                    debug!(nameplate = %n, "allocated");
                    self.nameplate = Some(n);
                    out.push(ServerMsg::Claimed {
                        nameplate: n,
                        peer_present: false,
                    });
                }
                Err(e) => return self.refuse(e, out),
            },
            (ClientMsg::Claim { nameplate }, None) => {
                match self.state.mailboxes.claim(nameplate, self.id, self.tx.clone()) {
                    Ok(peer_present) => {
                        debug!(%nameplate, peer_present, "claimed");
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
                if let Err(e) = self.state.mailboxes.send(n, self.id, body) {
                    return self.refuse(e, out);
                }
            }
            (ClientMsg::RegisterSwarm { info_hash }, Some(_)) if self.paired => {
                match InfoHash::from_hex(&info_hash) {
                    Some(h) => {
                        if !self.swarms.contains(&h) {
                            self.state.swarms.register(h);
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

    fn refuse(&self, e: MailboxError, out: &mut Vec<ServerMsg>) -> Flow {
        self.state.metrics.reject(e.label());
        refuse(e, out)
    }

    fn cleanup(&mut self) {
        if let Some(n) = self.nameplate.take() {
            self.state.mailboxes.leave(n, self.id, self.mood);
        }
        for h in self.swarms.drain(..) {
            self.state.swarms.unregister(h);
        }
        debug!(mood = ?self.mood, "connection closed");
    }
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
    };
    out.push(error(kind, &e.to_string()));
    Flow::Close
}
