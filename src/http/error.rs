//! The only place that maps errors to HTTP status codes and SPEC §4's stable error codes.
//! Every error answer is JSON: `{"error": "<code>", "detail": "<for a person>"}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use crate::budget::OverBudget;
use crate::ingest::{DecompressError, IngestError};
use crate::schema::registry::PutError;
use crate::wal::AppendError;

/// Seconds a client is asked to wait before retrying a 429 or 503.
const RETRY_AFTER_SECONDS: u64 = 1;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    /// More members of the body (e.g. the per-event errors of a 422); boxed to keep errors small.
    pub extra: Box<Map<String, Value>>,
    /// `Retry-After` for 429, 503 and 507 answers.
    pub retry_after_seconds: u64,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            detail: detail.into(),
            extra: Box::default(),
            retry_after_seconds: RETRY_AFTER_SECONDS,
        }
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn stream_not_found(name: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "stream_not_found", format!("stream \"{name}\" does not exist"))
    }

    pub fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down; retry on another node or later",
        )
    }

    pub fn not_ready() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the server is still starting")
    }

    pub fn body_too_large(limit_name: &str, limit: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {limit_name} = {limit} bytes"),
        )
    }

    pub fn request_timeout(limit: std::time::Duration) -> ApiError {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the body did not arrive within server.request_timeout = {}",
                humantime::format_duration(limit)
            ),
        )
    }

    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        // The cause is logged; the client learns only that it was not its fault.
        tracing::error!(error = %error, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error, see the server log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("error".into(), self.code.into());
        body.insert("detail".into(), self.detail.into());
        body.extend(*self.extra);
        let mut response = (self.status, axum::Json(Value::Object(body))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        let retry = [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::INSUFFICIENT_STORAGE,
        ];
        if retry.contains(&self.status) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after_seconds));
        }
        response
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> ApiError {
        let detail = error.to_string();
        match error {
            IngestError::UnknownStream(name) => ApiError::stream_not_found(&name),
            IngestError::Decompress(DecompressError::TooLarge { .. }) => {
                let detail = format!("{detail} (server.max_decompressed_bytes)");
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "decompressed_body_too_large", detail)
            }
            IngestError::Decompress(DecompressError::Corrupt { .. }) | IngestError::Body(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", detail)
            }
            IngestError::InvalidEvents(report) => {
                let mut error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_events", detail);
                if let Value::Object(members) = report.to_json() {
                    error.extra = Box::new(members);
                }
                error
            }
            IngestError::OverBudget(OverBudget { .. }) => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "memory_budget_exceeded", detail)
            }
            IngestError::IdempotencyInFlight => {
                ApiError::new(StatusCode::CONFLICT, "idempotency_key_in_use", detail)
            }
            IngestError::Wal(AppendError::Full { .. }) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "wal_full", detail)
            }
            IngestError::Wal(AppendError::StorageFull(_)) => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", detail)
            }
            IngestError::Wal(AppendError::Closed) => ApiError::shutting_down(),
            IngestError::Wal(AppendError::TooLarge { .. }) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large", detail)
            }
            IngestError::Wal(AppendError::Poisoned | AppendError::Io(_)) => {
                tracing::error!(error = %detail, "WAL append failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "wal_unavailable", detail)
            }
            IngestError::Encode(error) => ApiError::internal(error),
        }
    }
}

impl From<PutError> for ApiError {
    fn from(error: PutError) -> ApiError {
        let detail = error.to_string();
        match error {
            PutError::InvalidName(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_stream_name", detail),
            PutError::InvalidSchema(schema_error) => {
                let mut error = ApiError::new(StatusCode::BAD_REQUEST, "invalid_schema", detail);
                if let Some(field) = schema_error.field {
                    error.extra.insert("field".into(), field.into());
                }
                error
            }
            PutError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "schema_conflict", detail),
            PutError::Persist(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", detail)
            }
            PutError::Persist(e) => ApiError::internal(e),
        }
    }
}

/// Answer for a route that does not exist.
pub async fn route_not_found() -> ApiError {
    ApiError::not_found("no such route; see the HTTP API reference")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
