//! Stream management: create or alter (`PUT`), list, show (SPEC §3).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::auth::Scope;
use crate::http::AppState;
use crate::http::access::authorize;
use crate::http::body::read_capped;
use crate::http::error::ApiError;
use crate::schema::registry::PutOutcome;

/// Largest schema document accepted.
const SCHEMA_BYTES_MAX: u64 = 1 << 20;

pub async fn put(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    authorize(&state, &headers, Scope::Admin, Some(&name))?;
    let bytes =
        read_capped(&headers, body, SCHEMA_BYTES_MAX, "the schema size limit", state.request_timeout).await?;
    let registry = state.registry.clone();
    let stream_name = name.clone();
    // Persisting the catalog fsyncs: keep it off the executor threads.
    let outcome = tokio::task::spawn_blocking(move || registry.put(&stream_name, &bytes))
        .await
        .map_err(ApiError::internal)??;
    let status = match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Identical => StatusCode::OK,
        PutOutcome::Altered { ref added } => {
            tracing::info!(stream = %name, ?added, "stream schema altered");
            StatusCode::OK
        }
    };
    let stream = state.registry.get(&name).ok_or_else(|| ApiError::stream_not_found(&name))?;
    Ok((status, Json(describe(&state, &stream))))
}

pub async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Scope::Read, None)?;
    let streams: Vec<Value> = state
        .registry
        .list()
        .iter()
        .map(|s| json!({"name": &*s.name, "version": s.schema().version}))
        .collect();
    Ok(Json(json!({"streams": streams})))
}

pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers, Scope::Read, Some(&name))?;
    let stream = state.registry.get(&name).ok_or_else(|| ApiError::stream_not_found(&name))?;
    Ok(Json(describe(&state, &stream)))
}

fn describe(state: &AppState, stream: &crate::schema::registry::Stream) -> Value {
    let schema = stream.schema();
    let stats = stream.stats.snapshot();
    let schema_json: Value = serde_json::from_str(&schema.canonical).expect("canonical schema is JSON");
    let delivered: serde_json::Map<String, Value> =
        state.sinks.iter().map(|(sink, _)| ((*sink).to_owned(), stats.delivered(sink).into())).collect();
    json!({
        "name": &*stream.name,
        "version": schema.version,
        "schema": schema_json,
        "accepted": stats.accepted,
        "rejected": stats.rejected,
        "dead_lettered": stats.dead_lettered,
        "delivered": delivered,
    })
}
