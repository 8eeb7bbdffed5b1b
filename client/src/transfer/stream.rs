//! Streams of unknown length (`convey send -` reading a pipe): BitTorrent needs the piece
//! hashes up front, which a pipe cannot give without a temporary copy. So the sender listens
//! on TCP, the receiver connects and writes a hello derived from the session key
//! ([`convey_shared::protocol::stream`]), and the sender writes sealed chunks as they are
//! read, the last one marked. Memory stays at a few chunks.
//!
//! Frame: 1 byte flags (bit 0: last chunk), 2 bytes big-endian length, the sealed chunk.
//! When its input is quiet for [`IDLE_FLUSH`] the sender sends what it has (perhaps nothing)
//! as a chunk, so a receiver that hears nothing for much longer knows the sender is gone.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use convey_shared::{
    content::{CIPHER_CHUNK, PLAIN_CHUNK, StreamCipher},
    display::TextGuard,
    protocol::stream::{HEADER_LEN, HELLO_LEN, header, parse_header},
};
use subtle::ConstantTimeEq;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter},
    net::{TcpListener, TcpStream},
};

use crate::{Error, error::Result};

/// How long the receiver may take to connect once it accepted.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// The sender sends what it has after its input was quiet this long.
pub const IDLE_FLUSH: Duration = Duration::from_secs(10);
const IO_BUFFER: usize = 256 * 1024;

/// The sender's listener for one stream.
#[derive(Debug)]
pub struct StreamServer {
    listener: TcpListener,
    hello: [u8; HELLO_LEN],
}

impl StreamServer {
    /// Listen for the receiver, which must open with `hello`.
    pub async fn bind(hello: [u8; HELLO_LEN]) -> Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, 0))
            .await
            .map_err(Error::io("cannot listen for the receiver"))?;
        Ok(Self { listener, hello })
    }

    pub fn port(&self) -> Result<u16> {
        Ok(self
            .listener
            .local_addr()
            .map_err(Error::io("cannot listen for the receiver"))?
            .port())
    }

    /// The first connection that opens with the hello, within [`CONNECT_TIMEOUT`].
    pub async fn accept(&self) -> Result<TcpStream> {
        let deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
        loop {
            let (mut conn, from) = tokio::time::timeout_at(deadline, self.listener.accept())
                .await
                .map_err(|_| {
                    Error::Transfer(format!(
                        "the receiver could not connect within {}s; the machines may not reach each other directly",
                        CONNECT_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(Error::io("accepting the receiver's connection"))?;
            let mut presented = [0u8; HELLO_LEN];
            let read = tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut presented)).await;
            if matches!(read, Ok(Ok(_))) && bool::from(presented.ct_eq(&self.hello)) {
                conn.set_nodelay(true).ok();
                return Ok(conn);
            }
            tracing::debug!(%from, "dropping a stream connection without the hello");
        }
    }
}

/// Seal `input` chunk by chunk onto `conn`. A chunk goes out when it is full, when the
/// input ends (marked last), or when the input was quiet for [`IDLE_FLUSH`] (whatever it
/// holds, perhaps nothing: that is the keep-alive). Returns the plaintext bytes sent.
pub async fn send<R: AsyncRead + Unpin>(
    mut input: R,
    conn: TcpStream,
    cipher: &StreamCipher,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let mut out = BufWriter::with_capacity(IO_BUFFER, conn);
    let chunk = PLAIN_CHUNK as usize;
    let mut buf = vec![0u8; chunk];
    let (mut i, mut sent, mut shown) = (0u64, 0u64, Instant::now());
    loop {
        let mut len = 0;
        let (mut last, mut idle) = (false, false);
        while len < chunk {
            // Reading is cancel-safe: a read cut short by the timer consumed nothing.
            match tokio::time::timeout(IDLE_FLUSH, input.read(&mut buf[len..])).await {
                Err(_) => {
                    idle = true;
                    break;
                }
                Ok(Ok(0)) => {
                    last = true;
                    break;
                }
                Ok(Ok(n)) => len += n,
                Ok(Err(e)) => return Err(Error::io("reading standard input")(e)),
            }
        }
        let sealed = cipher.seal(i, last, &buf[..len]);
        let header = header(last, sealed.len()).expect("a sealed chunk fits in 16 bits");
        let write = async {
            out.write_all(&header).await?;
            out.write_all(&sealed).await?;
            if idle {
                out.flush().await?;
            }
            Ok::<_, std::io::Error>(())
        };
        write.await.map_err(|_| Error::PeerGone)?;
        sent += len as u64;
        if shown.elapsed() > Duration::from_millis(250) {
            progress(sent);
            shown = Instant::now();
        }
        if last {
            break;
        }
        i += 1;
    }
    out.flush().await.map_err(|_| Error::PeerGone)?;
    progress(sent);
    Ok(sent)
}

/// Connect to the sender (through the local path selector) and say the hello.
pub async fn connect(addr: SocketAddr, hello: &[u8; HELLO_LEN]) -> Result<TcpStream> {
    let cannot = || Error::Transfer("cannot reach the sender, directly or through the relay".into());
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| cannot())?
        .map_err(|_| cannot())?;
    conn.set_nodelay(true).ok();
    conn.write_all(hello).await.map_err(|_| cannot())?;
    Ok(conn)
}

/// Read, authenticate and write the stream to `out` until the marked last chunk. Returns the
/// plaintext bytes received. With a `guard` (stdout is a terminal), the stream stops at the
/// first chunk that is not plain text, before any of it is written. A sender silent for
/// `silence` is gone.
pub async fn receive<W: AsyncWrite + Unpin>(
    conn: TcpStream,
    cipher: &StreamCipher,
    out: W,
    (mut guard, silence): (Option<TextGuard>, Duration),
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let mut input = BufReader::with_capacity(IO_BUFFER, conn);
    let mut out = BufWriter::with_capacity(IO_BUFFER, out);
    let mut buf = vec![0u8; CIPHER_CHUNK as usize];
    let (mut i, mut got, mut shown) = (0u64, 0u64, Instant::now());
    let ended_early =
        || Error::Transfer("the stream ended before the sender finished; the output is incomplete".into());
    loop {
        let mut head = [0u8; HEADER_LEN];
        tokio::time::timeout(silence, input.read_exact(&mut head))
            .await
            .map_err(|_| {
                Error::Transfer(format!(
                    "the sender sent nothing for {}s; it is gone and the output is incomplete",
                    silence.as_secs()
                ))
            })?
            .map_err(|_| ended_early())?;
        let frame = parse_header(head, buf.len()).map_err(|e| Error::Protocol(e.to_string()))?;
        input
            .read_exact(&mut buf[..frame.len])
            .await
            .map_err(|_| ended_early())?;
        let n = cipher.open(i, frame.last, &mut buf[..frame.len]).map_err(|_| {
            Error::Transfer("a stream chunk failed authentication; the output is incomplete".into())
        })?;
        if let Some(g) = guard.as_mut()
            && (!g.check(&buf[..n]) || (frame.last && !g.finish()))
        {
            let _ = out.flush().await;
            return Err(Error::Refused(
                "the stream holds binary data or terminal escape sequences, so it was not written to this terminal; redirect it (> FILE) or pass --to-terminal".into(),
            ));
        }
        out.write_all(&buf[..n])
            .await
            .map_err(Error::io("writing the output"))?;
        got += n as u64;
        if shown.elapsed() > Duration::from_millis(250) {
            progress(got);
            shown = Instant::now();
        }
        if frame.last {
            break;
        }
        i += 1;
    }
    out.flush().await.map_err(Error::io("writing the output"))?;
    progress(got);
    Ok(got)
}
