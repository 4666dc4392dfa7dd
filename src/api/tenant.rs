//! The authenticated tenant: the only way a REST handler or an MCP tool learns who is calling.
//! Each request counts against its key's rate limit.

use super::error::{ApiError, ErrorCode};
use super::rate_limit::RateLimits;
use super::request_id::RequestId;
use crate::app::AppState;
use crate::auth::{AuthFailure, Identity};
use crate::store::{Actor, Metadata};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use domain::account::SubscriptionStatus;
use domain::ids::AccountId;
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

    /// This key as the caller of a command.
    pub fn caller(&self) -> Caller {
        Caller { account_id: self.identity.account_id.clone(), metadata: self.metadata() }
    }
}

/// Who acts in a command or query: the account it acts in, and the actor its events name. REST
/// and MCP calls are made by an API key ([`Tenant::caller`]); console actions by the signed-in
/// user (`console::auth::ConsoleSession::caller`). Commands take this, so every door runs the
/// same rules and records who it was.
#[derive(Clone, Debug)]
pub struct Caller {
    pub account_id: AccountId,
    pub metadata: Metadata,
}

fn presented_key(parts: &Parts) -> Result<&str, ApiError> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| ApiError::unauthorized("Malformed Authorization header."))?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::unauthorized("Authorization header must be `Bearer wzb_live_…`."));
        }
        return Ok(token.trim());
    }
    if let Some(value) = parts.headers.get("x-bridge-key") {
        return value.to_str().map(str::trim).map_err(|_| ApiError::unauthorized("Malformed X-Bridge-Key header."));
    }
    Err(ApiError::unauthorized("Missing API key: send `Authorization: Bearer wzb_live_…` or `X-Bridge-Key`."))
}

impl FromRequestParts<AppState> for AnyTenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = presented_key(parts)?;
        let identity = match state.auth.authenticate(key).await? {
            Ok(identity) => identity,
            Err(AuthFailure::Malformed) => return Err(ApiError::unauthorized("Malformed API key: keys start with `wzb_live_`.")),
            Err(AuthFailure::Missing) | Err(AuthFailure::Invalid) => {
                return Err(ApiError::unauthorized("Invalid or revoked API key."))
            }
        };
        tracing::Span::current().record("account_id", identity.account_id.as_str());
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
            return Err(ErrorCode::SubscriptionRequired.into());
        }
        Ok(Self { identity, request_id })
    }
}
