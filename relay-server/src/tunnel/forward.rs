//! Passing tunnel frames from one peer's connection to the other's. Each client frame's
//! payload goes on still masked, behind a server frame header that carries the masking key
//! (`convey_shared::protocol::tunnel`), written straight from the read buffer together with
//! that header: the relay neither unmasks nor copies messages between buffers, which with a
//! WebSocket library was most of its user-space work.

use std::io::{self, IoSlice};

use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};

use super::frames::{self, Header};

/// Read buffer of each direction.
const CHUNK: usize = 256 * 1024;

/// One peer's upgraded tunnel connection.
pub(crate) type Conn = TokioIo<Upgraded>;

/// The reading end of one direction.
pub(crate) struct Inbound {
    rd: BufReader<ReadHalf<Conn>>,
}

/// The writing end of one direction, and whether it stopped inside a frame (then no close
/// frame may follow).
pub(crate) struct Outbound {
    wr: WriteHalf<Conn>,
    mid_frame: bool,
}

/// Split a connection into the end frames are read from and the end frames are written to.
pub(crate) fn split(conn: Conn) -> (Inbound, Outbound) {
    let (rd, wr) = tokio::io::split(conn);
    (
        Inbound {
            rd: BufReader::with_capacity(CHUNK, rd),
        },
        Outbound { wr, mid_frame: false },
    )
}

/// What ended a direction.
pub(crate) type Ended = &'static str;

/// An end closed or vanished: not a reason the tunnel ends for good (see `splice`).
pub(crate) const CLOSED: Ended = "closed";

impl Inbound {
    /// The next frame's header.
    pub(crate) async fn header(&mut self) -> Result<Header, Ended> {
        let mut buf = [0u8; frames::MAX_HEADER];
        self.rd.read_exact(&mut buf[..2]).await.map_err(|_| CLOSED)?;
        let len = frames::header_len([buf[0], buf[1]]);
        self.rd.read_exact(&mut buf[2..len]).await.map_err(|_| CLOSED)?;
        frames::parse_client_header(&buf[..len])
    }

    /// Pass on a data frame's payload to `out`, behind its server frame start.
    pub(crate) async fn pass(&mut self, frame: Header, out: &mut Outbound) -> Result<(), Ended> {
        let (start, n) = frames::relayed_frame_start(frame.len, frame.mask);
        let mut head = &start[..n];
        let mut left = frame.len;
        out.mid_frame = true;
        // The header goes out with the first piece of payload (or alone, for an empty one).
        loop {
            let piece: &[u8] = if left > 0 {
                let avail = self.rd.fill_buf().await.map_err(|_| CLOSED)?;
                if avail.is_empty() {
                    return Err(CLOSED);
                }
                &avail[..usize::try_from(left).unwrap_or(usize::MAX).min(avail.len())]
            } else {
                &[]
            };
            let taken = piece.len();
            write_both(&mut out.wr, head, piece)
                .await
                .map_err(|_| "peer gone")?;
            head = &[];
            self.rd.consume(taken);
            left -= taken as u64;
            if left == 0 {
                break;
            }
        }
        out.mid_frame = false;
        Ok(())
    }

    /// Wait until bytes have arrived (`false`: the end closed). Cancel-safe: what arrived
    /// stays in the buffer for [`Inbound::header`].
    pub(crate) async fn readable(&mut self) -> bool {
        self.rd.fill_buf().await.is_ok_and(|b| !b.is_empty())
    }

    /// Read past a control frame's payload.
    pub(crate) async fn skip(&mut self, len: u64) -> Result<(), Ended> {
        let mut sink = [0u8; 125];
        let len = usize::try_from(len).unwrap_or(usize::MAX).min(sink.len());
        self.rd.read_exact(&mut sink[..len]).await.map_err(|_| CLOSED)?;
        Ok(())
    }
}

/// Write all of `a` then `b`, in as few writes as the socket allows.
async fn write_both(w: &mut WriteHalf<Conn>, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        let n = w.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}

impl Outbound {
    /// Write a whole control frame the relay makes itself (a ping).
    pub(crate) async fn control(&mut self, frame: &[u8]) -> Result<(), Ended> {
        self.wr.write_all(frame).await.map_err(|_| CLOSED)
    }

    /// Tell the peer why the tunnel ends, if that can still be framed, and close.
    pub(crate) async fn close(&mut self, reason: &str) {
        if !self.mid_frame {
            let _ = self.wr.write_all(&frames::close_frame(reason)).await;
        }
        let _ = self.wr.shutdown().await;
    }
}
