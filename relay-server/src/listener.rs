//! The relay's TCP listener, as axum sees it. Tracker announces are answered right where
//! they are accepted ([`crate::tracker::fast`]): one read, one write and a close, with no
//! HTTP connection task and no epoll registration, since a BitTorrent client opens a
//! connection per announce. Every other connection goes on to axum with the bytes already
//! read put back in front. `TCP_DEFER_ACCEPT` makes the kernel queue a connection only once
//! its first bytes are in, so the first read nearly always finds the whole request.

use std::{
    io,
    mem::MaybeUninit,
    net::SocketAddr,
    os::fd::{AsFd, OwnedFd},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use rustix::net::{RecvFlags, SendFlags, SocketFlags};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, Interest, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use crate::{state::AppState, tracker::fast};

/// Bytes of a connection's first read: any announce a client sends fits; a longer request
/// goes to axum.
const FIRST_READ: usize = 6 * 1024;
/// Seconds the kernel holds a connection that has sent nothing before queueing it anyway.
#[cfg(target_os = "linux")]
const DEFER_ACCEPT_SECS: libc::c_int = 5;
/// How long the rest of a fast reply may take to drain when it did not fit at once.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection that has sent nothing yet is watched for an announce before it
/// goes to axum anyway.
const FIRST_BYTES_WAIT: Duration = Duration::from_secs(1);
/// Connections handed to axum from the watch, queued until it accepts them.
const LATE_QUEUE: usize = 64;

/// A bound listening socket, not yet serving.
#[derive(Debug)]
pub(crate) struct Bound(std::net::TcpListener);

impl Bound {
    pub(crate) fn bind(addr: SocketAddr) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        defer_accept(&listener)?;
        Ok(Self(listener))
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    /// Serve with `state`: announces here, the rest through axum.
    pub(crate) fn serve(self, state: AppState) -> io::Result<RelayListener> {
        let (late_tx, late_rx) = mpsc::channel(LATE_QUEUE);
        Ok(RelayListener {
            listener: TcpListener::from_std(self.0)?,
            state,
            late_tx,
            late_rx,
        })
    }
}

/// Queue a connection only once data arrived (or after [`DEFER_ACCEPT_SECS`]).
#[cfg(target_os = "linux")]
fn defer_accept(listener: &std::net::TcpListener) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let secs = DEFER_ACCEPT_SECS;
    // SAFETY: the descriptor is the live listener borrowed for the call; the value is a
    // c_int on the stack, passed with its exact size, which TCP_DEFER_ACCEPT expects.
    let r = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const secs).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere connections are queued at once; the watch in [`look_later`] covers it.
#[cfg(not(target_os = "linux"))]
fn defer_accept(_: &std::net::TcpListener) -> io::Result<()> {
    Ok(())
}

#[derive(Debug)]
pub(crate) struct RelayListener {
    listener: TcpListener,
    state: AppState,
    /// Connections whose first bytes came after they were accepted, once they did and
    /// were not an announce.
    late_tx: mpsc::Sender<(Prefixed, SocketAddr)>,
    late_rx: mpsc::Receiver<(Prefixed, SocketAddr)>,
}

/// An accepted connection: straight from the socket (not registered with tokio), or from
/// tokio's accept.
#[derive(Debug)]
enum Conn {
    Raw(OwnedFd),
    Registered(TcpStream),
}

impl Conn {
    fn into_tokio(self) -> io::Result<TcpStream> {
        match self {
            Self::Raw(fd) => TcpStream::from_std(std::net::TcpStream::from(fd)),
            Self::Registered(stream) => Ok(stream),
        }
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Self::Raw(fd) => fd.as_fd(),
            Self::Registered(stream) => stream.as_fd(),
        }
    }
}

/// Accept a queued connection without waiting and without tokio; `None` when none is.
fn accept_now(listener: &TcpListener) -> io::Result<Option<(Conn, SocketAddr)>> {
    match rustix::net::acceptfrom_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
        Ok((fd, Some(addr))) => match SocketAddr::try_from(addr) {
            Ok(addr) => Ok(Some((Conn::Raw(fd), addr))),
            Err(_) => Err(io::Error::other("accepted a connection that is not IP")),
        },
        Ok((_, None)) => Err(io::Error::other("accepted a connection without an address")),
        Err(e) if e == rustix::io::Errno::AGAIN => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What a connection's first read showed.
enum FirstLook {
    /// An announce, now answered; or a connection that closed or failed.
    Done,
    /// Anything else: axum's.
    Other(Prefixed),
    /// Nothing yet.
    Nothing(Conn),
}

/// Read what the client sent so far without waiting, straight from the socket (tokio's
/// idea of its readiness may be stale either way), and answer it if it is an announce.
fn first_look(state: &AppState, conn: Conn, remote: SocketAddr) -> FirstLook {
    let mut buf = [MaybeUninit::<u8>::uninit(); FIRST_READ];
    let first = match rustix::net::recv(&conn, &mut buf, RecvFlags::DONTWAIT) {
        Ok(((first, _), _)) if !first.is_empty() => &*first,
        Ok(_) => return FirstLook::Done, // closed before saying anything
        Err(e) if e == rustix::io::Errno::AGAIN => return FirstLook::Nothing(conn),
        Err(_) => return FirstLook::Done,
    };
    if let Some(reply) = fast::answer(state, remote, first) {
        reply_and_close(state, conn, reply);
        return FirstLook::Done;
    }
    match conn.into_tokio() {
        Ok(stream) => FirstLook::Other(Prefixed::new(first.to_vec(), stream)),
        Err(err) => {
            tracing::debug!(%err, "cannot serve a connection");
            FirstLook::Done
        }
    }
}

/// Send a fast reply and close. A reply is small, so it fits into the fresh socket's
/// buffer at once; if not, a task finishes it.
fn reply_and_close(state: &AppState, conn: Conn, reply: Vec<u8>) {
    let sent = match rustix::net::send(
        &conn,
        &reply,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL | SendFlags::MORE,
    ) {
        Ok(n) => n,
        Err(e) if e == rustix::io::Errno::AGAIN => 0,
        Err(_) => return, // the client is gone
    };
    if sent == reply.len() {
        return; // dropping the socket closes it
    }
    let Ok(mut stream) = conn.into_tokio() else { return };
    state.tasks.spawn(async move {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, stream.write_all(&reply[sent..])).await;
    });
}

/// A client that connected but has not spoken yet: wait a little for its first bytes
/// (a tracker client sends its request at once), look again, and hand anything that is
/// not an announce to axum, which then waits as long as it likes.
async fn look_later(
    state: AppState,
    conn: Conn,
    remote: SocketAddr,
    axum: mpsc::Sender<(Prefixed, SocketAddr)>,
) {
    let Ok(stream) = conn.into_tokio() else { return };
    let spoke = async {
        loop {
            stream.readable().await?;
            // `try_io` makes tokio forget a readiness that turns out to be stale.
            match stream.try_io(Interest::READABLE, || {
                rustix::net::recv(&stream, &mut [0u8; 1], RecvFlags::PEEK | RecvFlags::DONTWAIT)
                    .map_err(io::Error::from)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other.map(drop),
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(FIRST_BYTES_WAIT, spoke) => {}
        () = state.stopping.draining.cancelled() => return,
    }
    let io = match first_look(&state, Conn::Registered(stream), remote) {
        FirstLook::Done => return,
        FirstLook::Other(io) => io,
        FirstLook::Nothing(conn) => match conn.into_tokio() {
            Ok(stream) => Prefixed::new(Vec::new(), stream),
            Err(_) => return,
        },
    };
    // Fails only once axum stopped accepting (shutting down): the connection just closes.
    let _ = axum.send((io, remote)).await;
}

impl axum::serve::Listener for RelayListener {
    type Io = Prefixed;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Prefixed, SocketAddr) {
        loop {
            if let Ok(late) = self.late_rx.try_recv() {
                return late;
            }
            // Take what is queued straight from the socket, so a connection answered at once
            // never costs an epoll registration; wait through tokio when the queue is empty.
            let (conn, remote) = match accept_now(&self.listener) {
                Ok(Some(accepted)) => accepted,
                Ok(None) => tokio::select! {
                    Some(late) = self.late_rx.recv() => return late,
                    accepted = self.listener.accept() => match accepted {
                        Ok((stream, remote)) => (Conn::Registered(stream), remote),
                        Err(err) => {
                            accept_error(err).await;
                            continue;
                        }
                    },
                },
                Err(err) => {
                    accept_error(err).await;
                    continue;
                }
            };
            match first_look(&self.state, conn, remote) {
                FirstLook::Done => {}
                FirstLook::Other(io) => return (io, remote),
                FirstLook::Nothing(conn) => {
                    let task = look_later(self.state.clone(), conn, remote, self.late_tx.clone());
                    self.state.tasks.spawn(task);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// As axum's own listener does: a connection that failed before it was accepted is
/// nothing to wait for; anything else (out of file descriptors) gets a second to clear.
async fn accept_error(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%err, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A connection whose first bytes were already read: they are read again first.
#[derive(Debug)]
pub(crate) struct Prefixed {
    prefix: Vec<u8>,
    at: usize,
    stream: TcpStream,
}

impl Prefixed {
    fn new(prefix: Vec<u8>, stream: TcpStream) -> Self {
        // Everything axum serves writes whole messages (rendezvous, tunnel frames with their
        // header in the same write), so Nagle's delay would only hold back each one's tail.
        let _ = stream.set_nodelay(true);
        Self {
            prefix,
            at: 0,
            stream,
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.prefix.len() {
            let n = (this.prefix.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
