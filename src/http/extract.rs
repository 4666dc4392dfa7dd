//! Our JSON body extractor: every rejection is a `validation_error` in the published envelope,
//! never the framework's plain text. Every handler that reads a JSON body uses it.

use crate::api::error::ApiError;
use crate::api::json::json_body;
use crate::app::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

/// `axum::Json` with rejections in our envelope, and NUL characters refused (see [`crate::api::nul`]).
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::validation("Send the body as JSON with `Content-Type: application/json`."));
        }
        let body = Bytes::from_request(request, state).await.map_err(|e| match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::body_too_large(state.config.max_body_bytes),
            _ => ApiError::validation(e.body_text()),
        })?;
        json_body(&body).map(Json)
    }
}

/// `application/json` or `application/*+json`, as `axum::Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}
