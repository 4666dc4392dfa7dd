//! The HTTP error type, rendered in the two envelopes of the published API:
//!
//! - authentication, account and server errors: `{"ok": false, "error": {"code", "message", "retryable"}}`;
//! - validation and business errors, flat: `{"error": code, "message", …details}`; `rate_limited`
//!   (429) adds `"retryable": true` and a `Retry-After` header.
//!
//! Internal errors are answered as an opaque `server_error`; their cause chain travels to the
//! access-log middleware in a response extension and is logged there with the request id.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

#[derive(Debug)]
pub enum ApiError {
    /// 401 `unauthorized`.
    Unauthorized(&'static str),
    /// 402 `subscription_required`.
    SubscriptionRequired,
    /// 500 `server_error`; the cause is logged, never sent.
    Server(anyhow::Error),
    /// 500 `server_error` for a request not answered within the request timeout.
    Timeout(std::time::Duration),
    /// 429 `rate_limited`: too many requests; try again after `retry_after`.
    RateLimited { message: String, retry_after: std::time::Duration },
    /// A flat error: status, code, message and details merged into the body.
    Flat { status: StatusCode, code: &'static str, message: String, details: Map<String, Value> },
}

/// Attached to 5xx responses so the access log can record why.
#[derive(Clone, Debug)]
pub struct ErrorCause(pub String);

impl ApiError {
    pub fn validation(message: impl Into<String>) -> Self {
        Self::flat(StatusCode::BAD_REQUEST, "validation_error", message)
    }

    /// A validation error about one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(message).with("field", field)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::flat(StatusCode::NOT_FOUND, code, message)
    }

    pub fn flat(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Flat { status, code, message: message.into(), details: Map::new() }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Self::Flat { details, .. } = &mut self {
            details.insert(key.to_owned(), value.into());
        }
        self
    }

    pub fn server(error: impl Into<anyhow::Error>) -> Self {
        Self::Server(error.into())
    }

    /// A request body over `max_body_bytes`: 413, but a `validation_error` like any bad body.
    pub fn body_too_large(limit: usize) -> Self {
        Self::flat(StatusCode::PAYLOAD_TOO_LARGE, "validation_error", format!("The request body is larger than {limit} bytes."))
            .with("limit_bytes", limit)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::server(e)
    }
}

fn standard(status: StatusCode, code: &str, message: &str, retryable: bool) -> Response {
    (status, Json(json!({"ok": false, "error": {"code": code, "message": message, "retryable": retryable}}))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized(message) => standard(StatusCode::UNAUTHORIZED, "unauthorized", message, false),
            ApiError::SubscriptionRequired => standard(
                StatusCode::PAYMENT_REQUIRED,
                "subscription_required",
                "The Bridge subscription of this account is not active.",
                false,
            ),
            ApiError::Server(cause) => {
                let mut response =
                    standard(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "Internal error; you can try again.", true);
                response.extensions_mut().insert(ErrorCause(format!("{cause:#}")));
                response
            }
            ApiError::Timeout(limit) => {
                let message = format!("The request was not answered within {} ms; you can try again.", limit.as_millis());
                let mut response = standard(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &message, true);
                response.extensions_mut().insert(ErrorCause(message));
                response
            }
            ApiError::RateLimited { message, retry_after } => {
                // Whole seconds, rounded up, and never 0 (which would invite an immediate retry).
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                let body = json!({"error": "rate_limited", "message": message, "retryable": true});
                (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, seconds.max(1).to_string())], Json(body)).into_response()
            }
            ApiError::Flat { status, code, message, details } => {
                let mut body = Map::with_capacity(details.len() + 2);
                body.insert("error".into(), code.into());
                body.insert("message".into(), message.into());
                body.extend(details);
                (status, Json(Value::Object(body))).into_response()
            }
        }
    }
}
