//! The sender's tunnel server against the real relay on loopback: a tunnel connection that
//! ends while the next end waits must not cost that waiting end (the relay would go on
//! holding the dropped one, refuse every new one, and the receiver's next connection would
//! be paired with a dead end).

use std::{net::SocketAddr, time::Duration};

use convey_relay::{Server, config::Config};
use convey_shared::protocol::tunnel::{TOKEN_BYTES, TunnelSide};
use futures::SinkExt;
use tokio::{io::AsyncReadExt, net::TcpListener};
use tokio_tungstenite::tungstenite::Message;

use super::*;

const BOUND: Duration = Duration::from_secs(10);

/// Dial the tunnel, say `hello` through it, and wait for the sender's side to take it.
async fn connection_through(addr: &RelayAddr, token: &str, target: &TcpListener, hello: &[u8]) -> TcpStream {
    let mut dial = tunnel::connect(addr, token, TunnelSide::Dial)
        .await
        .expect("dial end");
    dial.send(Message::Binary(hello.to_vec().into()))
        .await
        .expect("say something");
    let (mut local, _) = tokio::time::timeout(BOUND, target.accept())
        .await
        .expect("the tunnel server connects the tunnel to its target in time")
        .expect("accept");
    let mut got = vec![0u8; hello.len()];
    tokio::time::timeout(BOUND, local.read_exact(&mut got))
        .await
        .expect("the first message in time")
        .expect("read");
    assert_eq!(got, hello);
    // The receiver's end goes away with this function: the splice ends.
    drop(dial);
    local
}

#[tokio::test]
async fn a_tunnel_that_ends_leaves_the_next_waiting_end_in_place() {
    let relay = Server::spawn(Config::with_listen(SocketAddr::from(([127, 0, 0, 1], 0))))
        .await
        .expect("relay binds");
    let addr = RelayAddr::from_socket(relay.local_addr());
    let token = "cd".repeat(TOKEN_BYTES);
    let target = TcpListener::bind("127.0.0.1:0").await.expect("bind target");
    let server = TunnelServer::spawn(addr.clone(), token.clone(), target.local_addr().expect("target"));

    let first = connection_through(&addr, &token, &target, b"first").await;
    // The splice of the first connection ends while the server's next end waits.
    drop(first);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _second = connection_through(&addr, &token, &target, b"second").await;
    server.shutdown().await;
}
