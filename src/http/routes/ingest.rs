//! `POST /v1/streams/{stream}/events` (SPEC §4): checks the headers, reads the body within
//! its limits, and hands the bytes to `ingest`.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use crate::http::AppState;
use crate::http::body::read_capped;
use crate::http::error::ApiError;
use crate::ingest::{Encoding, Report, Request};
use crate::schema::decode::{BodyFormat, Location};
use crate::schema::types::OnInvalid;

pub async fn post_events(
    State(state): State<Arc<AppState>>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    if state.status.is_draining() {
        return Err(ApiError::shutting_down());
    }
    if !state.status.is_ready() {
        return Err(ApiError::not_ready());
    }
    if state.registry.get(&stream).is_none() {
        return Err(ApiError::stream_not_found(&stream));
    }
    let format = body_format(&headers)?;
    let encoding = body_encoding(&headers)?;
    let body =
        read_capped(&headers, body, state.max_body_bytes, "server.max_body_bytes", state.request_timeout)
            .await?;
    let received_at_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let request = Request { body, encoding, format, received_at_micros };
    let report = state.ingestor.ingest(&stream, request).await?;
    Ok(Json(report_json(&report)))
}

/// `{"accepted", "rejected", ["dead_lettered"], "errors"}`.
pub fn report_json(report: &Report) -> Value {
    let mut body = Map::new();
    // Under reject_request an invalid event refuses the whole request: nothing was accepted.
    let refused = report.on_invalid == OnInvalid::RejectRequest && report.invalid > 0;
    body.insert("accepted".into(), if refused { 0 } else { report.accepted }.into());
    if report.on_invalid == OnInvalid::DeadLetter {
        body.insert("rejected".into(), 0.into());
        body.insert("dead_lettered".into(), report.invalid.into());
    } else {
        body.insert("rejected".into(), report.invalid.into());
    }
    let errors: Vec<Value> = report
        .errors
        .iter()
        .map(|error| {
            let mut entry = Map::new();
            match error.location {
                Location::Line(line) => entry.insert("line".into(), line.into()),
                Location::Index(index) => entry.insert("index".into(), index.into()),
            };
            if let Some(field) = &error.field {
                entry.insert("field".into(), field.as_ref().into());
            }
            entry.insert("reason".into(), error.reason.clone().into());
            Value::Object(entry)
        })
        .collect();
    body.insert("errors".into(), errors.into());
    Value::Object(body)
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
