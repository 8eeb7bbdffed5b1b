//! Conformance of the bundled tracker, over real HTTP: announce events, compact and
//! dictionary replies, IPv4 and IPv6 peers, scrape, the `numwant` cap, a clear `failure
//! reason` for every malformed request (and the server keeps serving), and the closed
//! default that serves only registered info-hashes.

use std::{collections::HashMap, net::SocketAddr};

use convey_tests::{TestRelay, http_get};
use serde_bencode::value::Value;

type Dict = HashMap<Vec<u8>, Value>;

fn pct(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn decode(body: &[u8]) -> Dict {
    match serde_bencode::from_bytes::<Value>(body).expect("bencoded reply") {
        Value::Dict(d) => d,
        other => panic!("reply is not a dictionary: {other:?}"),
    }
}

fn int(d: &Dict, key: &str) -> i64 {
    match d.get(key.as_bytes()) {
        Some(Value::Int(n)) => *n,
        other => panic!("{key} is not an integer: {other:?}"),
    }
}

fn bytes<'a>(d: &'a Dict, key: &str) -> &'a [u8] {
    match d.get(key.as_bytes()) {
        Some(Value::Bytes(b)) => b,
        other => panic!("{key} is not a byte string: {other:?}"),
    }
}

fn failure(d: &Dict) -> Option<String> {
    d.get(b"failure reason".as_slice()).map(|v| match v {
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("failure reason is not a string: {other:?}"),
    })
}

/// Announce for `peer` (one byte repeated) on `hash`, with `extra` query parameters.
async fn announce(via: SocketAddr, hash: u8, peer: u8, port: u16, extra: &str) -> Dict {
    let q = format!(
        "/announce?info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0{extra}",
        pct(&[hash; 20]),
        pct(&[peer; 20])
    );
    let (status, body) = http_get(via, &q).await;
    assert_eq!(status, 200, "trackers answer 200 even for failures");
    decode(&body)
}

async fn scrape(via: SocketAddr, hashes: &[u8]) -> Dict {
    let q: Vec<String> = hashes
        .iter()
        .map(|h| format!("info_hash={}", pct(&[*h; 20])))
        .collect();
    let (status, body) = http_get(via, &format!("/scrape?{}", q.join("&"))).await;
    assert_eq!(status, 200);
    decode(&body)
}

/// The scrape counts of `hash`: (complete, downloaded, incomplete), or `None` if absent.
fn scrape_counts(reply: &Dict, hash: u8) -> Option<(i64, i64, i64)> {
    let Some(Value::Dict(files)) = reply.get(b"files".as_slice()) else {
        panic!("scrape without files: {reply:?}");
    };
    match files.get([hash; 20].as_slice())? {
        Value::Dict(f) => Some((int(f, "complete"), int(f, "downloaded"), int(f, "incomplete"))),
        other => panic!("scrape entry is not a dictionary: {other:?}"),
    }
}

fn compact_v4(port: u16) -> Vec<u8> {
    let mut v = vec![127, 0, 0, 1];
    v.extend_from_slice(&port.to_be_bytes());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announces_scrapes_and_events_behave_like_a_tracker() {
    // Dual-stack on [::], so the same tracker is reached over IPv4 and IPv6 loopback.
    let relay = TestRelay::spawn_with(|c| {
        c.listen = "[::]:0".parse().expect("addr");
        c.open_tracker = true;
        c.announce_interval_secs = 60;
    })
    .await;
    let port = relay.server.local_addr().port();
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let v6: SocketAddr = format!("[::1]:{port}").parse().expect("v6 addr");

    // A seeder starts: nobody else yet, and every reply carries interval and peers.
    let a = announce(v4, 7, 0xA, 1111, "&left=0&compact=1&event=started").await;
    assert_eq!(failure(&a), None, "{a:?}");
    assert_eq!(int(&a, "interval"), 60);
    assert!(bytes(&a, "peers").is_empty());
    assert_eq!((int(&a, "complete"), int(&a, "incomplete")), (1, 0));

    // A leecher over IPv4 gets the seeder, compact.
    let b = announce(v4, 7, 0xB, 2222, "&left=10&compact=1&event=started").await;
    assert_eq!(bytes(&b, "peers"), compact_v4(1111).as_slice());
    assert_eq!((int(&b, "complete"), int(&b, "incomplete")), (1, 1));

    // The same request without compact gets dictionaries with ip, port and peer id.
    let b = announce(v4, 7, 0xB, 2222, "&left=10&compact=0").await;
    let Some(Value::List(peers)) = b.get(b"peers".as_slice()) else {
        panic!("non-compact peers are a list: {b:?}");
    };
    let Value::Dict(p) = &peers[0] else {
        panic!("a peer is a dictionary")
    };
    assert_eq!(bytes(p, "ip"), b"127.0.0.1");
    assert_eq!(int(p, "port"), 1111);
    assert_eq!(bytes(p, "peer id"), [0xA; 20].as_slice());

    // A third peer over IPv6: the seeder sees it in `peers6` (BEP 7).
    let c = announce(v6, 7, 0xC, 3333, "&left=10&compact=1&event=started").await;
    assert_eq!(failure(&c), None, "{c:?}");
    let a = announce(v4, 7, 0xA, 1111, "&left=0&compact=1").await;
    let mut six = std::net::Ipv6Addr::LOCALHOST.octets().to_vec();
    six.extend_from_slice(&3333u16.to_be_bytes());
    assert_eq!(bytes(&a, "peers6"), six.as_slice());
    assert_eq!(bytes(&a, "peers"), compact_v4(2222).as_slice());

    // numwant=0 asks for no peers; the scrape counts completed downloads.
    let b = announce(v4, 7, 0xB, 2222, "&left=0&compact=1&event=completed&numwant=0").await;
    assert!(bytes(&b, "peers").is_empty());
    let s = scrape(v4, &[7, 9]).await;
    assert_eq!(scrape_counts(&s, 7), Some((2, 1, 1)));
    assert_eq!(scrape_counts(&s, 9), None, "unknown swarms are left out");

    // A stopped peer disappears at once.
    announce(v4, 7, 0xA, 1111, "&left=0&compact=1&event=stopped").await;
    let c = announce(v6, 7, 0xC, 3333, "&left=10&compact=1").await;
    assert_eq!(bytes(&c, "peers"), compact_v4(2222).as_slice(), "only B is left");
    assert_eq!(scrape_counts(&scrape(v4, &[7]).await, 7), Some((1, 1, 1)));

    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numwant_is_capped_by_the_operator() {
    let relay = TestRelay::spawn_with(|c| {
        c.open_tracker = true;
        c.tracker_max_numwant = 2;
    })
    .await;
    let at = relay.server.local_addr();
    for peer in 1..=4 {
        announce(at, 3, peer, 1000 + u16::from(peer), "&left=5").await;
    }
    let r = announce(at, 3, 9, 1009, "&left=5&numwant=50").await;
    assert_eq!(bytes(&r, "peers").len(), 2 * 6, "two peers of six bytes");
    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_request_gets_a_reason_and_the_server_keeps_serving() {
    let relay = TestRelay::spawn_with(|c| c.open_tracker = true).await;
    let at = relay.server.local_addr();
    let (h, p) = (pct(&[5; 20]), pct(&[6; 20]));
    let long = "x".repeat(5000);
    let cases = [
        (format!("peer_id={p}&port=1"), "missing info_hash"),
        (
            format!("info_hash=%01%02&peer_id={p}&port=1"),
            "info_hash must be 20 bytes",
        ),
        (format!("info_hash={h}&port=1"), "missing peer_id"),
        (
            format!("info_hash={h}&peer_id=abc&port=1"),
            "peer_id must be 20 bytes",
        ),
        (format!("info_hash={h}&peer_id={p}"), "missing port"),
        (
            format!("info_hash={h}&peer_id={p}&port=0"),
            "port must be between",
        ),
        (
            format!("info_hash={h}&peer_id={p}&port=99999"),
            "port must be between",
        ),
        (
            format!("info_hash={h}&peer_id={p}&port=http"),
            "port must be a whole number",
        ),
        (
            format!("info_hash={h}&peer_id={p}&port=1&numwant=-5"),
            "numwant must be a whole number",
        ),
        (
            format!("info_hash={h}&peer_id={p}&port=1&numwant=99999999"),
            "numwant 99999999 is absurd",
        ),
        (
            format!("info_hash={h}&peer_id={p}&port=1&event=exploded"),
            "event must be",
        ),
        (
            format!("info_hash={h}&peer_id={p}&port=1&left=lots"),
            "left must be a whole number",
        ),
        (
            format!("info_hash={h}&peer_id={p}&port=1&pad={long}"),
            "request too large",
        ),
    ];
    for (query, reason) in cases {
        let (status, body) = http_get(at, &format!("/announce?{query}")).await;
        assert_eq!(status, 200);
        let reply = decode(&body);
        let got = failure(&reply).unwrap_or_else(|| panic!("no failure reason for {query}"));
        assert!(got.contains(reason), "{query}: {got:?} should say {reason:?}");
        assert!(reply.contains_key(b"interval".as_slice()));
        let (ok, body) = http_get(at, "/healthz").await;
        assert_eq!(
            (ok, body.as_slice()),
            (200, b"ok\n".as_slice()),
            "still serving after {query}"
        );
    }
    let (_, body) = http_get(at, "/scrape").await;
    assert!(failure(&decode(&body)).is_some_and(|r| r.contains("needs at least one info_hash")));
    let (_, body) = http_get(at, "/scrape?info_hash=%01").await;
    assert!(failure(&decode(&body)).is_some_and(|r| r.contains("info_hash must be 20 bytes")));
    relay.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_only_registered_info_hashes_are_served() {
    let relay = TestRelay::spawn().await;
    let r = announce(relay.server.local_addr(), 1, 2, 6881, "&left=0&compact=1").await;
    let reason = failure(&r).expect("refused");
    assert!(reason.contains("unregistered info_hash"), "{reason}");
    assert!(r.contains_key(b"interval".as_slice()));
    // A scrape reveals nothing about hashes this relay does not serve.
    assert_eq!(
        scrape_counts(&scrape(relay.server.local_addr(), &[1]).await, 1),
        None
    );
    relay.server.shutdown().await;
}

/// An announce carrying `X-Forwarded-For: forwarded`, as a reverse proxy would send it.
async fn announce_forwarded(via: SocketAddr, peer: u8, port: u16, forwarded: &str) -> Dict {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let q = format!(
        "/announce?info_hash={}&peer_id={}&port={port}&left=5",
        pct(&[8; 20]),
        pct(&[peer; 20])
    );
    let mut s = tokio::net::TcpStream::connect(via).await.expect("connect");
    s.write_all(format!("GET {q} HTTP/1.0\r\nHost: x\r\nX-Forwarded-For: {forwarded}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("reply")
        .expect("read");
    let body = memchr::memmem::find(&out, b"\r\n\r\n").expect("head") + 4;
    decode(&out[body..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_peers_get_the_clients_address() {
    for trusted in [true, false] {
        let relay = TestRelay::spawn_with(|c| {
            c.open_tracker = true;
            c.trust_forwarded_for = trusted;
        })
        .await;
        let at = relay.server.local_addr();
        announce_forwarded(at, 1, 1111, "203.0.113.9, 198.51.100.7").await;
        let reply = announce_forwarded(at, 2, 2222, "198.51.100.8").await;
        let mut want = if trusted {
            vec![198, 51, 100, 7]
        } else {
            vec![127, 0, 0, 1]
        };
        want.extend_from_slice(&1111u16.to_be_bytes());
        assert_eq!(bytes(&reply, "peers"), want.as_slice(), "trusted: {trusted}");
        relay.server.shutdown().await;
    }
}

/// Send `parts` of one request on a fresh connection, pausing `gap` before each, and read
/// the reply until the relay closes: (head, bencoded body).
async fn raw_request(via: SocketAddr, parts: &[&str], gap: std::time::Duration) -> (String, Dict) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(via).await.expect("connect");
    for part in parts {
        tokio::time::sleep(gap).await;
        s.write_all(part.as_bytes()).await.expect("write");
    }
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the relay answers and closes")
        .expect("read");
    let split = memchr::memmem::find(&out, b"\r\n\r\n").expect("head");
    (
        String::from_utf8_lossy(&out[..split]).to_ascii_lowercase(),
        decode(&out[split + 4..]),
    )
}

/// However the request arrives (whole at once, which the listener answers itself; in
/// pieces, or after the client sat silent, which go to axum), the reply is the same, and
/// the connection closes after it, keep-alive asked for or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announces_get_the_same_answer_however_the_request_arrives() {
    use std::time::Duration;
    let relay = TestRelay::spawn_with(|c| c.open_tracker = true).await;
    let at = relay.server.local_addr();
    announce(at, 5, 0xA, 1111, "&left=0&compact=1").await;
    let request = |peer: u8| {
        format!(
            "GET /announce?info_hash={}&peer_id={}&port=2222&left=9&compact=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            pct(&[5; 20]),
            pct(&[peer; 20])
        )
    };
    let whole = request(0xB);
    let (head, at_once) = raw_request(at, &[&whole], Duration::ZERO).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("connection: close"),
        "keep-alive is not offered: {head}"
    );
    assert_eq!(bytes(&at_once, "peers"), compact_v4(1111).as_slice());

    let split = request(0xC);
    let (head, pieces) = raw_request(at, &[&split[..30], &split[30..]], Duration::from_millis(150)).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    // Seeder A and leecher B; counts as for B plus this leecher.
    assert_eq!((int(&pieces, "complete"), int(&pieces, "incomplete")), (1, 2));
    assert_eq!(bytes(&pieces, "peers").len(), 12, "A and B: {pieces:?}");

    // Silent past the kernel's deferred accept (5 s), then the request.
    let late = request(0xD);
    let (head, after_silence) = raw_request(at, &[&late], Duration::from_secs(7)).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(
        (int(&after_silence, "complete"), int(&after_silence, "incomplete")),
        (1, 3)
    );

    // Other endpoints still work on the same listener, whole or in pieces.
    let (status, body) = http_get(at, "/healthz").await;
    assert_eq!((status, body.as_slice()), (200, b"ok\n".as_slice()));
    relay.server.shutdown().await;
}
