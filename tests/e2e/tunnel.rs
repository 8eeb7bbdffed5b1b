//! The relay's WebSocket tunnel at the frame level, however each end's upgrade request
//! arrives: whole in the first read, or in pieces (which the relay's listener hands to axum
//! after a second read). Each message of every length form must come out exactly as sent,
//! still masked on the wire past the relay, and a close from one end must end the other. A
//! waiting listen end is pinged, and dropped once it stops answering.

use std::{net::SocketAddr, time::Duration};

use convey_shared::protocol::tunnel::unmask_relayed;
use convey_tests::TestRelay;
use futures::{SinkExt, StreamExt};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::Role},
};

type Ws = WebSocketStream<TcpStream>;

/// The request head of one tunnel end (RFC 6455's sample key).
fn head(token: &str, side: &str, upgrade: bool) -> String {
    let ws = if upgrade {
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    } else {
        ""
    };
    format!("GET /v2/tunnel/{token}/{side} HTTP/1.1\r\nHost: relay\r\n{ws}\r\n")
}

/// Send `head` (in two pieces 150 ms apart when `split`) and read the reply head.
async fn request(at: SocketAddr, head: &str, split: bool) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(at).await.expect("connect");
    if split {
        tcp.write_all(&head.as_bytes()[..30]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(150)).await;
        tcp.write_all(&head.as_bytes()[30..]).await.expect("write");
    } else {
        tcp.write_all(head.as_bytes()).await.expect("write");
    }
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n\r\n") {
        assert!(reply.len() < 4096, "reply head too long");
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte))
            .await
            .expect("reply in time")
            .expect("read");
        if n == 0 {
            break;
        }
        reply.push(byte[0]);
    }
    (tcp, String::from_utf8_lossy(&reply).to_ascii_lowercase())
}

async fn open(at: SocketAddr, token: &str, side: &str, split: bool) -> Ws {
    let (tcp, reply) = request(at, &head(token, side, true), split).await;
    assert!(reply.starts_with("http/1.1 101"), "{reply}");
    assert!(
        reply.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "RFC 6455's sample accept key: {reply}"
    );
    WebSocketStream::from_raw_socket(tcp, Role::Client, None).await
}

/// The next data message through `ws`, unmasked, and whether it arrived masked.
async fn next(ws: &mut Ws) -> (Vec<u8>, Vec<u8>) {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("message in time")
            .expect("open")
            .expect("no error");
        if let Message::Binary(data) = msg {
            let mut relayed = data.to_vec();
            let wire = relayed.get(4..).map(<[u8]>::to_vec).unwrap_or_default();
            let payload = unmask_relayed(&mut relayed).expect("a key first").to_vec();
            return (payload, wire);
        }
    }
}

async fn exchange(at: SocketAddr, token: &str, listen_split: bool, dial_split: bool) {
    let listen = tokio::spawn({
        let token = token.to_owned();
        async move { open(at, &token, "listen", listen_split).await }
    });
    // The listen end waits for its partner; give it a moment to be first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut dial = open(at, token, "dial", dial_split).await;
    let mut listen = listen.await.expect("listen end");
    for size in [0usize, 1, 125, 126, 65_535, 65_536, 300_000] {
        let sent: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        dial.send(Message::binary(sent.clone())).await.expect("send");
        let (got, wire) = next(&mut listen).await;
        assert_eq!(
            got, sent,
            "dial -> listen, {size} bytes ({listen_split}, {dial_split})"
        );
        if size >= 126 {
            assert_ne!(wire, sent, "the relay passes payloads on still masked");
        }
        listen.send(Message::binary(sent.clone())).await.expect("send");
        let (got, _) = next(&mut dial).await;
        assert_eq!(
            got, sent,
            "listen -> dial, {size} bytes ({listen_split}, {dial_split})"
        );
    }
    // A close from one end ends the other.
    dial.close(None).await.expect("close");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = listen.next().await {
            if msg.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the other end is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_frames_pass_whichever_way_the_requests_arrive() {
    let relay = TestRelay::spawn().await;
    let at = relay.server.local_addr();
    // Both whole, one or the other in pieces, both in pieces.
    for (i, (listen_split, dial_split)) in [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        let token = format!("{i:02x}").repeat(32);
        exchange(at, &token, listen_split, dial_split).await;
    }
    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_request_that_is_not_a_websocket_upgrade_is_refused() {
    let relay = TestRelay::spawn().await;
    let at = relay.server.local_addr();
    let token = "cd".repeat(32);
    for split in [false, true] {
        let (_, reply) = request(at, &head(&token, "dial", false), split).await;
        assert!(reply.starts_with("http/1.1 400"), "split {split}: {reply}");
        let (_, reply) = request(at, &head(&token, "sideways", true), split).await;
        assert!(reply.starts_with("http/1.1 404"), "split {split}: {reply}");
    }
    relay.server.shutdown().await;
}

/// A sender's waiting listen end says nothing until its partner comes, so a NAT could forget
/// it unseen. The relay pings it every second: an end that answers (tungstenite does) waits
/// as long as it likes; one that does not (here, never read: a dead end) is dropped after 4 s
/// of silence, so a new listen end of the same tunnel is taken rather than refused as
/// "already waiting", and the dial end is paired with the live one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_listen_end_is_pinged_and_a_silent_one_dropped() {
    let relay = TestRelay::spawn().await;
    let at = relay.server.local_addr();
    let token = "5e".repeat(32);
    let (mut dead, reply) = request(at, &head(&token, "listen", true), false).await;
    assert!(reply.starts_with("http/1.1 101"), "{reply}");
    // Never answered: the relay pings it, then drops it.
    let mut heard = Vec::new();
    let dropped = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 64];
        loop {
            match dead.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => heard.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(dropped.is_ok(), "the relay dropped the silent waiting end");
    assert!(
        heard.starts_with(&[0x89, 0x00]),
        "the relay pinged it first: {heard:?}"
    );

    // A live end (read, so answering the pings; a close would fail `next`) waits past that
    // bound, until the dial end comes and speaks.
    let mut live = open(at, &token, "listen", false).await;
    let reader = tokio::spawn(async move { next(&mut live).await });
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut dial = open(at, &token, "dial", false).await;
    dial.send(Message::binary(b"hello".to_vec())).await.expect("send");
    let (got, _) = reader.await.expect("the live end's reader");
    assert_eq!(got, b"hello", "the dial end was paired with the live listen end");
    relay.server.shutdown().await;
}
