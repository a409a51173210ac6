//! `/healthz` (the process lives) and `/readyz` (it takes traffic).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::http::AppState;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
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
