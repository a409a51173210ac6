//! Checks a request's `Authorization: Bearer <token>` against the API keys (SPEC §4, §7):
//! 401 without a valid key, 403 when the key lacks the scope or the stream.

use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};

use super::AppState;
use super::error::ApiError;
use crate::auth::{Access, Scope};

pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    scope: Scope,
    stream: Option<&str>,
) -> Result<(), ApiError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match state.keys.check(token, scope, stream) {
        Access::Granted => Ok(()),
        Access::Unauthenticated => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is needed: Authorization: Bearer <token>",
        )),
        Access::Forbidden(why) => Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", why)),
    }
}
