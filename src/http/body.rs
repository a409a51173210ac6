//! Reading a request body whole, capped at a byte limit and bounded in time.

use std::time::Duration;

use axum::body::Body;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_LENGTH;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::error::ApiError;

/// Reads at most `limit` bytes (inclusive) within `timeout`: 413 above the limit (before
/// reading anything when Content-Length already says so), 408 when too slow, 400 when the
/// connection breaks mid-body. `limit_name` names the limit in the 413 answer.
pub async fn read_capped(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    limit_name: &str,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(ApiError::body_too_large(limit_name, limit));
    }
    let limited = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match tokio::time::timeout(timeout, limited.collect()).await {
        Err(_) => Err(ApiError::request_timeout(timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::body_too_large(limit_name, limit))
        }
        Ok(Err(error)) => Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body could not be read: {error}"),
        )),
    }
}
