//! State shared by several relay instances behind one load balancer, kept in Redis: the
//! nameplates and the messages between their two sides, and the tracker's swarms. Each
//! instance subscribes once to its own channel pattern and hands what arrives to its local
//! connections. Keys expire unless their connections refresh them, so a crashed instance
//! leaves nothing behind for long.

mod scripts;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use convey_shared::protocol::rendezvous::ServerMsg;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use scripts::Scripts;
pub(crate) use scripts::{ClaimOutcome, RedisAnnounce};

/// Prefix of every key and channel, so a Redis can be shared with other uses.
const PREFIX: &str = "convey:";

/// Pause before renewing a lost subscription.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// The most one store operation may take, reconnecting included. redis-rs's connection
/// manager makes a command that finds Redis gone wait for its reconnection, which can take
/// a minute; a client asking for a code is told at once instead that the store is away.
pub(crate) const STORE_TIMEOUT: Duration = Duration::from_secs(3);

/// The shared store is unreachable or answered nonsense.
#[derive(Debug, thiserror::Error)]
#[error("the relay's shared store (Redis) failed: {0}")]
pub struct StoreError(String);

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

/// One instance's handle on the shared store.
pub(crate) struct Shared {
    conn: ConnectionManager,
    /// This instance's name in member ids and channels.
    instance: String,
    /// Local connections that messages published to this instance go to.
    inboxes: Mutex<HashMap<u64, mpsc::Sender<ServerMsg>>>,
    /// How long keys live without a refresh.
    key_ttl: Duration,
    scripts: Scripts,
    /// Bumped each time the subscription is renewed after a loss (see [`Self::renewals`]).
    renewals: watch::Sender<u64>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Connect, and start the task that delivers this instance's messages (it ends when
    /// `stop` is cancelled; the caller awaits it). Commands reconnect by themselves; the
    /// subscription is renewed when it drops.
    pub(crate) async fn connect(
        url: &str,
        key_ttl: Duration,
        stop: CancellationToken,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), StoreError> {
        let client = redis::Client::open(url)?;
        // Bounded attempts: a dead or unreachable Redis must fail an operation within
        // STORE_TIMEOUT, not hold it on a reconnect (the next operation tries again).
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        let instance = hex::encode(rand::random::<[u8; 8]>());
        let pattern = format!("{PREFIX}to:{instance}:*");
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.psubscribe(&pattern).await?;
        let shared = Arc::new(Self {
            conn,
            instance,
            inboxes: Mutex::default(),
            key_ttl,
            scripts: Scripts::new(),
            renewals: watch::Sender::new(0),
        });
        let me = shared.clone();
        let task = tokio::spawn(async move {
            let mut pubsub = Some(pubsub);
            loop {
                if let Some(p) = pubsub.take() {
                    me.deliver_all(p, &stop).await;
                }
                if stop.is_cancelled() {
                    return;
                }
                tracing::error!("lost the Redis subscription; renewing it");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
                }
                if let Ok(mut p) = client.get_async_pubsub().await
                    && p.psubscribe(&pattern).await.is_ok()
                {
                    pubsub = Some(p);
                    tracing::warn!(
                        "renewed the Redis subscription; this instance's sessions reconnect, as messages to them may have been lost"
                    );
                    me.renewals.send_modify(|n| *n += 1);
                }
            }
        });
        Ok((shared, task))
    }

    /// Hand every message of `pubsub` to its local connection, until it drops or `stop`.
    async fn deliver_all(&self, pubsub: redis::aio::PubSub, stop: &CancellationToken) {
        let mut messages = pubsub.into_on_message();
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => return,
                m = messages.next() => m,
            };
            let Some(msg) = msg else { return };
            self.deliver(msg.get_channel_name(), msg.get_payload::<String>().ok());
        }
    }

    /// Changes each time the subscription is renewed after a loss. Messages published while
    /// this instance was not subscribed are lost, and a restarted Redis may have lost every
    /// record, so each local connection holding a nameplate is then closed, telling its
    /// client the store was away: a confirmed session meets its peer again on its resume
    /// slot and re-sends what the other side lacks.
    pub(crate) fn renewals(&self) -> watch::Receiver<u64> {
        self.renewals.subscribe()
    }

    /// Whether Redis answers (for `/healthz`).
    pub(crate) async fn ping(&self) -> bool {
        let (mut conn, cmd) = (self.conn(), redis::cmd("PING"));
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(STORE_TIMEOUT, ping).await, Ok(Ok(_)))
    }

    fn inboxes(&self) -> MutexGuard<'_, HashMap<u64, mpsc::Sender<ServerMsg>>> {
        self.inboxes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deliver(&self, channel: &str, payload: Option<String>) {
        let conn = channel.rsplit(':').next().and_then(|c| c.parse::<u64>().ok());
        let msg = payload.and_then(|p| serde_json::from_str::<ServerMsg>(&p).ok());
        let (Some(conn), Some(msg)) = (conn, msg) else {
            tracing::warn!(channel, "unreadable message from the shared store");
            return;
        };
        if let Some(tx) = self.inboxes().get(&conn)
            && tx.try_send(msg).is_err()
        {
            tracing::warn!(conn, "a connection's inbox is full; message dropped");
        }
    }

    /// The id other instances use to reach local connection `conn`.
    fn member(&self, conn: u64) -> String {
        format!("{}:{conn}", self.instance)
    }

    pub(crate) fn listen(&self, conn: u64, tx: mpsc::Sender<ServerMsg>) {
        self.inboxes().insert(conn, tx);
    }

    pub(crate) fn forget(&self, conn: u64) {
        self.inboxes().remove(&conn);
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.key_ttl.as_millis()).unwrap_or(u64::MAX)
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}
