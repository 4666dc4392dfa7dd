//! The error type of REST and MCP, rendered in the two envelopes of the published API:
//!
//! - authentication, account and server errors: `{"ok": false, "error": {"code", "message", "retryable"}}`;
//! - validation and business errors, flat: `{"error": code, "message", …details}`; a retryable one
//!   (`rate_limited`, 429) adds `"retryable": true`, and `rate_limited` a `Retry-After` header.
//!
//! Which envelope, status and retryability go with a code is [`ErrorCode`]'s to say; handlers name
//! codes, never spell them. Internal errors are answered as an opaque `server_error`; their cause
//! chain travels to the access-log middleware in a response extension and is logged there with
//! the request id (MCP logs it where it answers).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Which of the two published bodies an error is answered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    /// `{"ok": false, "error": {"code", "message", "retryable"}}`.
    Standard,
    /// `{"error": code, "message", …details}`.
    Flat,
}

/// Every error code the API answers, with its wire string, HTTP status, envelope and whether the
/// same request may succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unauthorized,
    SubscriptionRequired,
    ServerError,
    ValidationError,
    RateLimited,
    NotFound,
    MethodNotAllowed,
    Forbidden,
    HostNotAllowed,
    AccountNotFound,
    LineNotFound,
    LineNotConnected,
    LineConflict,
    LineNotPendingQr,
    LineLimitReached,
    NotASandboxLine,
    QuotaExceeded,
    IdempotencyConflict,
    WebhookNotFound,
    DeliveryNotFound,
    DeliveryInFlight,
    DeliveryHeld,
    /// The line's WhatsApp session cannot do that right now (starting, reconnecting, or served by
    /// a node that is changing hands); the same request may work in a moment.
    SessionUnavailable,
    /// The database cannot be reached (a restart, a failover); the same request will work once it
    /// is back.
    ServiceUnavailable,
}

impl ErrorCode {
    /// Every code, e.g. for the OpenAPI document's enums.
    pub const ALL: [ErrorCode; 24] = [
        Self::Unauthorized,
        Self::SubscriptionRequired,
        Self::ServerError,
        Self::ValidationError,
        Self::RateLimited,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Forbidden,
        Self::HostNotAllowed,
        Self::AccountNotFound,
        Self::LineNotFound,
        Self::LineNotConnected,
        Self::LineConflict,
        Self::LineNotPendingQr,
        Self::LineLimitReached,
        Self::NotASandboxLine,
        Self::QuotaExceeded,
        Self::IdempotencyConflict,
        Self::WebhookNotFound,
        Self::DeliveryNotFound,
        Self::DeliveryInFlight,
        Self::DeliveryHeld,
        Self::SessionUnavailable,
        Self::ServiceUnavailable,
    ];

    /// The code on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::SubscriptionRequired => "subscription_required",
            Self::ServerError => "server_error",
            Self::ValidationError => "validation_error",
            Self::RateLimited => "rate_limited",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Forbidden => "forbidden",
            Self::HostNotAllowed => "host_not_allowed",
            Self::AccountNotFound => "account_not_found",
            Self::LineNotFound => "line_not_found",
            Self::LineNotConnected => "line_not_connected",
            Self::LineConflict => "line_conflict",
            Self::LineNotPendingQr => "line_not_pending_qr",
            Self::LineLimitReached => "line_limit_reached",
            Self::NotASandboxLine => "not_a_sandbox_line",
            Self::QuotaExceeded => "quota_exceeded",
            Self::IdempotencyConflict => "idempotency_conflict",
            Self::WebhookNotFound => "webhook_not_found",
            Self::DeliveryNotFound => "delivery_not_found",
            Self::DeliveryInFlight => "delivery_in_flight",
            Self::DeliveryHeld => "delivery_held",
            Self::SessionUnavailable => "session_unavailable",
            Self::ServiceUnavailable => "service_unavailable",
        }
    }

    /// The status it is answered with (a `validation_error` about the request itself may carry the
    /// framework's 413, 415 or 422 instead; see [`ApiError::with_status`]).
    pub const fn status(self) -> StatusCode {
        match self {
            Self::ValidationError => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::SubscriptionRequired => StatusCode::PAYMENT_REQUIRED,
            Self::Forbidden | Self::HostNotAllowed => StatusCode::FORBIDDEN,
            Self::NotFound | Self::AccountNotFound | Self::LineNotFound | Self::WebhookNotFound | Self::DeliveryNotFound => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::LineNotConnected
            | Self::LineConflict
            | Self::LineNotPendingQr
            | Self::NotASandboxLine
            | Self::IdempotencyConflict
            | Self::DeliveryInFlight
            | Self::DeliveryHeld => StatusCode::CONFLICT,
            Self::RateLimited | Self::QuotaExceeded | Self::LineLimitReached => StatusCode::TOO_MANY_REQUESTS,
            Self::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::SessionUnavailable | Self::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Authentication, account and server errors are standard; the rest are flat.
    pub const fn envelope(self) -> Envelope {
        match self {
            Self::Unauthorized | Self::SubscriptionRequired | Self::ServerError | Self::ServiceUnavailable => Envelope::Standard,
            _ => Envelope::Flat,
        }
    }

    /// Whether the same request may succeed if simply made again later.
    pub const fn retryable(self) -> bool {
        matches!(self, Self::ServerError | Self::RateLimited | Self::SessionUnavailable | Self::ServiceUnavailable)
    }

    /// The message the code is answered with when there is nothing more particular to say.
    pub const fn message(self) -> &'static str {
        match self {
            Self::Unauthorized => "Missing, invalid, or revoked API key.",
            Self::SubscriptionRequired => "The Bridge subscription of this account is not active.",
            Self::ServerError => "Internal error; you can try again.",
            Self::ValidationError => "Fields are missing or invalid.",
            Self::RateLimited => "Too many requests; try again later.",
            Self::NotFound => "No such route.",
            Self::MethodNotAllowed => "The method is not allowed on this route.",
            Self::Forbidden => "The request was refused.",
            Self::HostNotAllowed => {
                "The MCP endpoint answers only the host names the operator lists in `public_hosts` (BRIDGE_PUBLIC_HOSTS); \
                 this request's Host header is not one of them."
            }
            Self::AccountNotFound => "The account does not exist.",
            Self::LineNotFound => "The line_id does not exist in your account.",
            Self::LineNotConnected => "The line is not connected to WhatsApp.",
            Self::LineConflict => "The line cannot do that in its current state.",
            Self::LineNotPendingQr => "The line is not waiting for a QR code scan.",
            Self::LineLimitReached => "You have reached the maximum number of lines in the plan.",
            Self::NotASandboxLine => "Sandbox endpoints work on sim lines only.",
            Self::QuotaExceeded => "Monthly quota exceeded",
            Self::IdempotencyConflict => "This Idempotency-Key was already used with a different body.",
            Self::WebhookNotFound => "The webhook does not exist in your account.",
            Self::DeliveryNotFound => "The delivery does not exist for this webhook.",
            Self::DeliveryInFlight => "The delivery is being sent right now; try again shortly.",
            Self::DeliveryHeld => "The delivery is held.",
            Self::SessionUnavailable => "The line's WhatsApp session is not ready for that; try again in a moment.",
            Self::ServiceUnavailable => {
                "The service is briefly unavailable (its database cannot be reached); try again in a moment (a send with the same Idempotency-Key is never made twice)."
            }
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// An error answered to a REST request or an MCP tool call.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    /// The code's status, unless a rejection of the request itself says otherwise.
    status: StatusCode,
    pub message: String,
    /// Merged into a flat body after `message` (e.g. `field`, or a quota's `metric`, `used`, `limit`,
    /// `plan`). Boxed to keep the error, which every fallible handler returns, small.
    pub details: Box<Map<String, Value>>,
    /// `rate_limited`: when to try again (the `Retry-After` header).
    retry_after: Option<Duration>,
    /// Why a `server_error` happened: logged, never sent.
    cause: Option<String>,
}

/// Attached to 5xx responses so the access log can record why.
#[derive(Clone, Debug)]
pub struct ErrorCause(pub String);

impl From<ErrorCode> for ApiError {
    /// The code with its usual message.
    fn from(code: ErrorCode) -> Self {
        Self::new(code, code.message())
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, status: code.status(), message: message.into(), details: Box::default(), retry_after: None, cause: None }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, message)
    }

    /// A validation error about one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(message).with("field", field)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// 500 `server_error`; the cause is logged, never sent. When the cause is that the database
    /// cannot be reached, 503 `service_unavailable` instead, to be retried after a second.
    pub fn server(error: impl Into<anyhow::Error>) -> Self {
        let error = error.into();
        let cause = format!("{error:#}");
        let unreachable = error.chain().any(|e| e.downcast_ref::<sqlx::Error>().is_some_and(crate::db::is_unreachable));
        if unreachable {
            return Self {
                cause: Some(cause),
                retry_after: Some(Duration::from_secs(1)),
                ..ErrorCode::ServiceUnavailable.into()
            };
        }
        Self { cause: Some(cause), ..ErrorCode::ServerError.into() }
    }

    /// 500 `server_error` for a request not answered within the request timeout.
    pub fn timeout(limit: Duration) -> Self {
        let message = format!("The request was not answered within {} ms; you can try again.", limit.as_millis());
        Self { cause: Some(message.clone()), ..Self::new(ErrorCode::ServerError, message) }
    }

    /// 429 `rate_limited`: too many requests; try again after `retry_after`.
    pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Self {
        Self { retry_after: Some(retry_after), ..Self::new(ErrorCode::RateLimited, message) }
    }

    /// A request body over `max_body_bytes`: 413, but a `validation_error` like any bad body.
    pub fn body_too_large(limit: usize) -> Self {
        Self::validation(format!("The request body is larger than {limit} bytes."))
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
            .with("limit_bytes", limit)
    }

    /// A limit of the plan reached (`quota_exceeded`, `line_limit_reached`), with the published
    /// details: the metric, how much of it is used, the limit and the plan.
    pub fn over_limit(code: ErrorCode, metric: &str, used: u64, limit: u64, plan: impl Into<String>) -> Self {
        Self::from(code).with("metric", metric).with("used", used).with("limit", limit).with("plan", plan.into())
    }

    /// A detail of a flat body (standard bodies have none).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        if self.code.envelope() == Envelope::Flat {
            self.details.insert(key.to_owned(), value.into());
        }
        self
    }

    /// Another status than the code's: only for the framework's rejections of a malformed request.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Why a `server_error` happened, for the log.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }

    /// The body, in the code's envelope.
    pub fn body(&self) -> Value {
        let code = self.code;
        match code.envelope() {
            Envelope::Standard => {
                json!({"ok": false, "error": {"code": code.as_str(), "message": self.message, "retryable": code.retryable()}})
            }
            Envelope::Flat => {
                let mut body = Map::with_capacity(self.details.len() + 3);
                body.insert("error".into(), code.as_str().into());
                body.insert("message".into(), self.message.clone().into());
                if code.retryable() {
                    body.insert("retryable".into(), true.into());
                }
                body.extend(self.details.iter().map(|(k, v)| (k.clone(), v.clone())));
                Value::Object(body)
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::server(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(retry_after) = self.retry_after {
            // Whole seconds, rounded up, and never 0 (which would invite an immediate retry).
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let value = seconds.max(1).to_string().parse().expect("digits are a header value");
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if let Some(cause) = self.cause {
            response.extensions_mut().insert(ErrorCause(cause));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_code_is_listed_once_with_a_unique_wire_string() {
        let strings: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(strings.len(), ErrorCode::ALL.len(), "wire strings repeat");
        let codes: HashSet<ErrorCode> = ErrorCode::ALL.into_iter().collect();
        assert_eq!(codes.len(), ErrorCode::ALL.len(), "a code is listed twice");
        for code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(!s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{s}");
            assert_eq!(code.to_string(), s);
        }
    }

    #[test]
    fn codes_have_the_published_status_envelope_and_retryability() {
        use Envelope::{Flat, Standard};
        let published = [
            (ErrorCode::Unauthorized, "unauthorized", 401, Standard, false),
            (ErrorCode::SubscriptionRequired, "subscription_required", 402, Standard, false),
            (ErrorCode::ValidationError, "validation_error", 400, Flat, false),
            (ErrorCode::LineNotFound, "line_not_found", 404, Flat, false),
            (ErrorCode::LineNotConnected, "line_not_connected", 409, Flat, false),
            (ErrorCode::IdempotencyConflict, "idempotency_conflict", 409, Flat, false),
            (ErrorCode::QuotaExceeded, "quota_exceeded", 429, Flat, false),
            (ErrorCode::LineLimitReached, "line_limit_reached", 429, Flat, false),
            (ErrorCode::RateLimited, "rate_limited", 429, Flat, true),
            (ErrorCode::ServerError, "server_error", 500, Standard, true),
            // Not in the published table: the database cannot be reached (a server error, so
            // the standard envelope), retried after Retry-After.
            (ErrorCode::ServiceUnavailable, "service_unavailable", 503, Standard, true),
        ];
        for (code, wire, status, envelope, retryable) in published {
            assert_eq!(
                (code.as_str(), code.status().as_u16(), code.envelope(), code.retryable()),
                (wire, status, envelope, retryable)
            );
        }
        for code in ErrorCode::ALL {
            assert!(code.status().is_client_error() || code.status().is_server_error(), "{code}");
            let server_itself = code == ErrorCode::ServiceUnavailable;
            assert_eq!(code.envelope() == Standard, matches!(code.status().as_u16(), 401 | 402 | 500) || server_itself, "{code}");
        }
    }

    #[test]
    fn an_unreachable_database_is_a_retryable_503_in_the_standard_envelope_with_retry_after() {
        for cause in [sqlx::Error::PoolTimedOut, sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))] {
            let response = ApiError::server(anyhow::Error::new(cause).context("reading the line")).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        }
        let error = ApiError::server(sqlx::Error::PoolTimedOut);
        assert_eq!(
            error.body().to_string(),
            r#"{"ok":false,"error":{"code":"service_unavailable","message":"The service is briefly unavailable (its database cannot be reached); try again in a moment (a send with the same Idempotency-Key is never made twice).","retryable":true}}"#
        );
        // A statement that failed is not the database being away.
        assert_eq!(ApiError::server(sqlx::Error::RowNotFound).code, ErrorCode::ServerError);
    }

    #[test]
    fn bodies_are_the_published_envelopes() {
        assert_eq!(
            ApiError::from(ErrorCode::SubscriptionRequired).body().to_string(),
            r#"{"ok":false,"error":{"code":"subscription_required","message":"The Bridge subscription of this account is not active.","retryable":false}}"#
        );
        let server = ApiError::server(anyhow::anyhow!("the database is down"));
        assert_eq!(server.cause(), Some("the database is down"));
        assert!(!server.body().to_string().contains("database"), "the cause is never sent");
        assert_eq!(
            ApiError::from(ErrorCode::QuotaExceeded).with("metric", "sent_messages").with("used", 3).body().to_string(),
            r#"{"error":"quota_exceeded","message":"Monthly quota exceeded","metric":"sent_messages","used":3}"#
        );
        let limited = ApiError::rate_limited("Too many.", Duration::from_millis(1500));
        assert_eq!(limited.body().to_string(), r#"{"error":"rate_limited","message":"Too many.","retryable":true}"#);
        let response = limited.into_response();
        assert_eq!((response.status().as_u16(), response.headers()[header::RETRY_AFTER].to_str().unwrap()), (429, "2"));
        let too_large = ApiError::body_too_large(1024);
        assert_eq!((too_large.code, too_large.status().as_u16()), (ErrorCode::ValidationError, 413));
    }
}
