//! A resumable connection against the real relay's tunnel on loopback, one end driven by
//! hand: when the sender let the connection go while the tunnel was down, the receiver's end
//! closes its local socket at the first new tunnel instead of dialling for the whole grace
//! period; when the receiver comes back through a new tunnel while the old one still carries
//! its words, the sender's end moves to the new one at once.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicUsize, Ordering},
};

use convey_relay::{Server, config::Config};
use convey_shared::protocol::tunnel::{TOKEN_BYTES, TunnelSide};

use super::*;
use crate::RelayAddr;

/// Comfortably under [`GRACE`]: a dialler still trying after this missed the "gone".
const BOUND: Duration = Duration::from_secs(40);

/// The real relay on a loopback port, and its address.
async fn relay() -> (Server, RelayAddr) {
    let relay = Server::spawn(Config::with_listen(SocketAddr::from(([127, 0, 0, 1], 0))))
        .await
        .expect("relay binds");
    let addr = RelayAddr::from_socket(relay.local_addr());
    (relay, addr)
}

/// A waiting (listen) tunnel end for `token`, then the dial end that meets it.
async fn tunnel_ends(addr: &RelayAddr, token: &str) -> (Ws, Ws) {
    let listen = tunnel::connect(addr, token, TunnelSide::Listen)
        .await
        .expect("listen end");
    let dial = tunnel::connect(addr, token, TunnelSide::Dial)
        .await
        .expect("dial end");
    (listen, dial)
}

/// Two connected loopback sockets: librqbit's end and the selector's.
async fn socket_pair() -> (TcpStream, TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (local, _) = listener.accept().await.expect("accept");
    (app, local)
}

/// The next hello through a tunnel end.
async fn hello_through(ws: &mut Ws) -> Hello {
    let first = tokio::time::timeout(BOUND, tunnel::first_message(ws))
        .await
        .expect("a hello in time")
        .expect("a message");
    Hello::parse(&first).expect("a hello")
}

/// The next message through a tunnel end, as a frame.
async fn frame_through(ws: &mut Ws) -> Frame {
    let msg = tokio::time::timeout(BOUND, tunnel::first_message(ws))
        .await
        .expect("a message in time")
        .expect("a message");
    Frame::parse(msg).expect("a frame")
}

fn binary(bytes: Vec<u8>) -> Message {
    Message::Binary(bytes.into())
}

#[tokio::test]
async fn a_dialler_told_gone_closes_its_socket_at_once() {
    let (relay, addr) = relay().await;
    let token = "ab".repeat(TOKEN_BYTES);
    let (mut app, local) = socket_pair().await;

    let (mut listen, first) = tunnel_ends(&addr, &token).await;
    let redials = Arc::new(AtomicUsize::new(0));
    let redial: Redial<'static> = {
        let (addr, token, redials) = (addr.clone(), token.clone(), redials.clone());
        Box::new(move || {
            redials.fetch_add(1, Ordering::SeqCst);
            let (addr, token) = (addr.clone(), token.clone());
            Box::pin(async move { tunnel::connect(&addr, &token, TunnelSide::Dial).await })
        })
    };
    let dialler = tokio::spawn(dial(first, local, redial));

    // The sender's end answers the first hello and gets what librqbit writes.
    let hello = hello_through(&mut listen).await;
    assert!(!hello.again);
    let answer = Hello {
        conn: hello.conn,
        again: false,
        received: 0,
    };
    listen
        .send(Message::Binary(answer.encode().into()))
        .await
        .expect("answer");
    app.write_all(b"ping").await.expect("app writes");
    let data = tokio::time::timeout(BOUND, tunnel::first_message(&mut listen))
        .await
        .expect("data in time")
        .expect("a message");
    assert!(matches!(Frame::parse(data), Some(Frame::Data(d)) if &d[..] == b"ping"));

    // The sender's end vanishes; the dialler comes back through a new tunnel, and is told
    // the connection is gone.
    drop(listen);
    let mut listen = tunnel::connect(&addr, &token, TunnelSide::Listen)
        .await
        .expect("listen end");
    let again = hello_through(&mut listen).await;
    assert!(again.again && again.conn == hello.conn);
    assert!(!Resumable::default().resume(listen, again).await);

    let said = tokio::time::timeout(BOUND, dialler)
        .await
        .expect("the dialler stops once told the connection is gone")
        .expect("dialler task");
    assert_eq!(said, None);
    assert_eq!(
        redials.load(Ordering::SeqCst),
        1,
        "one new tunnel, not a dialling loop"
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(BOUND, app.read_to_end(&mut rest))
        .await
        .expect("librqbit's socket is closed")
        .expect("read");
    assert_eq!(n, 0);
    relay.shutdown().await;
}

/// A tunnel dead one way only: the receiver's end hears nothing more through it, gives up on
/// it and comes back through a new one, while its keep-alives still reach the sender's end
/// through the old. The sender's end takes the new tunnel end at once (the old is
/// superseded), sends again what the receiver had not received, carries the connection on
/// through the new tunnel and lets the old one go. Without the handover it went on with the
/// old tunnel, which never fell silent, and never answered through the new one.
#[tokio::test]
async fn a_listener_moves_to_a_new_tunnel_while_the_old_one_still_talks() {
    let (relay, addr) = relay().await;
    let token = "cd".repeat(TOKEN_BYTES);
    let (mut app, local) = socket_pair().await;
    let resumable = Resumable::default();

    // The first tunnel: the sender's end waits, the receiver's (by hand) joins and says hello.
    let (mut listen, mut old) = tunnel_ends(&addr, &token).await;
    let conn: [u8; 16] = rand::random();
    let first = Hello {
        conn,
        again: false,
        received: 0,
    };
    old.send(binary(first.encode())).await.expect("hello");
    let hello = hello_through(&mut listen).await;
    assert_eq!(hello.conn, conn);
    let listener = tokio::spawn({
        let resumable = resumable.clone();
        async move { resumable.listen(listen, local, hello).await }
    });
    let answer = hello_through(&mut old).await;
    assert!(answer.conn == conn && !answer.again);

    // Both ways through it.
    old.send(binary(Frame::Data(Bytes::from_static(b"one")).control()))
        .await
        .expect("data");
    let mut got = [0u8; 3];
    tokio::time::timeout(BOUND, app.read_exact(&mut got))
        .await
        .expect("librqbit's socket gets it in time")
        .expect("read");
    assert_eq!(&got, b"one");
    app.write_all(b"seen").await.expect("app writes");
    assert_eq!(
        frame_through(&mut old).await,
        Frame::Data(Bytes::from_static(b"seen"))
    );

    // From here nothing through the old tunnel reaches the receiver's end; what it says
    // still reaches the sender's, every second.
    app.write_all(b"unheard").await.expect("app writes");
    let (mut old_tx, mut old_rx) = old.split();
    let keep_alive = tokio::spawn(async move {
        while old_tx.send(binary(Frame::Ack(4).control())).await.is_ok() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    tokio::time::sleep(KEEPALIVE + Duration::from_secs(1)).await;

    // The receiver's end comes back through a new tunnel, having received 4 bytes.
    let (mut listen, mut new) = tunnel_ends(&addr, &token).await;
    let back = Hello {
        conn,
        again: true,
        received: 4,
    };
    new.send(binary(back.encode())).await.expect("hello");
    let again = hello_through(&mut listen).await;
    assert!(again.again && again.conn == conn);
    assert!(resumable.resume(listen, again).await, "the connection is known");

    let answer = hello_through(&mut new).await;
    assert!(answer.conn == conn && answer.again);
    assert_eq!(answer.received, 3, "the sender's end counts what it received");
    assert_eq!(
        frame_through(&mut new).await,
        Frame::Data(Bytes::from_static(b"unheard")),
        "what the receiver missed comes again"
    );
    new.send(binary(Frame::Data(Bytes::from_static(b"two")).control()))
        .await
        .expect("data");
    tokio::time::timeout(BOUND, app.read_exact(&mut got))
        .await
        .expect("librqbit's socket gets it in time")
        .expect("read");
    assert_eq!(&got, b"two");

    // The old tunnel is let go: the relay closes the receiver's end of it.
    let closed = tokio::time::timeout(BOUND, async {
        while let Some(Ok(msg)) = old_rx.next().await {
            if msg.is_close() {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the superseded tunnel is closed");
    keep_alive.abort();

    // librqbit closes its socket: the end is told, and the sender's end is done.
    drop(app);
    assert_eq!(frame_through(&mut new).await, Frame::Fin);
    tokio::time::timeout(BOUND, listener)
        .await
        .expect("the listening end stops once its socket closed")
        .expect("listener task");
    relay.shutdown().await;
}
