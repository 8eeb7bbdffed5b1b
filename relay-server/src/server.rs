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
        let cancel = CancellationToken::new();
        let state = AppState::new(&config, cancel.child_token());
        let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
        let shutdown = cancel.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned());
            if let Err(err) = serve.await {
                tracing::error!(%err, "relay server stopped with an error");
            }
        });
        Ok(Self { addr, cancel, task })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, tell every open session to close, and wait for them.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(err) = self.task.await {
            tracing::error!(%err, "relay task panicked");
        }
    }
}
