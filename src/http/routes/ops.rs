//! `/healthz` (the process lives) and `/readyz` (it takes traffic).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use serde_json::{Map, Value, json};

use crate::http::AppState;
use crate::metrics::{Snapshot, render};

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `/metrics`: Prometheus text format 0.0.4.
pub async fn metrics(
    State(state): State<Arc<AppState>>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    let streams = state
        .registry
        .list()
        .iter()
        .map(|stream| (stream.name.to_string(), stream.stats.snapshot()))
        .collect();
    let snapshot = Snapshot {
        http: &state.metrics,
        streams,
        sinks: state.sinks.iter().map(|(name, _)| *name).collect(),
        buffered_bytes: state.budget.held(),
        wal_bytes: state.wal.bytes_held(),
    };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], render(&snapshot))
}

pub async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let sinks: Map<String, Value> =
        state.sinks.iter().map(|(name, sink)| ((*name).to_owned(), sink.health.status().into())).collect();
    let (status, word, reason) = if state.status.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready", "shutting down")
    } else if !state.status.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready", "starting")
    } else if let Some(reason) = state.wal.unwritable_reason() {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready", reason)
    } else {
        (StatusCode::OK, "ready", "ok")
    };
    (status, Json(json!({"status": word, "reason": reason, "sinks": sinks})))
}
