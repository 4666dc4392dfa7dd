//! Webhook commands: register, update, rotate the secret, delete, send a test event, send one
//! delivery again. Always scoped to the account. REST, MCP and the console call the functions
//! that take an [`AppState`] and a [`Caller`]; they check the request's fields (the same rules for
//! every door) and run [`create`] or [`handle`] under them.

use super::{execute, CommandError};
use crate::api::error::{ApiError, ErrorCode};
use crate::api::fields::{parse_line_id, required};
use crate::api::rate_limit::RateLimits;
use crate::api::schemas;
use crate::api::tenant::Caller;
use crate::app::AppState;
use crate::net::{is_public, literal_not_public, NotPublic};
use crate::queries::owned::OwnedWebhook;
use crate::queries::webhooks::{self as webhook_queries, WebhookResponse};
use crate::store::{EventStore, Metadata};
use crate::webhook_delivery::{AttemptReport, RetryError};
use domain::ids::{AccountId, LineId, WebhookId};
use domain::webhook::{EventType, LineScope, Webhook, WebhookCommand, WebhookError};
use domain::Aggregate;
use serde::Deserialize;
use utoipa::ToSchema;

// The body of `POST /v1/webhooks` (no doc comment: it would become the published schema's
// description).
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

// The body of `PATCH /v1/webhooks/{id}`: what is given changes, the rest stays.
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

/// Which line an update moves the webhook to. Not part of the published `PATCH` body: only the
/// console offers it (REST passes [`LineChange::Keep`]).
#[derive(Debug, Clone, Default)]
pub enum LineChange {
    #[default]
    Keep,
    /// Every line's events.
    AllLines,
    /// Only this line's events (a `line_id` as given; it must be one of the account's lines).
    Line(String),
}

/// The REST answer for a webhook command the domain refused.
pub fn webhook_error(e: CommandError<WebhookError>) -> ApiError {
    match e {
        CommandError::Rejected(WebhookError::NotFound) => ErrorCode::WebhookNotFound.into(),
        CommandError::Rejected(e @ WebhookError::NoEvents) | CommandError::Rejected(e @ WebhookError::UnknownEvent(_)) => {
            ApiError::invalid_field("events", format!("{e}."))
        }
        CommandError::Rejected(e @ WebhookError::DescriptionTooLong) => ApiError::invalid_field("description", format!("{e}.")),
        other => ApiError::server(other),
    }
}

/// The answer for a delivery that could not be sent now.
pub fn retry_error(e: RetryError) -> ApiError {
    match e {
        RetryError::NotFound => ErrorCode::DeliveryNotFound.into(),
        RetryError::InFlight => ErrorCode::DeliveryInFlight.into(),
        RetryError::Held { quota: Some(q), .. } => {
            ApiError::over_limit(ErrorCode::QuotaExceeded, "webhook_events", q.used, q.limit, q.plan)
        }
        RetryError::Held { reason, quota: None } => ApiError::new(ErrorCode::DeliveryHeld, reason),
        RetryError::Internal(e) => ApiError::server(e),
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

/// A line id given for a webhook: one of the account's lines, else `line_not_found`.
async fn owned_line(state: &AppState, account_id: &AccountId, raw: &str) -> Result<LineId, ApiError> {
    let line = parse_line_id(raw)?;
    crate::queries::lines::owned(&state.pool, account_id, &line).await?;
    Ok(line)
}

/// Register a webhook of the caller's account. The answer is the only place its secret is shown.
pub async fn register(state: &AppState, caller: &Caller, request: CreateWebhookRequest) -> Result<WebhookResponse, ApiError> {
    let url = checked_url(required("url", &request.url)?, state.config.allow_private_urls).await?;
    let events = event_types(request.events)?.unwrap_or_else(EventType::all);
    let line_id = match &request.line_id {
        Some(raw) => Some(owned_line(state, &caller.account_id, raw).await?),
        None => None,
    };
    let secret = crate::secrets::new_webhook_secret();
    let webhook_id = WebhookId::new();
    let command = WebhookCommand::Create {
        webhook_id: webhook_id.clone(),
        account_id: caller.account_id.clone(),
        url,
        events,
        line_id,
        description: request.description,
        secret: state.master_key.seal(secret.expose()),
    };
    create(&state.store, &caller.metadata, &caller.account_id, &webhook_id, command).await.map_err(webhook_error)?;
    let (_, webhook) = webhook_queries::owned(&state.pool, &caller.account_id, &webhook_id).await?;
    Ok(WebhookResponse { ok: true, webhook, secret: Some(secret.expose().to_owned()) })
}

/// Change the caller's webhook: what `request` gives, and the line as `line` says. Every field is
/// checked before anything is recorded; the change is one event.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    id: &WebhookId,
    request: UpdateWebhookRequest,
    line: LineChange,
) -> Result<WebhookResponse, ApiError> {
    let url = match &request.url {
        Some(raw) => Some(checked_url(raw, state.config.allow_private_urls).await?),
        None => None,
    };
    let events = event_types(request.events)?;
    let (webhook, _) = webhook_queries::owned(&state.pool, &caller.account_id, id).await?;
    let line = match line {
        LineChange::Keep => None,
        LineChange::AllLines => Some(LineScope { line_id: None }),
        LineChange::Line(raw) => Some(LineScope { line_id: Some(owned_line(state, &caller.account_id, &raw).await?) }),
    };
    let command = WebhookCommand::Update { url, events, enabled: request.enabled, description: request.description, line };
    handle(&state.store, &caller.metadata, &webhook, command).await.map_err(webhook_error)?;
    if request.enabled == Some(true) {
        // Deliveries that waited while it was disabled may go now.
        state.deliverer.wake();
    }
    Ok(WebhookResponse { ok: true, webhook: webhook_queries::view(&state.pool, &webhook).await?, secret: None })
}

/// Send a signed `webhook.test` event to the caller's webhook now, limited per webhook
/// (`rate_limits.webhook_test`): each one makes the server call the webhook's URL.
pub async fn send_test(
    state: &AppState,
    caller: &Caller,
    limits: &RateLimits,
    id: &WebhookId,
) -> Result<AttemptReport, ApiError> {
    let (webhook, view) = webhook_queries::owned(&state.pool, &caller.account_id, id).await?;
    limits.webhook_test(webhook.id())?;
    // A test event carries a real line id, so a receiver that routes by line can handle it.
    let line_id = match view.line_id {
        Some(line_id) => Some(line_id),
        None => crate::queries::lines::representative(&state.pool, webhook.account_id()).await?,
    };
    state.deliverer.send_test(&webhook, line_id).await.map_err(retry_error)?.ok_or_else(|| ErrorCode::WebhookNotFound.into())
}

/// Send one delivery of the caller's webhook again now, whatever its state.
pub async fn retry_delivery(
    state: &AppState,
    caller: &Caller,
    id: &WebhookId,
    delivery_id: &str,
) -> Result<AttemptReport, ApiError> {
    let (webhook, _) = webhook_queries::owned(&state.pool, &caller.account_id, id).await?;
    state.deliverer.retry_now(&webhook, delivery_id).await.map_err(retry_error)
}

/// Create a webhook of the account under a new id.
pub async fn create(
    store: &EventStore,
    metadata: &Metadata,
    account_id: &AccountId,
    webhook_id: &WebhookId,
    command: WebhookCommand,
) -> Result<(), CommandError<WebhookError>> {
    debug_assert!(matches!(command, WebhookCommand::Create { .. }));
    run(store, metadata, account_id, webhook_id, command).await
}

/// Run `command` on the account's webhook. (The aggregate checks the account again: a webhook
/// whose stream names another account is `NotFound`.)
pub async fn handle(
    store: &EventStore,
    metadata: &Metadata,
    webhook: &OwnedWebhook,
    command: WebhookCommand,
) -> Result<(), CommandError<WebhookError>> {
    run(store, metadata, webhook.account_id(), webhook.id(), command).await
}

async fn run(
    store: &EventStore,
    metadata: &Metadata,
    account_id: &AccountId,
    webhook_id: &WebhookId,
    command: WebhookCommand,
) -> Result<(), CommandError<WebhookError>> {
    let tenant = account_id.to_string();
    let is_create = matches!(command, WebhookCommand::Create { .. });
    execute::<Webhook, _>(
        store,
        webhook_id.as_str(),
        |_| Some(tenant.clone()),
        metadata,
        |w: &Webhook| match &w.state {
            Some(s) if s.account_id != *account_id => Err(WebhookError::NotFound),
            None if !is_create => Err(WebhookError::NotFound),
            _ => w.decide(command.clone(), &()),
        },
    )
    .await?;
    Ok(())
}
