//! The client side of the relay's rendezvous WebSocket: claim a nameplate, then swap opaque
//! bodies with the other side.

use std::{collections::VecDeque, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use convey_shared::{
    Nameplate,
    protocol::{
        MAX_MESSAGE_BYTES, ProtocolVersion,
        rendezvous::{ClientMsg, Host, KEEPALIVE_EVERY, KEEPALIVE_SILENCE, Mood, ServerMsg},
    },
};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::{Error, RelayAddr, error::Result};

/// How long connecting to the relay may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the relay brings from the other side.
#[derive(Debug)]
pub(crate) enum FromPeer {
    Body(Vec<u8>),
    /// It left without a goodbye: it crashed, or only its relay connection was cut.
    Vanished,
}

#[derive(Debug)]
pub(crate) struct Rendezvous {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    relay: String,
    /// Where this connection goes (to connect again after a loss).
    pub(crate) addr: RelayAddr,
    /// The relay's STUN URL, if it runs STUN.
    pub(crate) stun: Option<String>,
    /// Messages that arrived while we waited for something else.
    inbox: VecDeque<ServerMsg>,
    /// Pinging the relay, once the session is confirmed.
    keepalive: Option<KeepAlive>,
}

/// A confirmed session's watch on its relay connection: pings on a schedule, and how long
/// the relay has left the first of them unanswered.
#[derive(Debug)]
struct KeepAlive {
    every: tokio::time::Interval,
    /// When the first ping since the relay last sent anything went out.
    unanswered_since: Option<tokio::time::Instant>,
}

impl Rendezvous {
    pub(crate) async fn connect(relay: &RelayAddr) -> Result<Self> {
        let unreachable = |reason: String| Error::RelayUnreachable {
            relay: relay.to_string(),
            reason,
            hint: "",
        };
        let mut req = relay
            .rendezvous_url()
            .into_client_request()
            .map_err(|e| unreachable(e.to_string()))?;
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(ProtocolVersion::V1.subprotocol()),
        );
        if let Some(auth) = relay.authorization() {
            let value = HeaderValue::from_str(&auth)
                .map_err(|_| unreachable("the relay token must be printable ASCII".into()))?;
            req.headers_mut().insert("Authorization", value);
        }
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE_BYTES + 4096));
        let connector = relay.connector()?;
        let (ws, _) = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_tls_with_config(req, Some(config), false, Some(connector)),
        )
        .await
        .map_err(|_| unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
        let mut rv = Self {
            ws,
            relay: relay.to_string(),
            addr: relay.clone(),
            stun: None,
            inbox: VecDeque::new(),
            keepalive: None,
        };
        match rv.next().await? {
            ServerMsg::Welcome { stun_port, .. } => {
                rv.stun = stun_port.map(|port| format!("stun:{}:{port}", relay.host()));
                Ok(rv)
            }
            other => Err(Error::Protocol(format!(
                "expected a welcome from the relay, got {other:?}"
            ))),
        }
    }

    /// From now on, ping the relay every [`KEEPALIVE_EVERY`] while waiting for a message,
    /// and take the connection as lost once it has sent nothing for [`KEEPALIVE_SILENCE`]
    /// after a ping. Only a session whose owner reads it all the time does this (the relay
    /// lets a connection that pinged and then went quiet go after the same bound).
    pub(crate) fn keep_alive(&mut self) {
        // The first ping goes out at once: from it on, the relay holds this connection to
        // the keep-alive bound.
        let mut every = tokio::time::interval(KEEPALIVE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.keepalive = Some(KeepAlive {
            every,
            unanswered_since: None,
        });
    }

    /// The next frame from the relay, pinging it meanwhile if this connection keeps alive;
    /// why the connection is lost, if it is. Cancel-safe: a ping cut off half-sent goes out
    /// with the next write.
    async fn next_frame(&mut self) -> std::result::Result<Message, String> {
        let lost = |e: tokio_tungstenite::tungstenite::Error| format!("connection lost: {e}");
        loop {
            let frame = match self.keepalive.as_mut() {
                None => self.ws.next().await,
                Some(ka) => tokio::select! {
                    // What the relay sent first: a pong waiting to be read answers the ping.
                    biased;
                    frame = self.ws.next() => {
                        ka.unanswered_since = None;
                        frame
                    }
                    _ = ka.every.tick() => {
                        let now = tokio::time::Instant::now();
                        match ka.unanswered_since {
                            Some(since) if now.duration_since(since) >= KEEPALIVE_SILENCE => {
                                let secs = KEEPALIVE_SILENCE.as_secs();
                                return Err(format!("the relay sent nothing for {secs} s, not even a pong"));
                            }
                            Some(_) => {}
                            None => ka.unanswered_since = Some(now),
                        }
                        self.ws.send(Message::Ping(Default::default())).await.map_err(lost)?;
                        continue;
                    }
                },
            };
            return match frame {
                None => Err("the relay closed the connection".into()),
                Some(frame) => frame.map_err(lost),
            };
        }
    }

    /// This connection to the relay is lost, for `reason`.
    fn unreachable(&self, reason: String) -> Error {
        Error::RelayUnreachable {
            relay: self.relay.clone(),
            reason,
            hint: "",
        }
    }

    async fn send(&mut self, msg: &ClientMsg) -> Result<()> {
        let text = serde_json::to_string(msg).expect("client messages always serialize");
        self.ws
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| self.unreachable(format!("connection lost: {e}")))
    }

    /// The next message from the relay, inbox first. Relay errors become [`Error::Relay`].
    async fn next(&mut self) -> Result<ServerMsg> {
        if let Some(m) = self.inbox.pop_front() {
            return match m {
                ServerMsg::Error { kind, message } => Err(Error::Relay { kind, message }),
                m => Ok(m),
            };
        }
        loop {
            let frame = self.next_frame().await;
            match frame.map_err(|reason| self.unreachable(reason))? {
                Message::Text(t) => {
                    let msg: ServerMsg = serde_json::from_str(&t)
                        .map_err(|e| Error::Protocol(format!("bad message from relay: {e}")))?;
                    return match msg {
                        ServerMsg::Error { kind, message } => Err(Error::Relay { kind, message }),
                        m => Ok(m),
                    };
                }
                Message::Close(_) => return Err(self.unreachable("the relay closed the connection".into())),
                _ => continue,
            }
        }
    }

    /// Let the relay pick a nameplate, and hold it as its host.
    pub(crate) async fn allocate(&mut self, host: &Host) -> Result<Nameplate> {
        self.send(&ClientMsg::Allocate {
            host: Some(host.clone()),
        })
        .await?;
        match self.next().await? {
            ServerMsg::Claimed { nameplate, .. } => Ok(nameplate),
            other => Err(Error::Protocol(format!("expected claimed, got {other:?}"))),
        }
    }

    /// Claim `n` as its host (`host`) or as a guest; returns whether a partner is already
    /// there.
    pub(crate) async fn claim(&mut self, n: Nameplate, host: Option<&Host>) -> Result<bool> {
        self.send(&ClientMsg::Claim {
            nameplate: n,
            host: host.cloned(),
        })
        .await?;
        match self.next().await? {
            ServerMsg::Claimed { peer_present, .. } => Ok(peer_present),
            other => Err(Error::Protocol(format!("expected claimed, got {other:?}"))),
        }
    }

    /// Wait until the other side claims our nameplate.
    pub(crate) async fn wait_for_peer(&mut self) -> Result<()> {
        loop {
            match self.next().await? {
                ServerMsg::PeerJoined => return Ok(()),
                m @ ServerMsg::Message { .. } => self.inbox.push_back(m),
                _ => {}
            }
        }
    }

    pub(crate) async fn send_body(&mut self, body: &[u8]) -> Result<()> {
        self.send(&ClientMsg::Send {
            body: B64.encode(body),
        })
        .await
    }

    /// The next body from the other side; [`Error::PeerGone`] if it left.
    pub(crate) async fn recv_body(&mut self) -> Result<Vec<u8>> {
        match self.recv_from_peer().await? {
            FromPeer::Body(body) => Ok(body),
            FromPeer::Vanished => Err(Error::PeerGone),
        }
    }

    /// The next body from the other side, or word that it vanished without a goodbye;
    /// [`Error::PeerGone`] if it said goodbye.
    pub(crate) async fn recv_from_peer(&mut self) -> Result<FromPeer> {
        loop {
            match self.next().await? {
                ServerMsg::Message { body } => {
                    return B64
                        .decode(body)
                        .map(FromPeer::Body)
                        .map_err(|e| Error::Protocol(format!("peer body is not base64: {e}")));
                }
                ServerMsg::PeerLeft { mood: None } => return Ok(FromPeer::Vanished),
                ServerMsg::PeerLeft { mood } => {
                    return Err(match mood {
                        Some(Mood::Scary) => Error::WrongCode,
                        _ => Error::PeerGone,
                    });
                }
                _ => {}
            }
        }
    }

    /// Let the relay's tracker serve `info_hash` while this connection is open.
    pub(crate) async fn register_swarm(&mut self, info_hash: &str) -> Result<()> {
        self.send(&ClientMsg::RegisterSwarm {
            info_hash: info_hash.to_owned(),
        })
        .await?;
        let mut held = Vec::new();
        let result = loop {
            match self.next().await {
                Ok(ServerMsg::SwarmRegistered { .. }) => break Ok(()),
                Ok(m @ (ServerMsg::Message { .. } | ServerMsg::PeerLeft { .. })) => held.push(m),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        self.inbox.extend(held);
        result
    }

    /// As the host of `nameplate` (proven by `secret`): close it to new receivers.
    pub(crate) async fn lock(&mut self, nameplate: Nameplate, secret: &str) -> Result<()> {
        self.send(&ClientMsg::Lock {
            nameplate,
            secret: secret.to_owned(),
        })
        .await
    }

    /// Make sure the relay has taken every message sent so far, within `within`: ping it
    /// and wait for the pong. The relay reads a connection in order, so by its pong it has
    /// passed on everything before the ping; over a connection that died silently (a NAT
    /// that forgot it) the pong never comes. Messages that arrive meanwhile are kept.
    pub(crate) async fn sync(&mut self, within: Duration) -> Result<()> {
        const SYNC: &[u8] = b"convey-sync";
        let wait = async {
            self.ws
                .send(Message::Ping(SYNC.to_vec().into()))
                .await
                .map_err(|e| format!("connection lost: {e}"))?;
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Pong(p))) if p[..] == *SYNC => return Ok(()),
                    Some(Ok(Message::Text(t))) => {
                        if let Ok(msg) = serde_json::from_str::<ServerMsg>(&t) {
                            self.inbox.push_back(msg);
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => {
                        return Err("the relay closed the connection".to_owned());
                    }
                    Some(Err(e)) => return Err(format!("connection lost: {e}")),
                    Some(Ok(_)) => {}
                }
            }
        };
        let r = match tokio::time::timeout(within, wait).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the relay did not answer a ping within {} s",
                within.as_secs()
            )),
        };
        r.map_err(|reason| self.unreachable(reason))
    }

    /// Say goodbye; errors are irrelevant at this point.
    pub(crate) async fn close(mut self, mood: Mood) {
        let _ = self.send(&ClientMsg::Close { mood }).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}
