//! webrtc's tokio runtime with one change: every UDP socket it binds gets a receive buffer
//! big enough for a data channel at full speed. With the kernel's default (about 208 KiB) a
//! burst of SCTP packets overflows the socket, the kernel drops datagrams, and webrtc-rs's
//! SCTP spends most of the transfer in loss recovery: 8 MB took 1.1–2.2 s with about 1.5 %
//! of datagrams dropped, and 0.15 s with none.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, Runtime, TokioRuntime,
};

/// Receive and send buffer asked for on each UDP socket.
const UDP_BUFFER: usize = 8 << 20;

/// [`TokioRuntime`] with large UDP socket buffers.
#[derive(Debug)]
pub(super) struct BufferedRuntime(TokioRuntime);

/// The runtime each of our peer connections runs on.
pub(super) fn runtime() -> Arc<dyn Runtime> {
    Arc::new(BufferedRuntime(TokioRuntime))
}

/// Ask for [`UDP_BUFFER`] both ways. The kernel caps a plain request at `net.core.rmem_max`
/// (`wmem_max`); a process with `CAP_NET_ADMIN` may go past that cap. Failing both leaves
/// the default, which still works, only slower.
fn enlarge_buffers(sock: &std::net::UdpSocket) {
    use rustix::net::sockopt;
    type Get = fn(&std::net::UdpSocket) -> rustix::io::Result<usize>;
    type Set = fn(&std::net::UdpSocket, usize) -> rustix::io::Result<()>;
    let ways: [(Get, Set, Set); 2] = [
        (
            |s| sockopt::socket_recv_buffer_size(s),
            |s, n| sockopt::set_socket_recv_buffer_size(s, n),
            |s, n| sockopt::set_socket_recv_buffer_size_force(s, n),
        ),
        (
            |s| sockopt::socket_send_buffer_size(s),
            |s, n| sockopt::set_socket_send_buffer_size(s, n),
            |s, n| sockopt::set_socket_send_buffer_size_force(s, n),
        ),
    ];
    for (get, set, force) in ways {
        for grow in [set, force] {
            if get(sock).unwrap_or(0) >= UDP_BUFFER {
                break;
            }
            let _ = grow(sock, UDP_BUFFER);
        }
    }
    tracing::debug!(
        recv = sockopt::socket_recv_buffer_size(sock).unwrap_or(0),
        send = sockopt::socket_send_buffer_size(sock).unwrap_or(0),
        "WebRTC UDP socket buffers"
    );
}

impl Runtime for BufferedRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.0.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.0.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        enlarge_buffers(&socket);
        self.0.wrap_udp_socket(socket)
    }

    fn wrap_tcp_listener(&self, listener: std::net::TcpListener) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.0.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.0.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.0.resolve_host(host)
    }

    fn now(&self) -> Instant {
        self.0.now()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.0.sleep(duration)
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.0.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.0.block_on(future);
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.0.yield_now()
    }

    fn name(&self) -> &'static str {
        "tokio (large UDP buffers)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_sockets_get_more_than_the_default_receive_buffer() {
        use rustix::net::sockopt;
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let before = sockopt::socket_recv_buffer_size(&sock).unwrap();
        enlarge_buffers(&sock);
        let after = sockopt::socket_recv_buffer_size(&sock).unwrap();
        // At least up to the system's cap (4 MiB on Debian), or all of it with CAP_NET_ADMIN.
        assert!(after > before, "receive buffer {before} -> {after}");
        assert!(after >= (1 << 20), "receive buffer only {after} bytes");
    }
}
