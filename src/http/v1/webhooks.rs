//! Webhook registration: list, create, read, update, delete, rotate the secret. The secret
//! (`wzb_whsec_…`) is in the create and rotate responses only.

use crate::api::error::ApiError;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::commands::webhooks::{self as webhook_commands, webhook_error, LineChange};
use crate::http::extract::Json;
use crate::queries::webhooks::{self as webhook_queries, parse_id};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::webhook::WebhookCommand;
use serde::Serialize;
use utoipa::ToSchema;

pub use crate::commands::webhooks::{CreateWebhookRequest, UpdateWebhookRequest};
pub use crate::queries::webhooks::{WebhookResponse, WebhookView, WebhooksResponse};

#[derive(Serialize, ToSchema)]
pub struct DeletedResponse {
    pub ok: bool,
    pub id: String,
    pub deleted: bool,
}

/// List webhooks.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks", operation_id = "listWebhooks",
    responses((status = 200, description = "The account's webhooks", body = WebhooksResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn list(State(state): State<AppState>, tenant: Tenant) -> Result<axum::Json<WebhooksResponse>, ApiError> {
    webhook_queries::list(&state.pool, &tenant.identity.account_id).await.map(axum::Json)
}

/// Create a webhook. The response is the only place its secret is ever shown.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", operation_id = "createWebhook", request_body = CreateWebhookRequest,
    responses((status = 201, description = "The webhook, with its signing secret (shown only here)", body = WebhookResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateWebhookRequest>,
) -> Result<(StatusCode, axum::Json<WebhookResponse>), ApiError> {
    Ok((StatusCode::CREATED, axum::Json(webhook_commands::register(&state, &tenant.caller(), body).await?)))
}

/// Read a webhook.
#[utoipa::path(get, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "getWebhook", params(("id" = String, Path, description = "The webhook: a `wh_…` id")),
    responses((status = 200, description = "The webhook", body = WebhookResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookResponse>, ApiError> {
    let (_, webhook) = webhook_queries::owned(&state.pool, &tenant.identity.account_id, &parse_id(&id)?).await?;
    Ok(axum::Json(WebhookResponse { ok: true, webhook, secret: None }))
}

/// Change a webhook's URL, events, description, or whether it is enabled.
#[utoipa::path(patch, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "updateWebhook", params(("id" = String, Path, description = "The webhook: a `wh_…` id")), request_body = UpdateWebhookRequest,
    responses((status = 200, description = "The webhook as changed", body = WebhookResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn update(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    Json(body): Json<UpdateWebhookRequest>,
) -> Result<axum::Json<WebhookResponse>, ApiError> {
    let id = parse_id(&id)?;
    Ok(axum::Json(webhook_commands::update(&state, &tenant.caller(), &id, body, LineChange::Keep).await?))
}

/// Delete a webhook.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks", operation_id = "deleteWebhook", params(("id" = String, Path, description = "The webhook: a `wh_…` id")),
    responses((status = 200, description = "Deleted", body = DeletedResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<DeletedResponse>, ApiError> {
    let (webhook, _) = webhook_queries::owned(&state.pool, &tenant.identity.account_id, &parse_id(&id)?).await?;
    webhook_commands::handle(&state.store, &tenant.metadata(), &webhook, WebhookCommand::Delete).await.map_err(webhook_error)?;
    Ok(axum::Json(DeletedResponse { ok: true, id: webhook.id().to_string(), deleted: true }))
}

/// Replace the signing secret; the old one stops signing at once.
#[utoipa::path(post, path = "/v1/webhooks/{id}/rotate-secret", tag = "webhooks", operation_id = "rotateWebhookSecret", params(("id" = String, Path, description = "The webhook: a `wh_…` id")),
    responses((status = 200, description = "The webhook with its new secret (shown only here)", body = WebhookResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookResponse>, ApiError> {
    let (webhook, _) = webhook_queries::owned(&state.pool, &tenant.identity.account_id, &parse_id(&id)?).await?;
    let secret = crate::secrets::new_webhook_secret();
    let command = WebhookCommand::RotateSecret { secret: state.master_key.seal(secret.expose()) };
    webhook_commands::handle(&state.store, &tenant.metadata(), &webhook, command).await.map_err(webhook_error)?;
    Ok(axum::Json(WebhookResponse {
        ok: true,
        webhook: webhook_queries::view(&state.pool, &webhook).await?,
        secret: Some(secret.expose().to_owned()),
    }))
}
