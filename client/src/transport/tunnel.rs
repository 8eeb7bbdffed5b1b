//! The client end of the relay's WebSocket tunnel, and splicing it with a local TCP socket.
//! What arrives through the tunnel is the other peer's frames still masked, each behind its
//! masking key (see `convey_shared::protocol::tunnel`); they are unmasked here.

use bytes::{Bytes, BytesMut};
use convey_shared::protocol::tunnel::{
    MAX_TUNNEL_MESSAGE, RELAYED_KEY_BYTES, TunnelSide, WAITING_PING, WAITING_SILENT, unmask_relayed,
};
use futures::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

use crate::{Error, RelayAddr, error::Result, rendezvous::CONNECT_TIMEOUT};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bytes read from the local socket per tunnel message.
const CHUNK: usize = 256 * 1024;

/// Open one end of this session's tunnel.
pub(crate) async fn connect(relay: &RelayAddr, token: &str, side: TunnelSide) -> Result<Ws> {
    let unreachable = |reason: String| Error::RelayUnreachable {
        relay: relay.to_string(),
        reason,
        hint: "",
    };
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(MAX_TUNNEL_MESSAGE + 1024));
    let mut req = relay
        .tunnel_url(token, side)
        .into_client_request()
        .map_err(|e| unreachable(e.to_string()))?;
    if let Some(auth) = relay.authorization().filter(|_| side == TunnelSide::Listen) {
        let value = HeaderValue::from_str(&auth)
            .map_err(|_| unreachable("the relay token must be printable ASCII".into()))?;
        req.headers_mut().insert("Authorization", value);
    }
    let connector = relay.connector()?;
    let (ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::connect_async_tls_with_config(req, Some(config), true, Some(connector)),
    )
    .await
    .map_err(|_| unreachable("the tunnel endpoint did not answer".into()))?
    .map_err(|e| match e {
        // A refused upgrade, in the relay's own words.
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            let body = resp
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| resp.status().to_string());
            Error::RelayRefused(body)
        }
        e => unreachable(e.to_string()),
    })?;
    Ok(ws)
}

/// What the other peer sent in a message the relay passed on; `None` if it is malformed.
pub(crate) fn relayed(data: Bytes) -> Option<Bytes> {
    let mut data = data
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    unmask_relayed(&mut data)?;
    Some(data.split_off(RELAYED_KEY_BYTES).freeze())
}

/// Wait for the first message through a tunnel end (the other end has joined and spoken).
/// `None` when the relay closed it first (nobody joined in time), or when a relay that
/// pinged this waiting end (every [`WAITING_PING`]; tungstenite answers) fell silent for
/// [`WAITING_SILENT`] and a ping more: the end died without a word (a NAT forgot it), and the relay has
/// dropped it too. A relay that never pings is waited for as long as it keeps the end.
pub(crate) async fn first_message(ws: &mut Ws) -> Option<Bytes> {
    let mut pinged = false;
    loop {
        let next = ws.next();
        let msg = if pinged {
            tokio::time::timeout(WAITING_SILENT + WAITING_PING, next)
                .await
                .ok()?
        } else {
            next.await
        };
        match msg? {
            Ok(Message::Binary(data)) => return relayed(data),
            Ok(Message::Ping(_)) => pinged = true,
            Ok(Message::Pong(_) | Message::Frame(_)) => {}
            Ok(Message::Text(_) | Message::Close(_)) | Err(_) => return None,
        }
    }
}

/// How a spliced tunnel connection ended.
#[derive(Debug, Default)]
pub(crate) struct SpliceEnd {
    /// Bytes sent into the tunnel.
    pub(crate) up: u64,
    /// Bytes that came out of it.
    pub(crate) down: u64,
    /// The reason the relay gave when it closed the tunnel (a cap, a shutdown).
    pub(crate) relay_said: Option<String>,
}

/// Copy bytes both ways between `ws` and `tcp` until either side ends; `first` is written
/// to `tcp` before anything else.
pub(crate) async fn splice(ws: Ws, mut tcp: TcpStream, first: Option<Bytes>) -> SpliceEnd {
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut tcp_rx, mut tcp_tx) = tcp.split();
    let (mut up, mut down) = (0u64, 0u64);
    let mut relay_said = None;
    let to_tunnel = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match tcp_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if ws_tx
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    up += n as u64;
                }
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    let from_tunnel = async {
        if let Some(data) = first {
            if tcp_tx.write_all(&data).await.is_err() {
                return;
            }
            down += data.len() as u64;
        }
        while let Some(msg) = ws_rx.next().await {
            match msg {
                Ok(Message::Binary(data)) => {
                    let Some(data) = relayed(data) else { break };
                    if tcp_tx.write_all(&data).await.is_err() {
                        break;
                    }
                    down += data.len() as u64;
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Ok(Message::Close(Some(frame))) if !frame.reason.is_empty() => {
                    relay_said = Some(frame.reason.to_string());
                    break;
                }
                Ok(Message::Text(_) | Message::Close(_)) | Err(_) => break,
            }
        }
        let _ = tcp_tx.shutdown().await;
    };
    // Either direction ending ends the connection: BitTorrent has no half-closed state.
    tokio::select! {
        () = to_tunnel => {},
        () = from_tunnel => {},
    }
    SpliceEnd { up, down, relay_said }
}
