//! Webhook registration: list, create, read, update, delete, rotate the secret. The secret
//! (`wzb_whsec_…`) is in the create and rotate responses only.

use crate::api::error::{ApiError, ErrorCode};
use crate::api::fields::{parse_line_id, required};
use crate::api::schemas;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::commands::webhooks as webhook_commands;
use crate::commands::CommandError;
use crate::http::extract::Json;
use crate::net::{is_public, literal_not_public, NotPublic};
use crate::queries::webhooks::{self as webhook_queries, parse_id};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domain::ids::WebhookId;
use domain::webhook::{EventType, WebhookCommand, WebhookError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::queries::webhooks::{WebhookResponse, WebhookView, WebhooksResponse};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"url": "https://example.com/hooks/whatsapp", "events": ["message.received", "message.status"], "description": "Orders"}))]
pub struct CreateWebhookRequest {
    /// A public https URL (http only where the operator allows private URLs).
    #[schema(required = true, nullable = false, value_type = schemas::WebhookUrl)]
    pub url: Option<String>,
    /// Any of message.received, message.sent, message.status, line.status; all four by default.
    #[schema(value_type = Option<Vec<schemas::WebhookEvent>>, min_items = 1)]
    pub events: Option<Vec<String>>,
    /// Only events of this line.
    #[schema(value_type = Option<String>)]
    pub line_id: Option<String>,
    /// At most 500 characters.
    #[schema(value_type = Option<schemas::FreeText>, max_length = 500)]
    pub description: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"enabled": false}))]
pub struct UpdateWebhookRequest {
    #[schema(value_type = Option<schemas::WebhookUrl>)]
    pub url: Option<String>,
    #[schema(value_type = Option<Vec<schemas::WebhookEvent>>, min_items = 1)]
    pub events: Option<Vec<String>>,
    /// `true` enables the webhook again (and clears `disabled_reason`); `false` pauses deliveries.
    #[schema(value_type = Option<bool>)]
    pub enabled: Option<bool>,
    /// At most 500 characters.
    #[schema(value_type = Option<schemas::FreeText>, max_length = 500)]
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DeletedResponse {
    pub ok: bool,
    pub id: String,
    pub deleted: bool,
}

fn webhook_error(e: CommandError<WebhookError>) -> ApiError {
    match e {
        CommandError::Rejected(WebhookError::NotFound) => ErrorCode::WebhookNotFound.into(),
        CommandError::Rejected(e @ WebhookError::NoEvents) | CommandError::Rejected(e @ WebhookError::UnknownEvent(_)) => {
            ApiError::invalid_field("events", format!("{e}."))
        }
        CommandError::Rejected(e @ WebhookError::DescriptionTooLong) => ApiError::invalid_field("description", format!("{e}.")),
        other => ApiError::server(other),
    }
}

/// A URL the server may call: https (http where private URLs are allowed), a host, no user info,
/// and, unless private URLs are allowed, a host whose every address is public. The check is made
/// again, on the address connected to, at every delivery.
async fn checked_url(raw: &str, allow_private: bool) -> Result<String, ApiError> {
    let invalid = |why: &str| ApiError::invalid_field("url", format!("`url` {why}."));
    let url = reqwest::Url::parse(raw).map_err(|_| invalid("is not a URL"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        _ => return Err(invalid("must be an https URL")),
    }
    if raw.len() > 2048 || !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must be at most 2048 characters, without user or password"));
    }
    let host = url.host().ok_or_else(|| invalid("has no host"))?;
    if !schemas::is_url(raw, !allow_private) {
        return Err(invalid("may hold only letters, digits and URL punctuation (percent-encode anything else)"));
    }
    if !allow_private {
        let refused = match host {
            url::Host::Domain(name) => {
                let port = url.port_or_known_default().unwrap_or(443);
                let mut addresses =
                    tokio::net::lookup_host((name, port)).await.map_err(|_| invalid("has a host name that does not resolve"))?;
                addresses.any(|a| !is_public(a.ip())).then(|| NotPublic::Name(name.to_owned()))
            }
            _ => literal_not_public(&url),
        };
        if let Some(refused) = refused {
            return Err(invalid(&format!("is refused: {refused}")));
        }
    }
    Ok(url.to_string())
}

fn event_types(raw: Option<Vec<String>>) -> Result<Option<Vec<EventType>>, ApiError> {
    raw.map(|list| {
        list.iter().map(|e| EventType::parse(e).map_err(|e| ApiError::invalid_field("events", format!("{e}.")))).collect()
    })
    .transpose()
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
    let url = checked_url(required("url", &body.url)?, state.config.allow_private_urls).await?;
    let events = event_types(body.events)?.unwrap_or_else(EventType::all);
    let line_id = match &body.line_id {
        Some(raw) => {
            let line = parse_line_id(raw)?;
            crate::queries::lines::owned(&state.pool, &tenant.identity.account_id, &line).await?;
            Some(line)
        }
        None => None,
    };
    let secret = crate::secrets::new_webhook_secret();
    let webhook_id = WebhookId::new();
    let command = WebhookCommand::Create {
        webhook_id: webhook_id.clone(),
        account_id: tenant.identity.account_id.clone(),
        url,
        events,
        line_id,
        description: body.description,
        secret: state.master_key.seal(secret.expose()),
    };
    webhook_commands::create(&state.store, &tenant.metadata(), &tenant.identity.account_id, &webhook_id, command)
        .await
        .map_err(webhook_error)?;
    let (_, webhook) = webhook_queries::owned(&state.pool, &tenant.identity.account_id, &webhook_id).await?;
    Ok((StatusCode::CREATED, axum::Json(WebhookResponse { ok: true, webhook, secret: Some(secret.expose().to_owned()) })))
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
    let url = match &body.url {
        Some(raw) => Some(checked_url(raw, state.config.allow_private_urls).await?),
        None => None,
    };
    let command =
        WebhookCommand::Update { url, events: event_types(body.events)?, enabled: body.enabled, description: body.description };
    let (webhook, _) = webhook_queries::owned(&state.pool, &tenant.identity.account_id, &id).await?;
    webhook_commands::handle(&state.store, &tenant.metadata(), &webhook, command).await.map_err(webhook_error)?;
    if body.enabled == Some(true) {
        // Deliveries that waited while it was disabled may go now.
        state.deliverer.wake();
    }
    Ok(axum::Json(WebhookResponse { ok: true, webhook: webhook_queries::view(&state.pool, &webhook).await?, secret: None }))
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
