//! The HTTP surface: rendezvous WebSocket, tracker, WebSocket tunnel, health, metrics.

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use convey_shared::protocol::{ANNOUNCE_PATH, RENDEZVOUS_PATH, SCRAPE_PATH, tunnel::TUNNEL_PATH};

use crate::{metrics, rendezvous, state::AppState, tracker, tunnel};

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(RENDEZVOUS_PATH, get(rendezvous::handler))
        .route(ANNOUNCE_PATH, get(tracker::announce))
        .route(SCRAPE_PATH, get(tracker::scrape))
        .route(&format!("{TUNNEL_PATH}/{{token}}/{{side}}"), get(tunnel::handler))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics::handler))
        .with_state(state)
}

/// Healthy when this instance serves, and its shared store (if any) answers.
async fn health(State(state): State<AppState>) -> Response {
    match &state.shared {
        Some(store) if !store.ping().await => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the shared store (Redis) does not answer\n",
        )
            .into_response(),
        _ => "ok\n".into_response(),
    }
}
