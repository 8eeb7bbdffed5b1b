//! The tracker's fast path: an announce whose whole request arrived in the connection's
//! first read is answered where the connection was accepted, with one write and a close.
//! BitTorrent clients open a connection per announce, so an HTTP connection task (hyper's
//! per-connection state, its orderly close waiting for the client's FIN) costs more than
//! the announce itself (`bench/relay_load.py`). Anything this path does not recognise goes
//! to axum, whose handler gives the same answer: both call [`announce_reply`].

use std::{io::Write, net::SocketAddr};

use convey_shared::protocol::ANNOUNCE_PATH;
use futures::FutureExt;

use super::{SwarmStore, announce_reply};
use crate::{limits::client_ip_from, state::AppState};

/// Most request headers looked at; a request with more goes to axum.
const MAX_HEADERS: usize = 32;

/// The whole HTTP response to `head`, if it is an announce this path answers: a complete
/// `GET /announce` request head with nothing after it (no body, no pipelined request, no
/// upgrade), on a relay whose swarms are in memory (so the answer needs no waiting).
pub(crate) fn answer(state: &AppState, remote: SocketAddr, head: &[u8]) -> Option<Vec<u8>> {
    if !matches!(*state.swarms, SwarmStore::Memory(_)) {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        _ => return None,
    }
    if req.method != Some("GET") {
        return None;
    }
    let target = req.path?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != ANNOUNCE_PATH {
        return None;
    }
    let mut forwarded_for = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = Some(h.value);
        } else if name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("transfer-encoding")
            || (name.eq_ignore_ascii_case("content-length") && h.value.trim_ascii() != b"0")
        {
            return None;
        }
    }
    let ip = client_ip_from(remote, forwarded_for, state.trust_forwarded_for);
    // The in-memory store answers on the first poll.
    let body = announce_reply(state, ip, query).now_or_never()?;
    Some(response(req.version.unwrap_or(1), body))
}

/// Status line, headers and body; the connection closes after it.
fn response(minor_version: u8, body: Result<Vec<u8>, serde_bencode::Error>) -> Vec<u8> {
    let (status, body) = match body {
        Ok(body) => ("200 OK", body),
        Err(err) => {
            tracing::error!(%err, "cannot bencode tracker reply");
            ("500 Internal Server Error", Vec::new())
        }
    };
    let mut out = Vec::with_capacity(96 + body.len());
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.{minor_version} {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, state::Stopping};

    fn state(open: bool, trust_forwarded_for: bool) -> AppState {
        let mut config = Config::with_listen("127.0.0.1:0".parse().unwrap());
        config.open_tracker = open;
        config.trust_forwarded_for = trust_forwarded_for;
        let stopping = Stopping {
            draining: Default::default(),
            now: Default::default(),
        };
        AppState::new(&config, stopping, None)
    }

    const HASH: &str = "%01%02%03%04%05%06%07%08%09%0A%0B%0C%0D%0E%0F%10%11%12%13%14";
    const PEER: &str = "-XX0001-abcdefghijkl";

    fn head(extra: &str) -> String {
        format!(
            "GET /announce?info_hash={HASH}&peer_id={PEER}&port=6881&left=0&compact=1 HTTP/1.1\r\nHost: x\r\n{extra}\r\n"
        )
    }

    #[test]
    fn answers_a_whole_announce_and_closes() {
        let st = state(true, false);
        let remote: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let reply = answer(&st, remote, head("").as_bytes()).expect("an announce");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"));
        let body = &reply[reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(
            body.starts_with(b"d8:completei1e"),
            "{}",
            String::from_utf8_lossy(body)
        );
        // A second peer gets the first one's address, as the tracker saw it.
        let other = head("").replace("abcdefghijkl", "mnopqrstuvwx");
        let reply = answer(&st, "10.0.0.7:1".parse().unwrap(), other.as_bytes()).unwrap();
        let peer = [10, 0, 0, 9, 0x1a, 0xe1]; // 10.0.0.9:6881
        assert!(reply.windows(6).any(|w| w == peer));
    }

    #[test]
    fn leaves_everything_else_to_axum() {
        let st = state(true, false);
        let remote: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let whole = head("");
        let cases = [
            whole[..whole.len() - 2].to_owned(),          // head not complete yet
            format!("{whole}GET / HTTP/1.1\r\n\r\n"),     // something after it
            whole.replacen("GET", "POST", 1),             // another method
            whole.replacen("/announce", "/scrape", 1),    // another path
            whole.replacen("/announce", "/announced", 1), // a longer path
            head("Upgrade: websocket\r\n"),               // an upgrade
            head("Content-Length: 5\r\n"),                // a body
            head("Transfer-Encoding: chunked\r\n"),       // a body
            head(&"X-A: b\r\n".repeat(MAX_HEADERS)),      // too many headers
        ];
        for case in cases {
            assert!(answer(&st, remote, case.as_bytes()).is_none(), "{case:?}");
        }
        assert!(answer(&st, remote, head("Content-Length: 0\r\n").as_bytes()).is_some());
    }

    #[test]
    fn malformed_announces_get_a_failure_reason_here_too() {
        let st = state(false, false);
        let remote: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let reply = answer(&st, remote, head("").as_bytes()).unwrap();
        assert!(String::from_utf8_lossy(&reply).contains("unregistered info_hash"));
        let bad = head("").replace("port=6881", "port=0");
        let reply = answer(&st, remote, bad.as_bytes()).unwrap();
        assert!(String::from_utf8_lossy(&reply).contains("failure reason"));
    }

    #[test]
    fn trusted_forwarded_for_names_the_peer() {
        let st = state(true, true);
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let fwd = head("X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 9.8.7.6, 5.6.7.8\r\n");
        answer(&st, proxy, fwd.as_bytes()).unwrap();
        let other = head("").replace("abcdefghijkl", "mnopqrstuvwx");
        let reply = answer(&st, proxy, other.as_bytes()).unwrap();
        assert!(reply.windows(6).any(|w| w == [5, 6, 7, 8, 0x1a, 0xe1]));
    }
}
