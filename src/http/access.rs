//! Checks a request's `Authorization: Bearer <token>` against the API keys (SPEC §4, §7):
//! 401 without a valid key, 403 when the key lacks the scope or the stream; and per-key
//! rate limits in events per second (token buckets, 429 with Retry-After).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};

use super::AppState;
use super::error::ApiError;
use crate::auth::{Access, RateLimit, Scope};

/// Checks the key; returns its rate limit when it has one.
pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    scope: Scope,
    stream: Option<&str>,
) -> Result<Option<RateLimit>, ApiError> {
    let token = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| {
        // The scheme is case-insensitive (RFC 9110).
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
    });
    match state.keys.check(token, scope, stream) {
        Access::Granted(limit) => Ok(limit),
        Access::Unauthenticated => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is needed: Authorization: Bearer <token>",
        )),
        Access::Forbidden(why) => Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", why)),
    }
}

/// One token bucket per key, holding at most one second of events. A request is let in
/// while the bucket is not in debt; its events are then drawn, possibly into debt, so a key
/// keeps its rate on average whatever its batch sizes.
#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimiter {
    /// Ok when the key may send now; else the seconds to wait.
    pub fn admit(&self, limit: &RateLimit) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().expect("rate lock is never poisoned");
        let rate = limit.events_per_second as f64;
        let bucket = buckets
            .entry(limit.key.clone())
            .or_insert_with(|| Bucket { tokens: rate, refilled_at: Instant::now() });
        let now = Instant::now();
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.refilled_at).as_secs_f64() * rate).min(rate);
        bucket.refilled_at = now;
        if bucket.tokens > 0.0 { Ok(()) } else { Err(((-bucket.tokens / rate).ceil() as u64).max(1)) }
    }

    /// Draws the events a request brought.
    pub fn charge(&self, limit: &RateLimit, events: u64) {
        let mut buckets = self.buckets.lock().expect("rate lock is never poisoned");
        if let Some(bucket) = buckets.get_mut(&limit.key) {
            bucket.tokens -= events as f64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_in_debt_refuses_until_refilled() {
        let limiter = RateLimiter::default();
        let limit = RateLimit { key: "k".into(), events_per_second: 100 };
        assert_eq!(limiter.admit(&limit), Ok(()));
        limiter.charge(&limit, 350);
        let wait = limiter.admit(&limit).unwrap_err();
        assert!((2..=3).contains(&wait), "{wait}");
    }
}
