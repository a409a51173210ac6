//! Request ids (SPEC §7): every request gets one, kept from a sane incoming `X-Request-Id`
//! (1 to 128 characters from `[A-Za-z0-9._:-]`) or generated, carried by the request's
//! tracing span (so every log line of the request shows it), logged once at debug with the
//! status and duration, counted in the metrics, and returned in `X-Request-Id`.
//!
//! It also keeps HTTP/1.1 keep-alive honest: an answer given before the request's body was
//! read to its end (a `404`, `401`, an invalid stream name...) says `Connection: close`,
//! because the server closes such a connection; without it a client would reuse it and
//! fail its next request.

use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use std::sync::Arc;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Version, header};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::AppState;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const REQUEST_ID_BYTES_MAX: usize = 128;

pub async fn request_id(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|value| is_sane(value.as_bytes()))
        .cloned()
        .unwrap_or_else(generate);
    let span = tracing::info_span!(
        "request",
        request_id = id.to_str().unwrap_or_default(),
        method = %request.method(),
        path = request.uri().path(),
    );
    let started = Instant::now();
    let (request, body_read) = track_body(request);
    let mut response = next.run(request).instrument(span.clone()).await;
    if body_read.is_some_and(|read| !read.load(Ordering::Acquire)) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let elapsed = started.elapsed();
    state.metrics.record(response.status().as_u16(), elapsed);
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_us = elapsed.as_micros() as u64,
            "request"
        )
    });
    response.headers_mut().insert(X_REQUEST_ID, id);
    response
}

/// For an HTTP/1 request with a body: the request with its body wrapped, and a flag that
/// turns true once the body has been read to its end.
fn track_body(request: Request) -> (Request, Option<Arc<AtomicBool>>) {
    let http1 = matches!(request.version(), Version::HTTP_10 | Version::HTTP_11);
    if !http1 || request.body().is_end_stream() {
        return (request, None);
    }
    let read = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| Body::new(TrackedBody { inner, read: read.clone() }));
    (request, Some(read))
}

struct TrackedBody {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn is_sane(bytes: &[u8]) -> bool {
    (1..=REQUEST_ID_BYTES_MAX).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// `{random prefix of this process}-{sequence}`: unique across restarts and nodes in practice,
/// and cheap (no random bytes per request).
fn generate() -> HeaderValue {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut random = [0u8; 6];
        // Without randomness the ids are still unique within this process.
        let _ = getrandom::fill(&mut random);
        random.iter().map(|b| format!("{b:02x}")).collect()
    });
    let sequence = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    HeaderValue::try_from(format!("{prefix}-{sequence:010}")).expect("hex and digits are a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sane_ids_are_kept() {
        assert!(is_sane(b"abc-123_x.y:z"));
        assert!(is_sane(&[b'a'; 128]));
        assert!(!is_sane(&[b'a'; 129]));
        assert!(!is_sane(b""));
        assert!(!is_sane(b"has space"));
        assert!(!is_sane("é".as_bytes()));
        assert_ne!(generate(), generate());
    }
}
