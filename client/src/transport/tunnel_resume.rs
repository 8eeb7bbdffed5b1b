//! Both ends of a resumable tunnel connection ([`convey_shared::protocol::tunnel_resume`]):
//! the receiver's path selector dials, and dials again when the tunnel under it is lost,
//! while librqbit's local socket stays open; the sender's tunnel server hands each new tunnel
//! end for a connection it knows to the task that holds that connection's local socket.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use convey_shared::protocol::tunnel_resume::{
    DATA, Frame, Hello, KEEPALIVE, Received, Replay, SILENCE, WINDOW,
};
use futures::{SinkExt, StreamExt, future::BoxFuture};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::mpsc,
};
use tokio_tungstenite::tungstenite::Message;

use super::tunnel::{self, Ws};
use crate::backoff::Backoff;

/// How long a connection waits for a new tunnel once its tunnel is lost: as long as a
/// session waits for a lost relay.
pub(crate) const GRACE: Duration = crate::relay_link::RELAY_GRACE;
/// How long an end waits for the other's hello through a new tunnel. An end that is there
/// answers at once; the relay itself would hold an unpaired end for minutes.
const HELLO_TIMEOUT: Duration = Duration::from_secs(20);
/// Bytes read from the local socket per message.
const CHUNK: usize = 256 * 1024;

/// The local end of one resumable connection, and what it sent and received.
struct Local {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    replay: Replay,
    received: Received,
}

/// How one tunnel's stint ended.
enum Stint {
    /// The connection is over: a side's local socket closed, or the relay ended the tunnel
    /// with a reason (a cap, a shutdown), given here.
    Over(Option<String>),
    /// The tunnel was lost under a connection that goes on.
    Lost,
    /// A new tunnel end for the connection came (the other end gave up on this tunnel): the
    /// end, and what the other end received.
    Superseded(Box<Ws>, u64),
}

impl Local {
    fn new(local: TcpStream) -> Self {
        local.set_nodelay(true).ok();
        let (read, write) = local.into_split();
        Self {
            read,
            write,
            replay: Replay::default(),
            received: Received::default(),
        }
    }

    fn hello(&self, conn: [u8; 16], again: bool) -> Message {
        let hello = Hello {
            conn,
            again,
            received: self.received.total,
        };
        Message::Binary(hello.encode().into())
    }

    /// Carry the connection over `ws`, whose other end had received `peer_received` bytes:
    /// first what it lacks of what was sent before, then both ways until the tunnel or the
    /// connection ends, nothing came through it for [`SILENCE`] (an end says something at
    /// least every [`KEEPALIVE`]), or a new tunnel end for it came through `handover`.
    async fn stint(&mut self, ws: Ws, peer_received: u64, mut handover: Option<&mut Handovers>) -> Stint {
        let (mut tx, mut rx) = ws.split();
        let Some(again) = self.replay.resend(peer_received) else {
            tracing::debug!(peer_received, "the other end counts bytes never sent");
            return Stint::Over(None);
        };
        for msg in again {
            if tx.send(Message::Binary(msg)).await.is_err() {
                return Stint::Lost;
            }
        }
        let mut buf = vec![0u8; CHUNK + 1];
        buf[0] = DATA;
        let Self {
            read,
            write,
            replay,
            received,
        } = self;
        let (mut heard, mut said) = (Instant::now(), Instant::now());
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if heard.elapsed() >= SILENCE {
                        tracing::debug!("nothing through the tunnel for {}s; taking it as lost", SILENCE.as_secs());
                        return Stint::Lost;
                    }
                    if said.elapsed() >= KEEPALIVE {
                        said = Instant::now();
                        if tx.send(Message::Binary(received.ack_all().into())).await.is_err() {
                            return Stint::Lost;
                        }
                    }
                }
                Some((ws, peer_received)) = next_end(&mut handover) => {
                    return Stint::Superseded(Box::new(ws), peer_received);
                }
                r = read.read(&mut buf[1..]), if replay.in_flight() < WINDOW => match r {
                    Ok(0) | Err(_) => {
                        tracing::debug!("the local socket under a resumable connection closed");
                        let _ = tx.send(Message::Binary(Frame::Fin.control().into())).await;
                        let _ = tx.send(Message::Close(None)).await;
                        return Stint::Over(None);
                    }
                    Ok(n) => {
                        let msg = Bytes::copy_from_slice(&buf[..=n]);
                        replay.push(msg.clone());
                        said = Instant::now();
                        if tx.send(Message::Binary(msg)).await.is_err() {
                            return Stint::Lost;
                        }
                    }
                },
                msg = rx.next() => match msg {
                    Some(Ok(Message::Binary(data))) => {
                        heard = Instant::now();
                        match tunnel::relayed(data).and_then(Frame::parse) {
                            Some(Frame::Data(bytes)) => {
                                if write.write_all(&bytes).await.is_err() {
                                    let _ = tx.send(Message::Binary(Frame::Fin.control().into())).await;
                                    return Stint::Over(None);
                                }
                                if let Some(ack) = received.add(bytes.len()) {
                                    said = Instant::now();
                                    if tx.send(Message::Binary(ack.into())).await.is_err() {
                                        return Stint::Lost;
                                    }
                                }
                            }
                            Some(Frame::Ack(n)) if replay.acked(n) => {}
                            // The other end closed its socket or forgot the connection, or
                            // sent something no end of ours sends.
                            _ => return Stint::Over(None),
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(Some(frame)))) if !frame.reason.is_empty() => {
                        return Stint::Over(Some(frame.reason.to_string()));
                    }
                    Some(Ok(Message::Text(_))) => return Stint::Over(None),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return Stint::Lost,
                },
            }
        }
    }

    async fn close(mut self) {
        let _ = self.write.shutdown().await;
    }
}

/// What came back through a tunnel for the hello an end sent.
enum Answer {
    /// The other end's hello for the same connection.
    Hello(Hello),
    /// The other end no longer has the connection (it closed its socket, or gave up waiting).
    Gone,
    /// Nothing usable: no answer in time, the tunnel closed, or bytes no end of ours sends.
    Nothing,
}

/// The next tunnel end handed over, if there is a way for one to come; never otherwise.
async fn next_end(handover: &mut Option<&mut Handovers>) -> Option<(Ws, u64)> {
    match handover {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Wait for the other end's answer to a hello for `conn` through `ws`.
async fn their_answer(ws: &mut Ws, conn: [u8; 16]) -> Answer {
    let Ok(Some(first)) = tokio::time::timeout(HELLO_TIMEOUT, tunnel::first_message(ws)).await else {
        return Answer::Nothing;
    };
    if let Some(hello) = Hello::parse(&first) {
        return if hello.conn == conn {
            Answer::Hello(hello)
        } else {
            Answer::Nothing
        };
    }
    match Frame::parse(first) {
        Some(Frame::Gone) => Answer::Gone,
        _ => Answer::Nothing,
    }
}

/// A new tunnel to the other end, or an error for the log.
pub(crate) type Redial<'a> = Box<dyn Fn() -> BoxFuture<'a, crate::error::Result<Ws>> + Send + Sync + 'a>;

/// The dialling end: carry `local` over `ws`, and over a new tunnel from `redial` each time
/// one is lost, for up to [`GRACE`] after the loss. Returns the relay's reason when it ended
/// the tunnel for good.
pub(crate) async fn dial(mut ws: Ws, local: TcpStream, redial: Redial<'_>) -> Option<String> {
    let conn: [u8; 16] = rand::random();
    let mut local = Local::new(local);
    let mut again = false;
    loop {
        let said = match ws.send(local.hello(conn, again)).await {
            Ok(()) => match their_answer(&mut ws, conn).await {
                Answer::Hello(hello) => match local.stint(ws, hello.received, None).await {
                    Stint::Over(said) => Some(said),
                    Stint::Lost | Stint::Superseded(..) => None,
                },
                // The other end let the connection go while the tunnel was down: close ours
                // at once, so that librqbit dials a new one.
                Answer::Gone => Some(None),
                // No answer through a new tunnel: it may be the relay that is still away.
                Answer::Nothing if again => None,
                Answer::Nothing => Some(None),
            },
            Err(_) => None,
        };
        if let Some(said) = said {
            local.close().await;
            return said;
        }
        tracing::debug!("the tunnel under a connection was lost; dialling it again");
        let Some(next) = redial_within(&redial, GRACE).await else {
            tracing::debug!("no new tunnel within the grace period");
            local.close().await;
            return None;
        };
        ws = next;
        again = true;
    }
}

/// Open a new tunnel with backoff, for at most `within`.
async fn redial_within(redial: &Redial<'_>, within: Duration) -> Option<Ws> {
    let deadline = tokio::time::Instant::now() + within;
    let mut backoff = Backoff::default();
    loop {
        if let Ok(Ok(ws)) = tokio::time::timeout_at(deadline, redial()).await {
            return Some(ws);
        }
        if !backoff.wait_within(deadline).await {
            return None;
        }
    }
}

/// Where a new tunnel end for a connection goes: the end, and what the other side received.
type Handover = mpsc::Sender<(Ws, u64)>;
/// Where the task holding a connection takes new tunnel ends from.
type Handovers = mpsc::Receiver<(Ws, u64)>;

/// The sender's resumable connections, by id.
#[derive(Debug, Default, Clone)]
pub(crate) struct Resumable {
    conns: Arc<Mutex<HashMap<[u8; 16], Handover>>>,
}

impl Resumable {
    /// A tunnel end whose first message was `hello` continues a known connection: hand it
    /// over. `false` (and the end told so) if no such connection is waiting.
    pub(crate) async fn resume(&self, mut ws: Ws, hello: Hello) -> bool {
        let to = self
            .conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hello.conn)
            .cloned();
        match to {
            Some(to) => to.send((ws, hello.received)).await.is_ok(),
            None => {
                let _ = ws.send(Message::Binary(Frame::Gone.control().into())).await;
                let _ = ws.send(Message::Close(None)).await;
                false
            }
        }
    }

    /// The listening end of a new connection that `hello` opened: carry `local` over `ws`
    /// and over each tunnel end [`Resumable::resume`] hands on, until the connection ends or
    /// no new tunnel came within [`GRACE`] of a loss.
    pub(crate) async fn listen(&self, ws: Ws, local: TcpStream, hello: Hello) {
        let (tx, mut rx) = mpsc::channel(1);
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(hello.conn, tx);
        let mut local = Local::new(local);
        let mut next = Some((ws, hello.received));
        let mut again = false;
        while let Some((mut ws, peer_received)) = next.take() {
            let end = match ws.send(local.hello(hello.conn, again)).await {
                Ok(()) => local.stint(ws, peer_received, Some(&mut rx)).await,
                Err(_) => Stint::Lost,
            };
            again = true;
            match end {
                Stint::Over(_) => break,
                Stint::Lost => {
                    tracing::debug!("the tunnel under a connection was lost; waiting for a new one");
                    next = tokio::time::timeout(GRACE, rx.recv()).await.ok().flatten();
                }
                Stint::Superseded(ws, peer_received) => next = Some((*ws, peer_received)),
            }
        }
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&hello.conn);
        local.close().await;
    }
}

#[cfg(test)]
#[path = "tunnel_resume_tests.rs"]
mod tests;
