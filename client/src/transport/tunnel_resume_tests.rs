//! A resumable connection against the real relay's tunnel on loopback, the sender's end
//! driven by hand: when the sender let the connection go while the tunnel was down, the
//! receiver's end closes its local socket at the first new tunnel instead of dialling for
//! the whole grace period.

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

#[tokio::test]
async fn a_dialler_told_gone_closes_its_socket_at_once() {
    let relay = Server::spawn(Config::with_listen(SocketAddr::from(([127, 0, 0, 1], 0))))
        .await
        .expect("relay binds");
    let addr = RelayAddr::from_socket(relay.local_addr());
    let token = "ab".repeat(TOKEN_BYTES);
    let (mut app, local) = socket_pair().await;

    let mut listen = tunnel::connect(&addr, &token, TunnelSide::Listen)
        .await
        .expect("listen end");
    let first = tunnel::connect(&addr, &token, TunnelSide::Dial)
        .await
        .expect("dial end");
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
