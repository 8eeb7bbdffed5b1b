//! `convey-relay --health-check`: ask a running relay's `/healthz` (the container health check
//! needs no curl in the image).

use std::{net::SocketAddr, time::Duration};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Does the relay listening on `listen` answer `/healthz` with 200?
pub async fn check(listen: SocketAddr) -> Result<(), String> {
    let mut target = listen;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let ask = async {
        let mut conn = tokio::net::TcpStream::connect(target).await?;
        conn.write_all(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply)
    };
    let reply = tokio::time::timeout(Duration::from_secs(5), ask)
        .await
        .map_err(|_| format!("{target} did not answer within 5 s"))?
        .map_err(|e| format!("{target}: {e}"))?;
    if reply.starts_with(b"HTTP/1.0 200") || reply.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(format!(
            "{target} answered: {}",
            String::from_utf8_lossy(&reply[..reply.len().min(64)])
        ))
    }
}
