//! The Webhooks page: the account's webhooks and registering one (its secret shown once), and a
//! page per webhook to edit its URL, events, line and description, enable or disable it, send a
//! test event (answered inline with the status code, latency and error), read the delivery log
//! with every attempt (filtered by status, refreshed live), send one delivery again, and copy the
//! published code that verifies the signature.
//!
//! Every action runs the commands REST runs (`commands::webhooks`) with the signed-in user as the
//! caller; fields are checked there, by the API's rules, and a refusal naming a field is shown
//! next to that field.

use super::auth::ConsoleSession;
use super::csrf::SignedForm;
use super::page::{render, render_with, utc, wants_fragment, Chrome, ConsoleError, Nav};
use crate::api::error::{ApiError, ErrorCode};
use crate::api::rate_limit::RateLimits;
use crate::app::AppState;
use crate::commands::webhooks::{self as commands, CreateWebhookRequest, LineChange, UpdateWebhookRequest};
use crate::queries::lines::LineView;
use crate::queries::webhook_deliveries::{self as delivery_queries, DeliveryFilter, DeliveryView};
use crate::queries::webhooks::{self as webhook_queries, WebhookView};
use crate::webhook_delivery::AttemptReport;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use domain::ids::WebhookId;
use domain::webhook::EVENT_TYPES;
use serde::Deserialize;

/// The routes of the section, relative to `/console`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list).post(create))
        .route("/webhooks/{id}", get(show).post(edit))
        .route("/webhooks/{id}/enabled", post(set_enabled))
        .route("/webhooks/{id}/test", post(test))
        .route("/webhooks/{id}/deliveries", get(deliveries))
        .route("/webhooks/{id}/deliveries/{delivery_id}/retry", post(retry))
}

const NO_SUCH_WEBHOOK: &str = "There is no such webhook in this account.";
const NO_SUCH_DELIVERY: &str = "There is no such delivery of this webhook.";
/// The states a delivery can be in, for the log's filter.
const DELIVERY_STATES: [&str; 5] = ["pending", "held", "in_flight", "delivered", "failed"];

/// A refusal of the API that is not about a field, as a console page.
fn page_error(e: ApiError) -> ConsoleError {
    match e.code() {
        ErrorCode::WebhookNotFound => ConsoleError::NotFound(NO_SUCH_WEBHOOK),
        ErrorCode::DeliveryNotFound => ConsoleError::NotFound(NO_SUCH_DELIVERY),
        ErrorCode::SubscriptionRequired => ConsoleError::SubscriptionRequired,
        _ => ConsoleError::Internal(anyhow::anyhow!("{}: {}", e.message(), e.cause().unwrap_or("-"))),
    }
}

fn webhook_id(raw: &str) -> Result<WebhookId, ConsoleError> {
    WebhookId::parse(raw).map_err(|_| ConsoleError::NotFound(NO_SUCH_WEBHOOK))
}

/// What the webhook form holds, as typed (kept when it is shown again with errors).
#[derive(Debug, Default, Clone)]
pub struct WebhookForm {
    pub url: String,
    pub events: Vec<String>,
    /// A line id, or empty for every line.
    pub line: String,
    pub description: String,
}

impl WebhookForm {
    /// The form as posted (`events` may repeat).
    fn posted(fields: &[(String, String)]) -> Self {
        let mut form = WebhookForm::default();
        for (name, value) in fields {
            match name.as_str() {
                "url" => form.url = value.trim().to_owned(),
                "events" => form.events.push(value.clone()),
                "line" => form.line = value.trim().to_owned(),
                "description" => form.description = value.clone(),
                _ => {}
            }
        }
        form
    }

    /// The form filled in with the webhook as it is.
    fn of(view: &WebhookView) -> Self {
        WebhookForm {
            url: view.url.clone(),
            events: view.events.clone(),
            line: view.line_id.clone().unwrap_or_default(),
            description: view.description.clone().unwrap_or_default(),
        }
    }

    pub fn has_event(&self, event: &&str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

/// Errors shown next to the form's fields.
#[derive(Debug, Default)]
pub struct FieldErrors {
    pub url: Option<String>,
    pub events: Option<String>,
    pub line: Option<String>,
    pub description: Option<String>,
}

impl FieldErrors {
    /// The field an API refusal names, or the refusal as a page when it names none.
    fn of(e: ApiError) -> Result<Self, ConsoleError> {
        let mut errors = FieldErrors::default();
        let message = Some(e.message().to_owned());
        match e.code() {
            ErrorCode::ValidationError => match e.details.get("field").and_then(|f| f.as_str()) {
                Some("url") => errors.url = message,
                Some("events") => errors.events = message,
                Some("description") => errors.description = message,
                Some("line_id") => errors.line = message,
                _ => return Err(page_error(e)),
            },
            ErrorCode::LineNotFound => errors.line = Some("There is no such line in this account.".into()),
            _ => return Err(page_error(e)),
        }
        Ok(errors)
    }
}

/// The parts of the webhook form every page that shows it needs.
pub struct FormParts {
    pub form: WebhookForm,
    pub errors: FieldErrors,
    pub lines: Vec<LineView>,
    pub event_types: [&'static str; 4],
}

impl FormParts {
    async fn new(state: &AppState, session: &ConsoleSession, form: WebhookForm) -> Result<Self, ConsoleError> {
        let lines = crate::queries::lines::list(&state.pool, &session.account_id).await.map_err(page_error)?.lines;
        Ok(FormParts { form, errors: FieldErrors::default(), lines, event_types: EVENT_TYPES })
    }
}

/// One row of the list.
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    pub events: String,
    pub line: String,
    pub description: String,
    pub enabled: bool,
    pub created_at: String,
}

#[derive(Template)]
#[template(path = "console/webhooks.html")]
struct WebhooksPage {
    chrome: Option<Chrome>,
    csrf: String,
    webhooks: Vec<WebhookRow>,
    /// The webhook just registered and its secret, shown this once.
    created: Option<(String, String)>,
    parts: FormParts,
}

async fn list_page(
    state: &AppState,
    session: &ConsoleSession,
    parts: FormParts,
    created: Option<(String, String)>,
) -> Result<WebhooksPage, ConsoleError> {
    let webhooks = webhook_queries::list(&state.pool, &session.account_id).await.map_err(page_error)?.webhooks;
    Ok(WebhooksPage {
        chrome: Some(session.chrome(Nav::Webhooks)),
        csrf: session.csrf.clone(),
        webhooks: webhooks
            .into_iter()
            .map(|w| WebhookRow {
                events: w.events.join(", "),
                line: w.line_id.unwrap_or_else(|| "every line".into()),
                description: w.description.unwrap_or_default(),
                enabled: w.enabled,
                created_at: utc(w.created_at),
                id: w.id,
                url: w.url,
            })
            .collect(),
        created,
        parts,
    })
}

pub async fn list(State(state): State<AppState>, session: ConsoleSession) -> Result<Response, ConsoleError> {
    let parts =
        FormParts::new(&state, &session, WebhookForm { events: EVENT_TYPES.map(String::from).into(), ..Default::default() })
            .await?;
    Ok(render(&list_page(&state, &session, parts, None).await?))
}

/// Register a webhook; the page answered shows its secret, this once.
pub async fn create(
    State(state): State<AppState>,
    SignedForm { session, form }: SignedForm<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    session.require_active()?;
    let form = WebhookForm::posted(&form);
    let request = CreateWebhookRequest {
        url: Some(form.url.clone()).filter(|u| !u.is_empty()),
        events: Some(form.events.clone()),
        line_id: Some(form.line.clone()).filter(|l| !l.is_empty()),
        description: Some(form.description.clone()).filter(|d| !d.is_empty()),
    };
    match commands::register(&state, &session.caller(), request).await {
        Ok(created) => {
            let parts = FormParts::new(&state, &session, WebhookForm::default()).await?;
            let shown = (created.webhook.id, created.secret.unwrap_or_default());
            Ok(render(&list_page(&state, &session, parts, Some(shown)).await?))
        }
        Err(e) => {
            let mut parts = FormParts::new(&state, &session, form).await?;
            parts.errors = FieldErrors::of(e)?;
            Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &list_page(&state, &session, parts, None).await?))
        }
    }
}

/// One attempt of one delivery, as the log shows it.
pub struct AttemptRow {
    pub attempt: i64,
    pub started_at: String,
    pub status_code: String,
    pub duration_ms: String,
    pub error: String,
}

/// One delivery, as the log shows it.
pub struct DeliveryRow {
    pub id: String,
    pub event: String,
    pub status: String,
    pub created_at: String,
    pub next_attempt_at: Option<String>,
    pub attempts: Vec<AttemptRow>,
}

impl From<DeliveryView> for DeliveryRow {
    fn from(d: DeliveryView) -> Self {
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::Null => "–".to_owned(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let attempts = d
            .attempt_log
            .as_array()
            .map(|log| {
                log.iter()
                    .map(|a| AttemptRow {
                        attempt: a["attempt"].as_i64().unwrap_or(0),
                        started_at: a["started_at"]
                            .as_str()
                            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                            .map_or_else(|| text(&a["started_at"]), |t| utc(t.with_timezone(&Utc))),
                        status_code: text(&a["status_code"]),
                        duration_ms: text(&a["duration_ms"]),
                        error: text(&a["error"]),
                    })
                    .collect()
            })
            .unwrap_or_default();
        DeliveryRow {
            id: d.id,
            event: d.event,
            status: d.status,
            created_at: utc(d.created_at),
            next_attempt_at: d.next_attempt_at.map(utc),
            attempts,
        }
    }
}

/// The delivery log of a webhook: a page of deliveries in one status (or all).
pub struct DeliveryLog {
    pub webhook_id: String,
    pub status: String,
    pub status_error: Option<String>,
    pub deliveries: Vec<DeliveryRow>,
    pub next_cursor: Option<String>,
    pub states: [&'static str; 5],
}

impl DeliveryLog {
    /// 422 when the filter was refused, else 200.
    fn http_status(&self) -> StatusCode {
        if self.status_error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        }
    }

    pub fn is_status(&self, state: &str) -> bool {
        self.status == state
    }

    /// The log's own address with this filter (what its live part polls).
    pub fn href(&self) -> String {
        format!("/console/webhooks/{}/deliveries?status={}", self.webhook_id, self.status)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct LogQuery {
    #[serde(default)]
    status: String,
    cursor: Option<String>,
}

/// The log as the query asks; a status the API does not know is shown as the filter's error.
async fn delivery_log(
    state: &AppState,
    session: &ConsoleSession,
    id: &WebhookId,
    query: LogQuery,
) -> Result<DeliveryLog, ConsoleError> {
    let mut log = DeliveryLog {
        webhook_id: id.to_string(),
        status: query.status.clone(),
        status_error: None,
        deliveries: vec![],
        next_cursor: None,
        states: DELIVERY_STATES,
    };
    let filter = DeliveryFilter {
        webhook_id: id.clone(),
        limit: None,
        status: Some(query.status).filter(|s| !s.is_empty()),
        cursor: query.cursor.filter(|c| !c.is_empty()),
    };
    match delivery_queries::list(&state.pool, &session.account_id, filter).await {
        Ok(page) => {
            log.deliveries = page.deliveries.into_iter().map(DeliveryRow::from).collect();
            log.next_cursor = page.next_cursor;
        }
        Err(e) if e.code() == ErrorCode::ValidationError => log.status_error = Some(e.message().to_owned()),
        Err(e) => return Err(page_error(e)),
    }
    Ok(log)
}

/// What a test or a retry got: the receiver's answer, or why nothing was sent.
pub enum AttemptResult {
    Sent(AttemptReport),
    Refused(String),
}

#[derive(Template)]
#[template(path = "console/webhook.html")]
struct WebhookPage {
    chrome: Option<Chrome>,
    csrf: String,
    webhook: WebhookView,
    created_at: String,
    updated_at: String,
    parts: FormParts,
    log: DeliveryLog,
    result: Option<AttemptResult>,
}

async fn webhook_page(
    state: &AppState,
    session: &ConsoleSession,
    id: &WebhookId,
    form: Option<WebhookForm>,
    query: LogQuery,
) -> Result<WebhookPage, ConsoleError> {
    let (_, webhook) = webhook_queries::owned(&state.pool, &session.account_id, id).await.map_err(page_error)?;
    let parts = FormParts::new(state, session, form.unwrap_or_else(|| WebhookForm::of(&webhook))).await?;
    let log = delivery_log(state, session, id, query).await?;
    Ok(WebhookPage {
        chrome: Some(session.chrome(Nav::Webhooks)),
        csrf: session.csrf.clone(),
        created_at: utc(webhook.created_at),
        updated_at: utc(webhook.updated_at),
        webhook,
        parts,
        log,
        result: None,
    })
}

pub async fn show(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path(raw): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ConsoleError> {
    let id = webhook_id(&raw)?;
    let page = webhook_page(&state, &session, &id, None, query).await?;
    Ok(render_with(page.log.http_status(), &page))
}

/// Change what the form changes (fields left as they are are not sent), in one event.
pub async fn edit(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    SignedForm { session, form }: SignedForm<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    session.require_active()?;
    let id = webhook_id(&raw)?;
    let (_, now) = webhook_queries::owned(&state.pool, &session.account_id, &id).await.map_err(page_error)?;
    let form = WebhookForm::posted(&form);
    let changed = |new: &str, old: &str| (new != old).then(|| new.to_owned());
    let mut events = form.events.clone();
    events.sort();
    let mut old_events = now.events.clone();
    old_events.sort();
    let request = UpdateWebhookRequest {
        url: changed(&form.url, &now.url),
        events: (events != old_events).then_some(form.events.clone()),
        enabled: None,
        description: changed(&form.description, now.description.as_deref().unwrap_or_default()),
    };
    let line = match (form.line.as_str(), now.line_id.as_deref()) {
        (new, old) if Some(new).filter(|l| !l.is_empty()) == old => LineChange::Keep,
        ("", _) => LineChange::AllLines,
        (new, _) => LineChange::Line(new.to_owned()),
    };
    match commands::update(&state, &session.caller(), &id, request, line).await {
        Ok(_) => Ok(Redirect::to(&format!("/console/webhooks/{id}")).into_response()),
        Err(e) => {
            let errors = FieldErrors::of(e)?;
            let mut page = webhook_page(&state, &session, &id, Some(form), LogQuery::default()).await?;
            page.parts.errors = errors;
            Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &page))
        }
    }
}

#[derive(Deserialize)]
pub struct EnabledForm {
    #[serde(default)]
    enabled: String,
}

/// Enable (`enabled=true`) or disable (`enabled=false`) the webhook.
pub async fn set_enabled(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    SignedForm { session, form }: SignedForm<EnabledForm>,
) -> Result<Response, ConsoleError> {
    session.require_active()?;
    let id = webhook_id(&raw)?;
    let enabled = match form.enabled.as_str() {
        "true" => true,
        "false" => false,
        _ => return Err(ConsoleError::NotFound("Enable or disable: there is no other choice.")),
    };
    let request = UpdateWebhookRequest { url: None, events: None, enabled: Some(enabled), description: None };
    commands::update(&state, &session.caller(), &id, request, LineChange::Keep).await.map_err(page_error)?;
    Ok(Redirect::to(&format!("/console/webhooks/{id}")).into_response())
}

#[derive(Template)]
#[template(path = "console/webhook_attempt.html")]
struct AttemptFragment {
    result: Option<AttemptResult>,
}

/// The answer to a test or a retry: inline, the result panel alone; otherwise the webhook's page
/// with the result panel filled in.
async fn attempt_answer(
    state: &AppState,
    session: &ConsoleSession,
    headers: &HeaderMap,
    id: &WebhookId,
    attempt: Result<AttemptReport, ApiError>,
) -> Result<Response, ConsoleError> {
    let (status, result) = match attempt {
        Ok(report) => (StatusCode::OK, AttemptResult::Sent(report)),
        Err(e) => match e.code() {
            ErrorCode::RateLimited | ErrorCode::DeliveryInFlight | ErrorCode::DeliveryHeld | ErrorCode::QuotaExceeded => {
                (e.status(), AttemptResult::Refused(e.message().to_owned()))
            }
            _ => return Err(page_error(e)),
        },
    };
    if wants_fragment(headers) {
        return Ok(render_with(status, &AttemptFragment { result: Some(result) }));
    }
    let mut page = webhook_page(state, session, id, None, LogQuery::default()).await?;
    page.result = Some(result);
    Ok(render_with(status, &page))
}

/// Send a signed test event now (limited per webhook, as `POST /v1/webhooks/{id}/test`).
pub async fn test(
    State(state): State<AppState>,
    Extension(limits): Extension<RateLimits>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    SignedForm { session, .. }: SignedForm<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    session.require_active()?;
    let id = webhook_id(&raw)?;
    let attempt = commands::send_test(&state, &session.caller(), &limits, &id).await;
    attempt_answer(&state, &session, &headers, &id, attempt).await
}

/// Send one delivery again now.
pub async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((raw, delivery_id)): Path<(String, String)>,
    SignedForm { session, .. }: SignedForm<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    session.require_active()?;
    let id = webhook_id(&raw)?;
    let attempt = commands::retry_delivery(&state, &session.caller(), &id, &delivery_id).await;
    attempt_answer(&state, &session, &headers, &id, attempt).await
}

#[derive(Template)]
#[template(path = "console/webhook_deliveries.html")]
struct DeliveriesFragment {
    csrf: String,
    log: DeliveryLog,
}

/// The delivery log alone: what the page's live part polls.
pub async fn deliveries(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path(raw): Path<String>,
    Query(query): Query<LogQuery>,
) -> Result<Response, ConsoleError> {
    let id = webhook_id(&raw)?;
    webhook_queries::owned(&state.pool, &session.account_id, &id).await.map_err(page_error)?;
    let log = delivery_log(&state, &session, &id, query).await?;
    Ok(render_with(log.http_status(), &DeliveriesFragment { csrf: session.csrf.clone(), log }))
}
