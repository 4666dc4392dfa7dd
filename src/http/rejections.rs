//! Malformed requests answered in the published envelope on every route.
//!
//! The framework's own rejections (axum's `Path`, `Query` and body extractors; the MCP SDK's
//! body limit) answer in plain text. Our errors are always JSON, so a plain-text "the request is
//! malformed" answer can only be one of those: it is rewritten here as a flat `validation_error`
//! with the same status and its text as the message (a body over the limit says the limit, as
//! our `Json` extractor does). Routes added later are covered without doing anything.
//!
//! Query strings are checked for NUL characters here too, before any handler reads them.

use crate::api::error::ApiError;
use crate::app::AppState;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// What the framework's rejection texts can be; they are short.
const MAX_REJECTION_TEXT: usize = 4096;

pub async fn middleware(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Err(refused) = request.uri().query().map_or(Ok(()), crate::api::nul::refuse_in_query) {
        return refused.into_response();
    }
    let response = next.run(request).await;
    let status = response.status();
    let malformed = matches!(
        status,
        StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
            | StatusCode::UNPROCESSABLE_ENTITY
    );
    // Ours: JSON from the API, HTML pages from the console (a form shown again with its errors).
    let ours = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"));
    if !malformed || ours {
        return response;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::body_too_large(state.config.max_body_bytes).into_response();
    }
    let text = axum::body::to_bytes(response.into_body(), MAX_REJECTION_TEXT).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if message.is_empty() { "The request is malformed.".to_owned() } else { message };
    ApiError::validation(message).with_status(status).into_response()
}
