//! Each `--transport` end to end: the file arrives identical and the events name the path.
//! The relay tunnel test also checks that the relay never saw plaintext.

use convey::Transport;
use convey_tests::{Side, TapProxy, TestRelay};

/// Send `size` random bytes with the given transports, both sides through `via`.
async fn transfer(
    relay: &TestRelay,
    via: &convey::RelayAddr,
    sender: Transport,
    receiver: Transport,
    size: u64,
) -> (Vec<String>, Vec<u8>) {
    convey_tests::transfer(relay, Side::new(via, sender), Side::new(via, receiver), size).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_direct_never_touches_the_relay_tunnel() {
    let relay = TestRelay::spawn().await;
    let tap = TapProxy::spawn(&relay).await;
    let (paths, _) = transfer(&relay, &tap.addr, Transport::Direct, Transport::Direct, 8 << 20).await;
    assert_eq!(paths, ["direct"]);
    let seen = tap.from_relay.lock().expect("tap").len();
    assert!(
        seen < 1 << 20,
        "only rendezvous and tracker traffic went via the relay: {seen} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_relay_carries_only_ciphertext() {
    const SIZE: u64 = 8 << 20;
    let relay = TestRelay::spawn().await;
    let tap = TapProxy::spawn(&relay).await;
    let (paths, plain) = transfer(&relay, &tap.addr, Transport::Relay, Transport::Relay, SIZE).await;
    assert!(
        !paths.is_empty() && paths.iter().all(|p| p == "relay"),
        "{paths:?}"
    );
    let seen = tap.from_relay.lock().expect("tap").clone();
    assert!(
        seen.len() as u64 >= SIZE,
        "the whole transfer went through the relay: {}",
        seen.len()
    );
    // 64 windows of 24 bytes spread over the file: none may appear in what the relay relayed.
    for i in 0..64u64 {
        let at = (i * (SIZE / 64) + i * 7) as usize;
        let window = &plain[at..at + 24];
        assert!(
            memchr::memmem::find(&seen, window).is_none(),
            "plaintext at offset {at} crossed the relay"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_the_relay_when_direct_is_unavailable() {
    let relay = TestRelay::spawn().await;
    // A sender that offers no direct address leaves the receiver only the tunnel.
    let (paths, _) = transfer(&relay, &relay.addr, Transport::Relay, Transport::Auto, 4 << 20).await;
    assert_eq!(paths, ["relay"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_prefers_direct() {
    let relay = TestRelay::spawn().await;
    let (paths, _) = transfer(&relay, &relay.addr, Transport::Auto, Transport::Auto, 4 << 20).await;
    assert_eq!(paths, ["direct"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_webrtc_goes_over_a_data_channel() {
    let relay = TestRelay::spawn().await;
    assert!(relay.server.stun_addr().is_some(), "the relay serves STUN");
    let tap = TapProxy::spawn(&relay).await;
    let (paths, _) = transfer(&relay, &tap.addr, Transport::Webrtc, Transport::Webrtc, 4 << 20).await;
    assert_eq!(paths, ["webrtc"]);
    let seen = tap.from_relay.lock().expect("tap").len();
    assert!(
        seen < 1 << 20,
        "the content did not go through the relay: {seen} bytes"
    );
}
