//! The HTTP surface: rendezvous WebSocket, tracker, WebSocket tunnel, health, metrics, and
//! the browser page.

use axum::extract::Path;
use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use convey_shared::{
    Nameplate,
    protocol::{ANNOUNCE_PATH, NAMEPLATES_PATH, RENDEZVOUS_PATH, SCRAPE_PATH, tunnel::TUNNEL_PATH},
};

use crate::{metrics, page, rendezvous, state::AppState, tracker, tunnel};

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route(RENDEZVOUS_PATH, get(rendezvous::handler))
        .route(ANNOUNCE_PATH, get(tracker::announce))
        .route(SCRAPE_PATH, get(tracker::scrape))
        .route(&format!("{TUNNEL_PATH}/{{token}}/{{side}}"), get(tunnel::handler))
        .route(
            &format!("{NAMEPLATES_PATH}/{{nameplate}}"),
            get(nameplate_waiting),
        )
        .route("/healthz", get(health))
        .route("/metrics", get(metrics::handler))
        .merge(page::routes())
        .with_state(state)
}

/// Whether a sender waits on a nameplate: `{"waiting":true}`, so a receiver on the same
/// machine can tell, without claiming (which would start a key exchange), that this relay
/// holds its code. Says no more than a claim would; 404 where the state is shared.
async fn nameplate_waiting(State(state): State<AppState>, Path(n): Path<u32>) -> Response {
    match state.nameplates.is_waiting(Nameplate(n)) {
        Some(waiting) => axum::Json(serde_json::json!({ "waiting": waiting })).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
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
