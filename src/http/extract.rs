//! Extractors: the authenticated tenant (the only way a handler learns who is calling; each
//! request counts against its key's rate limit) and a JSON body whose every rejection is a
//! `validation_error` in the published envelope.

use super::error::ApiError;
use super::rate_limit::RateLimits;
use super::request_id::RequestId;
use super::AppState;
use crate::auth::{AuthFailure, Identity};
use crate::store::{Actor, Metadata};
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use domain::account::SubscriptionStatus;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// A caller with a valid key whose account may be suspended: only for `me` and `usage`.
pub struct AnyTenant {
    pub identity: Arc<Identity>,
    pub request_id: Option<String>,
}

/// A caller with a valid key and an active subscription.
#[derive(Clone)]
pub struct Tenant {
    pub identity: Arc<Identity>,
    pub request_id: Option<String>,
}

impl Tenant {
    /// Event metadata naming this key and request as the cause.
    pub fn metadata(&self) -> Metadata {
        Metadata::new(Actor::ApiKey { key_id: self.identity.key_id.to_string() }).with_request_id(self.request_id.clone())
    }
}

fn presented_key(parts: &Parts) -> Result<&str, ApiError> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| ApiError::Unauthorized("Malformed Authorization header."))?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::Unauthorized("Authorization header must be `Bearer wzb_live_…`."));
        }
        return Ok(token.trim());
    }
    if let Some(value) = parts.headers.get("x-bridge-key") {
        return value.to_str().map(str::trim).map_err(|_| ApiError::Unauthorized("Malformed X-Bridge-Key header."));
    }
    Err(ApiError::Unauthorized("Missing API key: send `Authorization: Bearer wzb_live_…` or `X-Bridge-Key`."))
}

impl FromRequestParts<AppState> for AnyTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = presented_key(parts)?;
        let identity = match state.auth.authenticate(key).await? {
            Ok(identity) => identity,
            Err(AuthFailure::Malformed) => return Err(ApiError::Unauthorized("Malformed API key: keys start with `wzb_live_`.")),
            Err(AuthFailure::Missing) | Err(AuthFailure::Invalid) => {
                return Err(ApiError::Unauthorized("Invalid or revoked API key."))
            }
        };
        RateLimits::from_request_parts(parts, state).await?.api_key(&identity.key_id)?;
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone());
        Ok(Self { identity, request_id })
    }
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let AnyTenant { identity, request_id } = AnyTenant::from_request_parts(parts, state).await?;
        if identity.status != SubscriptionStatus::Active {
            return Err(ApiError::SubscriptionRequired);
        }
        Ok(Self { identity, request_id })
    }
}

/// `axum::Json` with rejections in our envelope, and NUL characters refused (see [`super::nul`]).
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

/// A JSON body as `T`: NUL characters refused first, then every rejection a `validation_error`.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    super::nul::refuse_in_json(body)?;
    match axum::Json::<T>::from_bytes(body) {
        Ok(axum::Json(value)) => Ok(value),
        Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::validation(format!(
            "The body is not valid JSON: {}",
            e.body_text().trim_start_matches("Failed to parse the request body as JSON: ")
        ))),
        Err(JsonRejection::JsonDataError(e)) => Err(ApiError::validation(format!(
            "The body does not match the expected fields: {}",
            e.body_text().trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        ))),
        Err(other) => Err(ApiError::validation(other.body_text())),
    }
}
