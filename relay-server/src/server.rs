//! The running relay: binds before returning, owns its tasks, shuts down gracefully.

use std::net::SocketAddr;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Config, http, state::AppState};

/// The relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A relay serving on a bound socket until [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stun_addr: Option<SocketAddr>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    /// Bind `config.listen` (port 0 picks a free port) and start serving.
    pub async fn spawn(config: Config) -> Result<Self, SpawnError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| SpawnError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SpawnError::Bind {
            addr: config.listen,
            source,
        })?;
        let stun = match config.stun_listen.0 {
            Some(stun_addr) => {
                let bind_err = |source| SpawnError::Bind {
                    addr: stun_addr,
                    source,
                };
                let socket = tokio::net::UdpSocket::bind(stun_addr).await.map_err(bind_err)?;
                let port = socket.local_addr().map_err(bind_err)?.port();
                Some((socket, port))
            }
            None => None,
        };
        let cancel = CancellationToken::new();
        let mut state = AppState::new(&config, cancel.child_token());
        state.stun_port = stun.as_ref().map(|(_, port)| *port);
        let stun_addr = stun.as_ref().and_then(|(s, _)| s.local_addr().ok());
        let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
        let shutdown = cancel.clone();
        let task = tokio::spawn(async move {
            let stun_task =
                stun.map(|(socket, _)| tokio::spawn(crate::stun::serve(socket, shutdown.child_token())));
            let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned());
            if let Err(err) = serve.await {
                tracing::error!(%err, "relay server stopped with an error");
            }
            shutdown.cancel();
            if let Some(t) = stun_task {
                let _ = t.await;
            }
        });
        Ok(Self {
            addr,
            stun_addr,
            cancel,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the STUN service listens, if enabled.
    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.stun_addr
    }

    /// Stop accepting, tell every open session to close, and wait for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            tracing::error!(%err, "relay task panicked");
        }
    }
}
