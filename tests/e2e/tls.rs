//! An `https://` relay: TLS terminated in front of the relay (as nginx would, here a
//! tokio-rustls proxy with a certificate from a private CA), the rendezvous and the tunnel
//! over `wss://`. Clients trust the private CA only when told to (`--relay-ca`).

use std::time::Duration;

use convey::{RelayAddr, Transport};
use convey_tests::{Recorder, Side, TestRelay, random_file, send_options, tls_proxy, transfer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_behind_tls_carries_the_rendezvous_and_the_tunnel() {
    let relay = TestRelay::spawn().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, ca, proxy) = tls_proxy(&relay, dir.path()).await;
    let https: RelayAddr = format!("https://localhost:{port}").parse().expect("address");
    let src = dir.path().join("payload.bin");
    random_file(&src, 1024, 31);

    // Without the private CA the certificate is refused, clearly.
    let mut send = send_options(&relay, src.clone());
    send.relay = https.clone();
    send.wait = Some(Duration::from_secs(5));
    let e = convey::send(send, Recorder::default().sink())
        .await
        .expect_err("untrusted certificate");
    assert!(e.to_string().contains("certificate"), "{e}");
    assert_eq!(e.exit_code(), 7);

    // Trusting it, a transfer runs entirely through TLS: rendezvous and tunnel.
    let trusted = https.with_ca(Some(ca));
    let (paths, _) = transfer(
        &relay,
        Side::new(&trusted, Transport::Relay),
        Side::new(&trusted, Transport::Relay),
        8 << 20,
    )
    .await;
    assert_eq!(paths, ["relay"]);
    proxy.abort();
    relay.server.shutdown().await;
}
