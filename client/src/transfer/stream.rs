//! Streams of unknown length (`convey send -` reading a pipe): BitTorrent needs the piece
//! hashes up front, which a pipe cannot give without a temporary copy. So the sender listens
//! on TCP, the receiver connects and presents a token from the sealed offer, and the sender
//! writes sealed chunks as they are read, the last one marked. Memory stays at a few chunks.
//!
//! Frame: 1 byte flags (bit 0: last chunk), 2 bytes big-endian length, the sealed chunk.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use convey_shared::content::{CIPHER_CHUNK, PLAIN_CHUNK, StreamCipher};
use subtle::ConstantTimeEq;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter},
    net::{TcpListener, TcpStream},
};

use crate::{Error, error::Result};

/// How long the receiver may take to connect once it accepted.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Bytes of the connection token.
pub const TOKEN_LEN: usize = 32;
const LAST: u8 = 1;
const IO_BUFFER: usize = 256 * 1024;

/// The sender's listener for one stream.
#[derive(Debug)]
pub struct StreamServer {
    listener: TcpListener,
    token: [u8; TOKEN_LEN],
}

impl StreamServer {
    pub async fn bind() -> Result<Self> {
        let listener = TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, 0))
            .await
            .map_err(Error::io("cannot listen for the receiver"))?;
        let mut token = [0u8; TOKEN_LEN];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut token);
        Ok(Self { listener, token })
    }

    pub fn token_hex(&self) -> String {
        hex::encode(self.token)
    }

    pub fn port(&self) -> Result<u16> {
        Ok(self
            .listener
            .local_addr()
            .map_err(Error::io("cannot listen for the receiver"))?
            .port())
    }

    /// The first connection that presents the token, within [`CONNECT_TIMEOUT`].
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
            let mut presented = [0u8; TOKEN_LEN];
            let read = tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut presented)).await;
            if matches!(read, Ok(Ok(_))) && bool::from(presented.ct_eq(&self.token)) {
                conn.set_nodelay(true).ok();
                return Ok(conn);
            }
            tracing::debug!(%from, "dropping a stream connection without the token");
        }
    }
}

/// Read until `buf` is full or the input ends; returns the bytes read.
async fn read_full<R: AsyncRead + Unpin>(input: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match input.read(&mut buf[at..]).await? {
            0 => break,
            n => at += n,
        }
    }
    Ok(at)
}

/// Seal `input` chunk by chunk onto `conn`. Returns the plaintext bytes sent.
pub async fn send<R: AsyncRead + Unpin>(
    mut input: R,
    conn: TcpStream,
    cipher: &StreamCipher,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let mut out = BufWriter::with_capacity(IO_BUFFER, conn);
    let chunk = PLAIN_CHUNK as usize;
    let (mut cur, mut next) = (vec![0u8; chunk], vec![0u8; chunk]);
    let mut cur_len = read_full(&mut input, &mut cur)
        .await
        .map_err(Error::io("reading standard input"))?;
    let (mut i, mut sent, mut shown) = (0u64, 0u64, Instant::now());
    loop {
        let next_len = if cur_len < chunk {
            0
        } else {
            read_full(&mut input, &mut next)
                .await
                .map_err(Error::io("reading standard input"))?
        };
        let last = next_len == 0;
        let sealed = cipher.seal(i, last, &cur[..cur_len]);
        let len = u16::try_from(sealed.len()).expect("a sealed chunk fits in 16 bits");
        let header = [u8::from(last) * LAST, (len >> 8) as u8, len as u8];
        let write = async {
            out.write_all(&header).await?;
            out.write_all(&sealed).await
        };
        write.await.map_err(|_| Error::PeerGone)?;
        sent += cur_len as u64;
        if shown.elapsed() > Duration::from_millis(250) {
            progress(sent);
            shown = Instant::now();
        }
        if last {
            break;
        }
        std::mem::swap(&mut cur, &mut next);
        cur_len = next_len;
        i += 1;
    }
    out.flush().await.map_err(|_| Error::PeerGone)?;
    progress(sent);
    Ok(sent)
}

/// Connect to the sender (through the local path selector) and present the token.
pub async fn connect(addr: SocketAddr, token: &[u8; TOKEN_LEN]) -> Result<TcpStream> {
    let cannot = || Error::Transfer("cannot reach the sender, directly or through the relay".into());
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| cannot())?
        .map_err(|_| cannot())?;
    conn.set_nodelay(true).ok();
    conn.write_all(token).await.map_err(|_| cannot())?;
    Ok(conn)
}

/// Read, authenticate and write the stream to `out` until the marked last chunk. Returns the
/// plaintext bytes received.
pub async fn receive<W: AsyncWrite + Unpin>(
    conn: TcpStream,
    cipher: &StreamCipher,
    out: W,
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let mut input = BufReader::with_capacity(IO_BUFFER, conn);
    let mut out = BufWriter::with_capacity(IO_BUFFER, out);
    let mut buf = vec![0u8; CIPHER_CHUNK as usize];
    let (mut i, mut got, mut shown) = (0u64, 0u64, Instant::now());
    let ended_early =
        || Error::Transfer("the stream ended before the sender finished; the output is incomplete".into());
    loop {
        let mut header = [0u8; 3];
        input.read_exact(&mut header).await.map_err(|_| ended_early())?;
        let len = usize::from(u16::from_be_bytes([header[1], header[2]]));
        if len > buf.len() {
            return Err(Error::Protocol("the sender's stream chunk is too large".into()));
        }
        input
            .read_exact(&mut buf[..len])
            .await
            .map_err(|_| ended_early())?;
        let last = header[0] & LAST != 0;
        let n = cipher.open(i, last, &mut buf[..len]).map_err(|_| {
            Error::Transfer("a stream chunk failed authentication; the output is incomplete".into())
        })?;
        out.write_all(&buf[..n])
            .await
            .map_err(Error::io("writing the output"))?;
        got += n as u64;
        if shown.elapsed() > Duration::from_millis(250) {
            progress(got);
            shown = Instant::now();
        }
        if last {
            break;
        }
        i += 1;
    }
    out.flush().await.map_err(Error::io("writing the output"))?;
    progress(got);
    Ok(got)
}
