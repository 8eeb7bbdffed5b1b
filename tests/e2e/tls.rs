//! An `https://` relay: TLS terminated in front of the relay (as nginx would, here a
//! tokio-rustls proxy with a certificate from a private CA), the rendezvous and the tunnel
//! over `wss://`. Clients trust the private CA only when told to (`--relay-ca`).

use std::{path::PathBuf, sync::Arc, time::Duration};

use convey::{RelayAddr, Transport};
use convey_tests::{Recorder, Side, TestRelay, random_file, send_options, transfer};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A TLS-terminating TCP proxy on 127.0.0.1 in front of `relay`, with a self-signed
/// certificate for `localhost`; returns its port, the CA file, and the accept task.
async fn tls_proxy(relay: &TestRelay, dir: &std::path::Path) -> (u16, PathBuf, tokio::task::JoinHandle<()>) {
    let signed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("certificate");
    let ca = dir.join("relay-ca.pem");
    std::fs::write(&ca, signed.cert.pem()).expect("write CA");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signed.signing_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(vec![CertificateDer::from(signed.cert.der().to_vec())], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let target = relay.server.local_addr();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            conns.spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    (port, ca, task)
}

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
