//! `GET /metrics` in the Prometheus text format: what an operator needs to see the relay's
//! load and abuse, and nothing about any transfer's contents, names or codes.

use std::{
    collections::BTreeMap,
    fmt::Write,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use axum::{extract::State, http::header, response::IntoResponse};

use crate::state::AppState;

/// Counters updated by the handlers.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) connections: AtomicU64,
    pub(crate) pairings: AtomicU64,
    pub(crate) failed_confirmations: AtomicU64,
    pub(crate) announces: AtomicU64,
    pub(crate) tunnels_paired: AtomicU64,
    pub(crate) tunnel_bytes: AtomicU64,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Count one refused request, by a fixed reason label.
    pub(crate) fn reject(&self, reason: &'static str) {
        *self
            .rejections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}

pub(crate) async fn handler(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.metrics;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::new();
    metric(
        &mut out,
        "convey_relay_rendezvous_connections_total",
        "counter",
        "Rendezvous WebSocket connections accepted.",
        get(&m.connections),
    );
    metric(
        &mut out,
        "convey_relay_nameplates_open",
        "gauge",
        "Nameplates currently open.",
        state.nameplates.open_count().await as u64,
    );
    metric(
        &mut out,
        "convey_relay_pairings_total",
        "counter",
        "Nameplates on which both sides met.",
        get(&m.pairings),
    );
    metric(
        &mut out,
        "convey_relay_failed_key_confirmations_total",
        "counter",
        "Sessions a client closed because key confirmation failed (wrong code or a guess).",
        get(&m.failed_confirmations),
    );
    metric(
        &mut out,
        "convey_relay_tracker_announces_total",
        "counter",
        "Tracker announces received.",
        get(&m.announces),
    );
    let (swarms, peers) = state.swarms.counts().await;
    metric(
        &mut out,
        "convey_relay_tracker_swarms",
        "gauge",
        "Swarms the tracker serves (registered by live sessions, or announced in open mode).",
        swarms as u64,
    );
    if let Some(peers) = peers {
        metric(
            &mut out,
            "convey_relay_tracker_peers",
            "gauge",
            "Peers in those swarms.",
            peers as u64,
        );
    }
    metric(
        &mut out,
        "convey_relay_tunnels_paired_total",
        "counter",
        "WebSocket tunnels whose two ends met.",
        get(&m.tunnels_paired),
    );
    metric(
        &mut out,
        "convey_relay_tunnel_bytes_total",
        "counter",
        "Bytes relayed through WebSocket tunnels.",
        get(&m.tunnel_bytes),
    );
    let _ = writeln!(
        out,
        "# HELP convey_relay_rejections_total Requests refused, by reason.\n# TYPE convey_relay_rejections_total counter"
    );
    for (reason, n) in m.rejections.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let _ = writeln!(out, "convey_relay_rejections_total{{reason=\"{reason}\"}} {n}");
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
