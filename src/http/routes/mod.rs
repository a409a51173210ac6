//! Routes of SPEC §3, §4 and §7.

pub mod ingest;
pub mod ops;
pub mod streams;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use super::AppState;
use super::error::{method_not_allowed, route_not_found};

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/v1/streams", get(streams::list))
        .route("/v1/streams/{stream}", get(streams::show).put(streams::put))
        .route("/v1/streams/{stream}/events", post(ingest::post_events))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are capped by our own limits (server.max_body_bytes), not axum's default.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(state.clone(), super::request_id::request_id))
        .with_state(state)
}
