//! The sender's end of the relay tunnel: it keeps one tunnel end waiting on the relay, and
//! when the receiver's end joins and speaks, connects it to the local listener (librqbit's,
//! or the stream listener) and opens the next waiting end. Owned: [`TunnelServer::shutdown`]
//! stops and awaits every task.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use convey_shared::protocol::tunnel::TunnelSide;
use tokio::{net::TcpStream, task::JoinSet};
use tokio_util::sync::CancellationToken;

use super::tunnel;
use crate::RelayAddr;

/// Most tunnels one sender serves at once.
const MAX_TUNNELS: usize = 8;

#[derive(Debug)]
pub struct TunnelServer {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Tunnels the receiver has opened so far.
    joined: Arc<AtomicU64>,
}

impl TunnelServer {
    /// Serve tunnel connections for session `token`, forwarding each to `target`.
    pub fn spawn(relay: RelayAddr, token: String, target: SocketAddr) -> Self {
        let cancel = CancellationToken::new();
        let joined = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(serve(relay, token, target, cancel.clone(), joined.clone()));
        Self { cancel, task, joined }
    }

    /// Has the receiver come through the tunnel yet?
    pub fn in_use(&self) -> bool {
        self.joined.load(Ordering::Relaxed) > 0
    }

    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

async fn serve(
    relay: RelayAddr,
    token: String,
    target: SocketAddr,
    cancel: CancellationToken,
    joined: Arc<AtomicU64>,
) {
    let mut splices = JoinSet::new();
    let mut backoff = Duration::from_millis(200);
    loop {
        while splices.len() >= MAX_TUNNELS {
            tokio::select! {
                _ = splices.join_next() => {},
                () = cancel.cancelled() => break,
            }
        }
        let waiting = async {
            let mut ws = tunnel::connect(&relay, &token, TunnelSide::Listen).await?;
            let first = tunnel::first_message(&mut ws).await;
            Ok::<_, crate::Error>((ws, first))
        };
        let (ws, first) = tokio::select! {
            r = waiting => match r {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::debug!(%err, "tunnel end could not be opened; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {},
                        () = cancel.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
            () = cancel.cancelled() => break,
            Some(_) = splices.join_next(), if !splices.is_empty() => continue,
        };
        backoff = Duration::from_millis(200);
        let Some(first) = first else { continue };
        joined.fetch_add(1, Ordering::Relaxed);
        let cancel = cancel.clone();
        splices.spawn(async move {
            let Ok(local) = TcpStream::connect(target).await else {
                return;
            };
            tokio::select! {
                (up, down) = tunnel::splice(ws, local, Some(first)) => {
                    tracing::debug!(up, down, "tunnel closed");
                }
                () = cancel.cancelled() => {}
            }
        });
    }
    splices.shutdown().await;
}
