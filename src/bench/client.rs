//! The HTTP side of the load generator: the target URL, one keep-alive HTTP/1.1 connection per
//! bench connection (hyper's low-level client, so the number of connections is exactly
//! `--connections`), the one-off requests of the set-up, and the retry policy.
//!
//! Promises: every answer body is read within `ANSWER_BYTES_MAX`; connecting is bounded by
//! `CONNECT_TIMEOUT`; a connection dropped by the caller stops its I/O task at once.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HOST, HeaderName, HeaderValue, RETRY_AFTER,
};
use hyper::{HeaderMap, Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;

/// Largest answer body read; ingestion answers are small, a stream's description is at most
/// a schema (1 MiB) plus a few counters.
const ANSWER_BYTES_MAX: usize = 4 << 20;
/// How long opening a TCP connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// First backoff before a retry that has no Retry-After; doubled on each attempt.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
/// Longest backoff without Retry-After: retries are for short blips, not outages.
const BACKOFF_MAX: Duration = Duration::from_millis(250);
/// Longest wait a Retry-After may ask for; a server asking for more still gets at most this,
/// so the run's timing stays meaningful.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(1);

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("--target \"{url}\" is not a URL: {problem}")]
    Invalid { url: String, problem: String },
    #[error("--target \"{url}\": only http:// targets are supported (put a TLS proxy in front for https)")]
    Scheme { url: String },
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("connect to {address}")]
    Connect { address: String, source: std::io::Error },
    #[error("connect to {address}: no connection within {timeout:?}")]
    ConnectTimeout { address: String, timeout: Duration },
    #[error("HTTP exchange failed")]
    Http(#[from] hyper::Error),
    #[error("reading the answer failed: {0}")]
    Body(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Where the bench sends: host, port and an optional path prefix, from `--target`.
#[derive(Clone, Debug)]
pub struct Target {
    /// As given, for messages.
    pub url: String,
    host: String,
    port: u16,
    authority: HeaderValue,
    /// Path prefix without a trailing slash ("" for none).
    base_path: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let invalid =
            |problem: &str| TargetError::Invalid { url: url.to_owned(), problem: problem.to_owned() };
        let uri: Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(TargetError::Scheme { url: url.to_owned() }),
            None => return Err(invalid("it needs a scheme and a host, e.g. http://127.0.0.1:8080")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("it has no host"))?;
        // An IPv6 literal comes bracketed in a URL, but not in a socket address.
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(80);
        let authority = HeaderValue::from_str(authority.as_str()).map_err(|_| invalid("bad host"))?;
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Target { url: url.to_owned(), host, port, authority, base_path })
    }

    pub fn path(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.base_path)
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The headers every request carries: Host and, with a token, Authorization.
    fn common_headers(&self, token: Option<&str>) -> Result<HeaderMap, TargetError> {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, self.authority.clone());
        if let Some(token) = token {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| TargetError::Invalid {
                    url: self.url.clone(),
                    problem: "the token is not a valid header value".into(),
                })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        Ok(headers)
    }
}

/// The parts of an events request that do not change from one request to the next, built
/// once so that sending costs a few reference-count increments, not a rebuild.
pub struct EventsRequest {
    uri: Uri,
    headers: HeaderMap,
}

impl EventsRequest {
    pub fn new(
        target: &Target,
        stream: &str,
        token: Option<&str>,
        content_encoding: Option<&'static str>,
    ) -> Result<EventsRequest, TargetError> {
        let path = target.path(&format!("/v1/streams/{stream}/events"));
        let uri: Uri = path.parse().map_err(|_| TargetError::Invalid {
            url: target.url.clone(),
            problem: format!("\"{path}\" is not a valid request path"),
        })?;
        let mut headers = target.common_headers(token)?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
        if let Some(encoding) = content_encoding {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        Ok(EventsRequest { uri, headers })
    }

    pub fn build(&self, body: Bytes, idempotency_key: Option<HeaderValue>) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        if let Some(key) = idempotency_key {
            request.headers_mut().insert(IDEMPOTENCY_KEY, key);
        }
        request
    }
}

/// What the target answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    /// `Idempotent-Replayed: true`: the target had already ingested this key.
    pub replayed: bool,
    pub body: Bytes,
}

impl Answer {
    /// The `accepted` count of an ingestion answer, read without a JSON parser: the bench
    /// reads one number per answer and should not spend the target's CPU on more.
    pub fn accepted(&self) -> Option<u64> {
        accepted_count(&self.body)
    }

    /// The start of the body as text, for error messages.
    pub fn body_excerpt(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        text.chars().take(300).collect()
    }
}

/// One keep-alive HTTP/1.1 connection. Dropping it closes the socket.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    io_task: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // After a timeout the request may still be in flight; stop its I/O rather than let
        // an abandoned connection keep reading in the background.
        self.io_task.abort();
    }
}

impl Connection {
    pub async fn open(target: &Target) -> Result<Connection, RequestError> {
        let address = target.address();
        let connect = tokio::net::TcpStream::connect((target.host.as_str(), target.port));
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(RequestError::Connect { address, source }),
            Err(_) => return Err(RequestError::ConnectTimeout { address, timeout: CONNECT_TIMEOUT }),
        };
        // Requests are written whole; Nagle's delay would only add latency to the last segment.
        stream
            .set_nodelay(true)
            .map_err(|source| RequestError::Connect { address: address.clone(), source })?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let io_task = tokio::spawn(async move {
            // An I/O error ends the connection; the next send on it reports the failure.
            let _ = connection.await;
        });
        Ok(Connection { sender, io_task })
    }

    /// False once the target closed the connection (or it failed): open a new one.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends one request and reads the whole answer, within `timeout`.
    pub async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Answer, RequestError> {
        tokio::time::timeout(timeout, self.exchange(request))
            .await
            .map_err(|_| RequestError::Timeout(timeout))?
    }

    async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, RequestError> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, ANSWER_BYTES_MAX)
            .collect()
            .await
            .map_err(|e| RequestError::Body(e.to_string()))?
            .to_bytes();
        Ok(Answer {
            status: parts.status,
            retry_after: parts.headers.get(RETRY_AFTER).and_then(parse_retry_after),
            replayed: parts.headers.get(IDEMPOTENT_REPLAYED).is_some_and(|v| v.as_bytes() == b"true"),
            body,
        })
    }
}

/// One request on a fresh connection, for the set-up (read or create the stream).
pub async fn exchange_once(
    target: &Target,
    method: Method,
    path: &str,
    body: Option<Bytes>,
    token: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let mut request = Request::new(Full::new(body.unwrap_or_default()));
    *request.method_mut() = method;
    *request.uri_mut() =
        path.parse().map_err(|_| anyhow::anyhow!("\"{path}\" is not a valid request path"))?;
    *request.headers_mut() = target.common_headers(token)?;
    request.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut connection = Connection::open(target).await?;
    Ok(connection.send(request, timeout).await?)
}

/// `--retries`: which failures are tried again and how long to wait first.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub retries: u32,
}

impl RetryPolicy {
    /// 503 (WAL full, draining, not ready) and 429 (memory budget, rate limit) say "later";
    /// 502 and 504 come from a load balancer that found no node able to answer (all draining
    /// or restarting). Every other answer is final.
    pub fn retries_status(status: StatusCode) -> bool {
        matches!(
            status,
            StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::TOO_MANY_REQUESTS
                | StatusCode::BAD_GATEWAY
                | StatusCode::GATEWAY_TIMEOUT
        )
    }

    /// Wait before retry number `attempt` (0 for the first retry): the server's Retry-After
    /// up to `RETRY_AFTER_MAX`, else an exponential backoff capped at `BACKOFF_MAX`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(wait) => wait.min(RETRY_AFTER_MAX),
            None => BACKOFF_FIRST.saturating_mul(1u32 << attempt.min(16)).min(BACKOFF_MAX),
        }
    }
}

/// Retry-After in delta-seconds; the HTTP-date form is not used by floodway and is ignored.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    text.parse::<u64>().ok().map(Duration::from_secs)
}

/// The number after `"accepted":` in an answer body, if there is one.
fn accepted_count(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"accepted\"";
    let start = memchr::memmem::find(body, KEY)? + KEY.len();
    let rest = body.get(start..)?;
    let rest = rest.get(rest.iter().position(|b| !b.is_ascii_whitespace())?..)?;
    let rest = rest.strip_prefix(b":")?;
    let rest = rest.get(rest.iter().position(|b| !b.is_ascii_whitespace())?..)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(rest.get(..digits)?).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_count_is_read_from_an_ingestion_answer() {
        assert_eq!(accepted_count(br#"{"accepted":998,"rejected":2,"errors":[]}"#), Some(998));
        assert_eq!(accepted_count(br#"{ "rejected": 0, "accepted" : 12 }"#), Some(12));
        assert_eq!(accepted_count(br#"{"accepted":0,"rejected":0,"errors":[]}"#), Some(0));
        assert_eq!(accepted_count(br#"{"error":"wal_full","detail":"..."}"#), None);
        assert_eq!(accepted_count(br#"{"accepted":"#), None);
        assert_eq!(accepted_count(b""), None);
    }

    #[test]
    fn target_url_gives_host_port_and_prefix() {
        let target = Target::parse("http://127.0.0.1:18300").expect("valid URL");
        assert_eq!(target.address(), "127.0.0.1:18300");
        assert_eq!(target.path("/v1/streams/bench"), "/v1/streams/bench");
        let target = Target::parse("http://[::1]:9/ingest/").expect("valid URL");
        assert_eq!(target.address(), "::1:9");
        assert_eq!(target.path("/v1/streams"), "/ingest/v1/streams");
        let target = Target::parse("http://localhost").expect("valid URL");
        assert_eq!(target.address(), "localhost:80");
        assert!(matches!(Target::parse("https://127.0.0.1:1"), Err(TargetError::Scheme { .. })));
        assert!(Target::parse("127.0.0.1:8080").is_err());
    }

    #[test]
    fn retry_delay_honours_retry_after_up_to_a_second_and_backs_off_otherwise() {
        let policy = RetryPolicy { retries: 3 };
        assert_eq!(policy.delay(0, Some(Duration::from_secs(1))), Duration::from_secs(1));
        assert_eq!(policy.delay(0, Some(Duration::from_secs(30))), RETRY_AFTER_MAX);
        assert_eq!(policy.delay(0, Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(policy.delay(0, None), Duration::from_millis(10));
        assert_eq!(policy.delay(1, None), Duration::from_millis(20));
        assert_eq!(policy.delay(2, None), Duration::from_millis(40));
        assert_eq!(policy.delay(10, None), BACKOFF_MAX);
        assert_eq!(policy.delay(u32::MAX, None), BACKOFF_MAX);
        assert!(RetryPolicy::retries_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(RetryPolicy::retries_status(StatusCode::TOO_MANY_REQUESTS));
        assert!(RetryPolicy::retries_status(StatusCode::BAD_GATEWAY));
        assert!(RetryPolicy::retries_status(StatusCode::GATEWAY_TIMEOUT));
        assert!(!RetryPolicy::retries_status(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!RetryPolicy::retries_status(StatusCode::BAD_REQUEST));
        assert!(!RetryPolicy::retries_status(StatusCode::OK));
    }

    #[test]
    fn retry_after_reads_delta_seconds_only() {
        assert_eq!(parse_retry_after(&HeaderValue::from_static("2")), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(&HeaderValue::from_static(" 1 ")), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(&HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }
}
