//! `POST /v1/streams/{stream}/events` (SPEC §4): checks the headers, reads the body within
//! its limits, and hands the bytes to `ingest`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;

use crate::auth::Scope;
use crate::http::AppState;
use crate::http::access::authorize;
use crate::http::body::read_capped;
use crate::http::error::ApiError;
use crate::ingest::{Answer, Encoding, Request};
use crate::schema::decode::BodyFormat;

pub async fn post_events(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if state.status.is_draining() {
        return Err(ApiError::shutting_down());
    }
    if !state.status.is_ready() {
        return Err(ApiError::not_ready());
    }
    let rate_limit = authorize(&state, &headers, Scope::Write, Some(&stream))?;
    if let Some(limit) = &rate_limit {
        state.rate_limiter.admit(limit).map_err(|wait| {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("the key's rate limit of {} events/s is used up", limit.events_per_second),
            );
            error.retry_after_seconds = wait;
            error
        })?;
    }
    if state.registry.get(&stream).is_none() {
        return Err(ApiError::stream_not_found(&stream));
    }
    let format = body_format(&headers)?;
    let encoding = body_encoding(&headers)?;
    let idempotency_key = idempotency_key(&headers)?;
    let body =
        read_capped(&headers, body, state.max_body_bytes, "server.max_body_bytes", state.request_timeout)
            .await?;
    let received_at_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let request = Request { body, encoding, format, received_at_micros, idempotency_key };
    let (answer, replayed) = match state.ingestor.ingest(&stream, request).await? {
        Answer::Fresh { body, accepted } => {
            if let Some(limit) = &rate_limit {
                state.rate_limiter.charge(limit, accepted);
            }
            (Body::from(body), false)
        }
        Answer::Replayed(body) => (Body::from(body), true),
    };
    let mut response = Response::new(answer);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Longest Idempotency-Key (SPEC §4).
const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;

/// `Idempotency-Key`: 1 to 128 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else { return Ok(None) };
    let bytes = value.as_bytes();
    let visible = bytes.iter().all(|b| (0x21..=0x7e).contains(b));
    if bytes.is_empty() || bytes.len() > IDEMPOTENCY_KEY_BYTES_MAX || !visible {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 128 visible ASCII characters",
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(BodyFormat::Ndjson);
    };
    let text = value.to_str().unwrap_or("");
    let media_type = text.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media_type.as_str() {
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines" => {
            Ok(BodyFormat::Ndjson)
        }
        "application/json" => Ok(BodyFormat::Json),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type \"{text}\" is not supported: use application/x-ndjson or application/json"),
        )),
    }
}

fn body_encoding(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let text = value.to_str().unwrap_or("");
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        "zstd" => Ok(Encoding::Zstd),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding \"{text}\" is not supported: use identity, gzip or zstd"),
        )),
    }
}
