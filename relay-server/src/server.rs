//! The running relay: binds before returning, owns its tasks, shuts down gracefully.

use std::{net::SocketAddr, time::Duration};

use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use axum::serve::ListenerExt;

use crate::{
    Config, http,
    listener::Bound,
    shared::Shared,
    state::{AppState, Stopping},
};

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
    #[error("cannot use the shared store: {0}")]
    Store(#[from] crate::shared::StoreError),
}

/// A relay serving on a bound socket until [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stun_addr: Option<SocketAddr>,
    stopping: Stopping,
    grace: Duration,
    tasks: TaskTracker,
    task: JoinHandle<()>,
}

/// How often stale tracker peers and idle rate-limit entries are dropped.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);

impl Server {
    /// Bind `config.listen` (port 0 picks a free port) and start serving.
    pub async fn spawn(config: Config) -> Result<Self, SpawnError> {
        let listen_err = |source| SpawnError::Bind {
            addr: config.listen,
            source,
        };
        let listener = Bound::bind(config.listen).map_err(listen_err)?;
        let addr = listener.local_addr().map_err(listen_err)?;
        let stun = match config.stun_listen.0 {
            Some(stun_addr) => {
                let bind_err = |source| SpawnError::Bind {
                    addr: stun_addr,
                    source,
                };
                let socket = crate::stun::bind(stun_addr).await.map_err(bind_err)?;
                let port = socket.local_addr().map_err(bind_err)?.port();
                Some((socket, port))
            }
            None => None,
        };
        let stopping = Stopping {
            draining: CancellationToken::new(),
            now: CancellationToken::new(),
        };
        let (shared, subscription) = match &config.redis_url {
            Some(url) => {
                let (shared, task) = Shared::connect(url, 2 * config.idle(), stopping.now.clone()).await?;
                (Some(shared), Some(task))
            }
            None => (None, None),
        };
        let mut state = AppState::new(&config, stopping.clone(), shared);
        state.stun_port = stun.as_ref().map(|(_, port)| *port);
        let stun_addr = stun.as_ref().and_then(|(s, _)| s.local_addr().ok());
        let tasks = state.tasks.clone();
        let housekeeping = housekeeping(state.clone());
        let listener = listener.serve(state.clone()).map_err(listen_err)?;
        let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
        let stop = stopping.clone();
        let task = tokio::spawn(async move {
            let stun_task =
                stun.map(|(socket, _)| tokio::spawn(crate::stun::serve(socket, stop.now.child_token())));
            let housekeeping = tokio::spawn(housekeeping);
            let serve =
                // `tap_io` only lends axum's `ConnectInfo<SocketAddr>` to our listener.
                axum::serve(listener.tap_io(|_| ()), app).with_graceful_shutdown(stop.draining.clone().cancelled_owned());
            if let Err(err) = serve.await {
                tracing::error!(%err, "relay server stopped with an error");
                stop.draining.cancel();
                stop.now.cancel();
            }
            stop.now.cancelled().await;
            for t in [stun_task, Some(housekeeping), subscription]
                .into_iter()
                .flatten()
            {
                let _ = t.await;
            }
        });
        Ok(Self {
            addr,
            stun_addr,
            stopping,
            grace: Duration::from_secs(config.shutdown_grace_secs),
            tasks,
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

    /// Stop accepting and close sessions that have not paired; give running transfers the
    /// grace period (`--shutdown-grace-secs`) to finish; then cut the rest and wait for
    /// every task.
    pub async fn shutdown(self) {
        self.stopping.draining.cancel();
        self.tasks.close();
        if tokio::time::timeout(self.grace, self.tasks.wait()).await.is_err() {
            tracing::warn!(
                sessions = self.tasks.len(),
                "grace period over; cutting the sessions still running"
            );
        }
        self.stopping.now.cancel();
        self.tasks.wait().await;
        if let Err(err) = self.task.await {
            tracing::error!(%err, "relay task panicked");
        }
    }
}

/// Periodic clean-up, until the relay stops.
async fn housekeeping(state: AppState) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    loop {
        tokio::select! {
            _ = state.stopping.now.cancelled() => return,
            _ = tick.tick() => {
                state.swarms.prune(state.tracker.stale_after());
                state.code_rate.prune();
                state.tunnels.prune(state.tunnel_limits.max_time);
            }
        }
    }
}
