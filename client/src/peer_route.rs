//! The peer route of a session: its sealed messages over a connection between the peers
//! (the receiver opens it through its path selector, the sender's push listener takes it),
//! beside the relay. What the two sides still have to say once the bytes move (the
//! sender's digests, the receiver's verdict) then gets through even when the relay is gone
//! for good. The relay task ([`crate::relay_link`]) owns it; the wire is
//! [`convey_shared::protocol::route`].

use std::time::Duration;

use convey_shared::{
    crypto::Side,
    protocol::{
        resume::{self, Slot},
        route::{self, HEADER_LEN, HELLO_NUMBER},
    },
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::mpsc,
};

use crate::transport::task::OwnedTask;

/// How long the two hellos may take: the receiver's path selector may still be racing
/// its paths (WebRTC takes up to 8 s, the tunnel starts after 4 s).
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one message may take to write before the route counts as dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames read ahead of the relay task.
const READ_AHEAD: usize = 8;

/// An open route: a writer, and the numbered frames its reader task receives.
#[derive(Debug)]
pub(crate) struct Route {
    writer: OwnedWriteHalf,
    frames: mpsc::Receiver<(u64, Vec<u8>)>,
    _reader: OwnedTask,
}

/// Why a route could not open.
#[derive(Debug)]
pub(crate) struct Unopened(pub(crate) String);

impl Route {
    /// Swap resume hellos on `conn` (its route hello already sent or checked): say how many
    /// sealed messages `side` has received, learn how many the peer has.
    pub(crate) async fn open(
        conn: TcpStream,
        slot: Slot,
        side: Side,
        received: u64,
    ) -> Result<(Self, u64), Unopened> {
        conn.set_nodelay(true).ok();
        let (mut reader, mut writer) = conn.into_split();
        let hellos = async {
            write_frame(&mut writer, HELLO_NUMBER, &slot.hello(side, received)).await?;
            read_frame(&mut reader).await
        };
        let (number, body) = match tokio::time::timeout(OPEN_TIMEOUT, hellos).await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return Err(Unopened("the connection closed before its hello".into())),
            Ok(Err(e)) => return Err(Unopened(e.to_string())),
            Err(_) => return Err(Unopened("no hello within the time limit".into())),
        };
        let peer_has = (number == HELLO_NUMBER && body.len() == resume::HELLO_LEN)
            .then(|| slot.parse_hello(side.other(), &body))
            .flatten()
            .ok_or_else(|| Unopened("the other side's route hello is not valid".into()))?;
        let (tx, frames) = mpsc::channel(READ_AHEAD);
        let reader = OwnedTask::spawn(move |cancel| async move {
            loop {
                let frame = tokio::select! {
                    f = read_frame(&mut reader) => f,
                    () = cancel.cancelled() => return,
                };
                match frame {
                    Ok(Some(frame)) => {
                        if tx.send(frame).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(%e, "the peer route ended");
                        return;
                    }
                }
            }
        });
        Ok((
            Self {
                writer,
                frames,
                _reader: reader,
            },
            peer_has,
        ))
    }

    /// Write sealed message `number`; an error means the route is dead.
    pub(crate) async fn write(&mut self, number: u64, body: &[u8]) -> std::io::Result<()> {
        match tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut self.writer, number, body)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the peer route stopped taking data",
            )),
        }
    }

    /// End the route: close our half, then wait (at most `linger`) for the peer to close
    /// its own, which it does once it has read everything we wrote.
    pub(crate) async fn finish(mut self, linger: Duration) {
        let drained = async {
            if self.writer.shutdown().await.is_ok() {
                while self.frames.recv().await.is_some() {}
            }
        };
        let _ = tokio::time::timeout(linger, drained).await;
    }

    /// The next numbered frame, `None` once the route has ended (cancel-safe).
    pub(crate) async fn next(&mut self) -> Option<(u64, Vec<u8>)> {
        self.frames.recv().await
    }
}

async fn write_frame(w: &mut OwnedWriteHalf, number: u64, body: &[u8]) -> std::io::Result<()> {
    w.write_all(&route::header(number, body.len())).await?;
    w.write_all(body).await?;
    w.flush().await
}

/// One frame, `None` at a clean end between frames.
async fn read_frame(r: &mut OwnedReadHalf) -> std::io::Result<Option<(u64, Vec<u8>)>> {
    let mut header = [0u8; HEADER_LEN];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (number, len) = route::parse_header(&header).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "a peer route frame is too long")
    })?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(Some((number, body)))
}
