//! An account's webhooks: the list and one webhook. The signing secret is never read here.

use super::owned::OwnedWebhook;
use crate::api::error::{ApiError, ErrorCode};
use chrono::{DateTime, Utc};
use domain::ids::{AccountId, WebhookId};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct WebhookView {
    #[sqlx(rename = "webhook_id")]
    #[schema(example = "wh_01jdzq2m9a8x0v3k1s5t7w9y2b")]
    pub id: String,
    pub url: String,
    /// Subscribed events.
    pub events: Vec<String>,
    /// Only events of this line, if set.
    pub line_id: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    /// Why deliveries stopped, when the server disabled the webhook (410 Gone, or failing for too
    /// long). Enabling it again clears it.
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookResponse {
    pub ok: bool,
    pub webhook: WebhookView,
    /// The signing secret: only when the webhook is created or its secret rotated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhooksResponse {
    pub ok: bool,
    pub webhooks: Vec<WebhookView>,
}

const COLUMNS: &str = "webhook_id, url, events, line_id, description, enabled, disabled_reason, created_at, updated_at";

/// A webhook id as given: a malformed one cannot exist, so it is `webhook_not_found` too.
pub fn parse_id(raw: &str) -> Result<WebhookId, ApiError> {
    WebhookId::parse(raw).map_err(|_| ErrorCode::WebhookNotFound.into())
}

/// The account's webhook (what commands and queries on it take) and how it is now, or
/// `webhook_not_found` (another account's webhook does not exist for this one).
pub async fn owned(pool: &PgPool, account_id: &AccountId, id: &WebhookId) -> Result<(OwnedWebhook, WebhookView), ApiError> {
    let view = select(pool, account_id, id).await?;
    Ok((OwnedWebhook::vouched(account_id.clone(), id.clone()), view))
}

/// How the webhook is now (after a command on it, say).
pub async fn view(pool: &PgPool, webhook: &OwnedWebhook) -> Result<WebhookView, ApiError> {
    select(pool, webhook.account_id(), webhook.id()).await
}

async fn select(pool: &PgPool, account_id: &AccountId, id: &WebhookId) -> Result<WebhookView, ApiError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM webhooks WHERE webhook_id = $1 AND account_id = $2"))
        .bind(id.as_str())
        .bind(account_id.as_str())
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ErrorCode::WebhookNotFound.into())
}

/// Every webhook of the account.
pub async fn list(pool: &PgPool, account_id: &AccountId) -> Result<WebhooksResponse, ApiError> {
    let webhooks = sqlx::query_as(&format!("SELECT {COLUMNS} FROM webhooks WHERE account_id = $1 ORDER BY webhook_id"))
        .bind(account_id.as_str())
        .fetch_all(pool)
        .await?;
    Ok(WebhooksResponse { ok: true, webhooks })
}
