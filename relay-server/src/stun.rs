//! A minimal STUN server (RFC 5389 Binding only) on its own UDP port, so a self-hosted relay
//! gives WebRTC peers their public address with no third-party STUN server. Messages are
//! parsed and built with the `rtc-stun` crate; anything that is not a Binding request is
//! dropped.

use std::net::SocketAddr;

use rtc_stun::{
    fingerprint::FINGERPRINT,
    message::{BINDING_REQUEST, BINDING_SUCCESS, Message, Setter},
    xoraddr::XorMappedAddress,
};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

/// The Binding success response for `request` from `from`, or `None` if it is not a
/// Binding request.
fn respond(request: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let mut req = Message::new();
    req.raw = request.to_vec();
    req.decode().ok()?;
    if req.typ != BINDING_REQUEST {
        return None;
    }
    let mut resp = Message::new();
    // A dual-stack socket sees an IPv4 client as ::ffff:a.b.c.d; it is told its IPv4 address.
    let mapped = XorMappedAddress {
        ip: from.ip().to_canonical(),
        port: from.port(),
    };
    let setters: [Box<dyn Setter>; 4] = [
        Box::new(req.transaction_id),
        Box::new(BINDING_SUCCESS),
        Box::new(mapped),
        Box::new(FINGERPRINT),
    ];
    resp.build(&setters).ok()?;
    Some(resp.raw)
}

/// The STUN socket for `addr`. The unspecified IPv6 address (the default) serves IPv4 and
/// IPv6 alike; on a host without IPv6 it falls back to the unspecified IPv4 address.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    match UdpSocket::bind(addr).await {
        Ok(s) => Ok(s),
        Err(e) if addr.ip() == std::net::Ipv6Addr::UNSPECIFIED => {
            tracing::debug!(%e, "no IPv6 for STUN; listening on IPv4 only");
            UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, addr.port())).await
        }
        Err(e) => Err(e),
    }
}

/// Answer Binding requests on `socket` until `cancel`.
pub(crate) async fn serve(socket: UdpSocket, cancel: CancellationToken) {
    let mut buf = vec![0u8; 1500];
    loop {
        let (n, from) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(err) => {
                    tracing::debug!(%err, "STUN receive failed");
                    continue;
                }
            },
            () = cancel.cancelled() => return,
        };
        if let Some(resp) = respond(&buf[..n], from) {
            let _ = socket.send_to(&resp, from).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_stun::message::Getter;

    #[test]
    fn an_ipv4_client_of_a_dual_stack_socket_is_told_its_ipv4_address() {
        let mut req = Message::new();
        let setters: [Box<dyn Setter>; 2] = [
            Box::new(rtc_stun::message::TransactionId::new()),
            Box::new(BINDING_REQUEST),
        ];
        req.build(&setters).unwrap();
        let from: SocketAddr = "[::ffff:198.51.100.7]:40000".parse().unwrap();
        let mut resp = Message::new();
        resp.raw = respond(&req.raw, from).expect("a response");
        resp.decode().unwrap();
        let mut got = XorMappedAddress {
            ip: std::net::Ipv4Addr::UNSPECIFIED.into(),
            port: 0,
        };
        got.get_from(&resp).unwrap();
        assert_eq!(got.ip, "198.51.100.7".parse::<std::net::IpAddr>().unwrap());
    }

    #[test]
    fn answers_a_binding_request_with_the_mapped_address() {
        let mut req = Message::new();
        let setters: [Box<dyn Setter>; 2] = [
            Box::new(rtc_stun::message::TransactionId::new()),
            Box::new(BINDING_REQUEST),
        ];
        req.build(&setters).unwrap();
        let from: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let raw = respond(&req.raw, from).expect("a response");
        let mut resp = Message::new();
        resp.raw = raw;
        resp.decode().unwrap();
        assert_eq!(resp.typ, BINDING_SUCCESS);
        assert_eq!(resp.transaction_id, req.transaction_id);
        let mut got = XorMappedAddress {
            ip: "0.0.0.0".parse().unwrap(),
            port: 0,
        };
        got.get_from(&resp).unwrap();
        assert_eq!((got.ip, got.port), (from.ip(), from.port()));
        assert!(respond(b"not stun", from).is_none());
    }
}
