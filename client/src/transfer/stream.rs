//! Streams of unknown length (`convey send -` reading a pipe): BitTorrent needs the piece
//! hashes up front, which a pipe cannot give without a temporary copy. So the sender listens
//! on TCP, the receiver connects and writes a hello derived from the session key
//! ([`convey_shared::protocol::stream`]), and the sender writes sealed chunks as they are
//! read, the last one marked. Memory stays at a few chunks.
//!
//! Frame: 1 byte flags (bit 0: last chunk), 2 bytes big-endian length, the sealed chunk.
//! The opened chunks carry records of at most 256 KiB of input, each zstd-compressed when
//! that pays ([`convey_shared::protocol::stream`]); a record is cut when the input pauses,
//! so a slow producer's output still arrives at once. When its input is quiet for
//! [`IDLE_FLUSH`] the sender sends an empty chunk, so a receiver that hears nothing for
//! much longer knows the sender is gone.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use convey_shared::{
    content::{CIPHER_CHUNK, PLAIN_CHUNK, StreamCipher},
    display::TextGuard,
    protocol::stream::{
        HEADER_LEN, HELLO_LEN, MAX_RECORD, MAX_STORED, RECORD_HEADER_LEN, Record, header, parse_header,
    },
};
use subtle::ConstantTimeEq;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter},
    net::{TcpListener, TcpStream},
};

use super::codec;
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

/// Plaintext read before a record is cut when more keeps coming.
const RECORD: usize = MAX_RECORD;
/// A record is cut once the input pauses this long, so a slow producer's lines go out.
const QUIET: Duration = Duration::from_millis(50);

/// Cut `input` into records (compressed when that pays and `compress`), and seal the
/// record stream chunk by chunk onto `conn`. Chunks go out when full, when a record is cut
/// by a pause or the end (marked last), or when the input was quiet for [`IDLE_FLUSH`]
/// (then an empty chunk: the keep-alive). Returns the plaintext bytes sent.
pub async fn send<R: AsyncRead + Unpin>(
    mut input: R,
    conn: TcpStream,
    (cipher, compress): (&StreamCipher, bool),
    mut progress: impl FnMut(u64),
) -> Result<u64> {
    let mut out = BufWriter::with_capacity(IO_BUFFER, conn);
    let chunk = PLAIN_CHUNK as usize;
    let mut block = vec![0u8; RECORD];
    let mut pending: Vec<u8> = Vec::with_capacity(RECORD + chunk);
    let (mut i, mut sent, mut shown) = (0u64, 0u64, Instant::now());
    loop {
        let mut len = 0;
        let (mut last, mut idle) = (false, false);
        while len < RECORD {
            let wait = if len == 0 { IDLE_FLUSH } else { QUIET };
            // Reading is cancel-safe: a read cut short by the timer consumed nothing.
            match tokio::time::timeout(wait, input.read(&mut block[len..])).await {
                Err(_) => {
                    idle = len == 0;
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
        if len > 0 {
            let plain = &block[..len];
            let packed = if compress {
                codec::compress_record(plain).map_err(Error::io("compressing standard input"))?
            } else {
                None
            };
            let stored = packed.as_deref().unwrap_or(plain);
            let head = Record {
                compressed: packed.is_some(),
                plain_len: len,
                stored_len: stored.len(),
            };
            pending.extend_from_slice(&head.to_bytes());
            pending.extend_from_slice(stored);
        }
        // Full chunks always; the rest too once the record was cut short (pause or end).
        let cut = len < RECORD;
        let mut wrote_last = false;
        while pending.len() >= chunk || (cut && !pending.is_empty()) {
            let n = pending.len().min(chunk);
            wrote_last = last && n == pending.len();
            write_chunk(&mut out, cipher, (i, wrote_last), &pending[..n]).await?;
            pending.drain(..n);
            i += 1;
        }
        if (last && !wrote_last) || idle {
            write_chunk(&mut out, cipher, (i, last), &[]).await?;
            i += 1;
        }
        if cut {
            out.flush().await.map_err(|_| Error::PeerGone)?;
        }
        sent += len as u64;
        if shown.elapsed() > Duration::from_millis(250) {
            progress(sent);
            shown = Instant::now();
        }
        if last {
            break;
        }
    }
    out.flush().await.map_err(|_| Error::PeerGone)?;
    progress(sent);
    Ok(sent)
}

/// Seal `data` as chunk `i` (last or not) and write it with its frame header.
async fn write_chunk<W: AsyncWrite + Unpin>(
    out: &mut W,
    cipher: &StreamCipher,
    (i, last): (u64, bool),
    data: &[u8],
) -> Result<()> {
    let sealed = cipher.seal(i, last, data);
    let header = header(last, sealed.len()).expect("a sealed chunk fits in 16 bits");
    out.write_all(&header).await.map_err(|_| Error::PeerGone)?;
    out.write_all(&sealed).await.map_err(|_| Error::PeerGone)
}

/// Records reassembled from the opened chunks, in order.
#[derive(Default)]
struct Records {
    buf: Vec<u8>,
}

impl Records {
    /// The next whole record's plaintext, if it is all in.
    fn next(&mut self) -> Result<Option<Vec<u8>>> {
        let Some(head) = self.buf.get(..RECORD_HEADER_LEN) else {
            return Ok(None);
        };
        let head: [u8; RECORD_HEADER_LEN] = head.try_into().map_err(|_| Error::Protocol("record".into()))?;
        let r = Record::parse(head).map_err(|e| Error::Protocol(e.to_string()))?;
        let end = RECORD_HEADER_LEN + r.stored_len;
        if self.buf.len() < end {
            return Ok(None);
        }
        let stored = &self.buf[RECORD_HEADER_LEN..end];
        let plain = if r.compressed {
            codec::decompress_record(stored, r.plain_len).map_err(Error::Protocol)?
        } else {
            stored.to_vec()
        };
        self.buf.drain(..end);
        Ok(Some(plain))
    }
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
    let mut records = Records::default();
    let ended_early =
        || Error::Transfer("the stream ended before the sender finished; the output is incomplete".into());
    let not_text = || {
        Error::Refused(
            "the stream holds binary data or terminal escape sequences, so it was not written to this terminal; redirect it (> FILE) or pass --to-terminal".into(),
        )
    };
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
        records.buf.extend_from_slice(&buf[..n]);
        while let Some(plain) = records.next()? {
            if let Some(g) = guard.as_mut()
                && !g.check(&plain)
            {
                let _ = out.flush().await;
                return Err(not_text());
            }
            out.write_all(&plain)
                .await
                .map_err(Error::io("writing the output"))?;
            got += plain.len() as u64;
        }
        if records.buf.len() > RECORD_HEADER_LEN + MAX_STORED {
            return Err(Error::Protocol(
                "a stream record is larger than a record may be".into(),
            ));
        }
        if frame.last {
            if !records.buf.is_empty() {
                return Err(ended_early());
            }
            if let Some(g) = guard.as_mut()
                && !g.finish()
            {
                let _ = out.flush().await;
                return Err(not_text());
            }
        }
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
