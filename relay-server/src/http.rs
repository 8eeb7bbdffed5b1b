//! The HTTP surface: rendezvous WebSocket, tracker, health.

use axum::{Router, routing::get};
use convey_shared::protocol::{ANNOUNCE_PATH, RENDEZVOUS_PATH};

use crate::{rendezvous, state::AppState, tracker};

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(RENDEZVOUS_PATH, get(rendezvous::handler))
        .route(ANNOUNCE_PATH, get(tracker::announce))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}
