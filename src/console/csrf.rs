//! Cross-site request forgery defences of the console, two of them:
//!
//! 1. [`same_origin_only`], a middleware on every console route: a state-changing request (POST,
//!    PUT, PATCH, DELETE) is refused with a 403 page unless `Sec-Fetch-Site` is `same-origin` or
//!    `none` (typed by the user), or, from a browser that does not send it, `Origin` names the
//!    request's own `Host`. A request with neither header is refused too: every browser that can
//!    run the console sends one of them on a POST, so only a forger's tool would send neither.
//! 2. [`SignedForm`], the extractor of every signed-in form: the body must carry this session's
//!    token in a hidden `_csrf` input (pages render it from [`super::auth::ConsoleSession::csrf`]).
//!    Forms before sign-in (sign-in, invitation, sign-up) have no session to bind a token to and
//!    rely on the first defence.

use super::auth::ConsoleSession;
use super::page::ConsoleError;
use crate::app::AppState;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

const REFUSED: &str =
    "This request did not come from a page of this console, so it was refused. Open the console again and retry.";

/// Whether the request may change state as far as its origin goes.
fn same_origin(headers: &HeaderMap) -> bool {
    let text = |name| headers.get(name).and_then(|v: &header::HeaderValue| v.to_str().ok());
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        return matches!(site, "same-origin" | "none");
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(scheme, authority)| matches!(scheme, "http" | "https") && authority.eq_ignore_ascii_case(host)),
        _ => false,
    }
}

/// Refuse state-changing requests from other sites (see the module's doc).
pub async fn same_origin_only(request: Request, next: Next) -> Response {
    let changes_state = matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    if changes_state && !same_origin(request.headers()) {
        return ConsoleError::CrossSite(REFUSED).into_response();
    }
    next.run(request).await
}

/// A form posted by the signed-in user with this session's `_csrf` token, parsed as `T` (fields
/// of `T` that the form lacks should be `Option` or `#[serde(default)]`).
pub struct SignedForm<T> {
    pub session: ConsoleSession,
    pub form: T,
}

/// Compare without stopping at the first difference, so timing tells nothing of the token.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<T: DeserializeOwned> FromRequest<AppState> for SignedForm<T> {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ConsoleError> {
        let (mut parts, body) = request.into_parts();
        let session = ConsoleSession::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, state.config.max_body_bytes)
            .await
            .map_err(|_| ConsoleError::Forbidden("The form is too large."))?;
        let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let token = fields.iter().find(|(name, _)| name == "_csrf").map(|(_, value)| value.as_bytes());
        if !token.is_some_and(|t| equal_in_constant_time(t, session.csrf.as_bytes())) {
            return Err(ConsoleError::CrossSite(REFUSED));
        }
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|_| ConsoleError::Forbidden("The form is malformed."))?;
        Ok(Self { session, form })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap())).collect()
    }

    #[test]
    fn only_requests_of_this_origin_may_change_state() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(same_origin(&headers(&[("sec-fetch-site", "none")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site"), ("origin", "http://a:1"), ("host", "a:1")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&headers(&[("origin", "http://127.0.0.1:8080"), ("host", "127.0.0.1:8080")])));
        assert!(!same_origin(&headers(&[("origin", "https://evil.example"), ("host", "127.0.0.1:8080")])));
        assert!(!same_origin(&headers(&[("origin", "null"), ("host", "127.0.0.1:8080")])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080")])), "neither header: refused");
        assert!(
            equal_in_constant_time(b"abc", b"abc")
                && !equal_in_constant_time(b"abc", b"abd")
                && !equal_in_constant_time(b"a", b"ab")
        );
    }
}
