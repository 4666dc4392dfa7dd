//! A webhook's deliveries: send a test event now, list deliveries with their attempts, and send
//! one delivery again.

use super::reads::{self, Params};
use super::webhooks::{fetch, parse_id};
use crate::http::error::ApiError;
use crate::http::extract::Tenant;
use crate::http::rate_limit::RateLimits;
use crate::http::AppState;
use crate::webhook_delivery::{AttemptReport, RetryError};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

pub const MAX_DELIVERIES: i64 = 100;
const STATES: [&str; 5] = ["pending", "held", "in_flight", "delivered", "failed"];

/// The states of a delivery, to filter the list by.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum DeliveryState {
    Pending,
    Held,
    InFlight,
    Delivered,
    Failed,
}

#[derive(Serialize, ToSchema)]
pub struct AttemptResponse {
    pub ok: bool,
    #[serde(flatten)]
    pub attempt: AttemptReport,
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct DeliveryView {
    #[schema(example = "dlv_01jdzq2m9a8x0v3k1s5t7w9y2b")]
    pub id: String,
    /// `message.received`, `message.sent`, `message.status`, `line.status` or `webhook.test`.
    pub event: String,
    /// The `id` of the body: the event's id, the same on every attempt.
    pub event_id: String,
    /// `pending` (waiting for its next attempt), `held` (over the plan's webhook_events quota),
    /// `in_flight`, `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_duration_ms: Option<i32>,
    pub last_error: Option<String>,
    /// When it is tried next, while pending or held.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// Every attempt: number, start time, status code, duration in ms, error.
    #[schema(value_type = Vec<Object>)]
    pub attempt_log: Value,
    #[serde(skip)]
    pub seq: i64,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveriesResponse {
    pub ok: bool,
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

fn retry_error(e: RetryError) -> ApiError {
    match e {
        RetryError::NotFound => ApiError::not_found("delivery_not_found", "The delivery does not exist for this webhook."),
        RetryError::InFlight => {
            ApiError::flat(StatusCode::CONFLICT, "delivery_in_flight", "The delivery is being sent right now; try again shortly.")
        }
        RetryError::Held { quota: Some(q), .. } => {
            ApiError::flat(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", "Monthly quota exceeded")
                .with("metric", "webhook_events")
                .with("used", q.used)
                .with("limit", q.limit)
                .with("plan", q.plan)
        }
        RetryError::Held { reason, quota: None } => ApiError::flat(StatusCode::CONFLICT, "delivery_held", reason),
        RetryError::Internal(e) => ApiError::server(e),
    }
}

/// Send a signed `webhook.test` event now; answers with the receiver's status and latency.
///
/// Limited per webhook (`rate_limits.webhook_test`).
#[utoipa::path(post, path = "/v1/webhooks/{id}/test", tag = "webhooks", operation_id = "testWebhook", params(("id" = String, Path, description = "The webhook: a `wh_…` id")),
    responses((status = 200, description = "The attempt: the receiver's status code, latency and error", body = AttemptResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn test(
    State(state): State<AppState>,
    tenant: Tenant,
    limits: RateLimits,
    Path(id): Path<String>,
) -> Result<Json<AttemptResponse>, ApiError> {
    let id = parse_id(&id)?;
    let webhook = fetch(&state, &tenant, &id).await?;
    limits.webhook_test(&id)?;
    // A test event carries a real line id, so a receiver that routes by line can handle it.
    let line_id = match webhook.line_id {
        Some(line_id) => Some(line_id),
        None => super::lines::representative_line(&state.pool, &tenant.identity.account_id).await?,
    };
    let attempt = state
        .deliverer
        .send_test(&tenant.identity.account_id, &id, line_id)
        .await
        .map_err(retry_error)?
        .ok_or_else(super::webhooks::not_found)?;
    Ok(Json(AttemptResponse { ok: true, attempt }))
}

/// The webhook's deliveries, newest first, each with its attempts.
#[utoipa::path(get, path = "/v1/webhooks/{id}/deliveries", tag = "webhooks", operation_id = "listWebhookDeliveries",
    params(("id" = String, Path, description = "The webhook: a `wh_…` id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 9223372036854775807_i64, description = "How many (default 50; larger values than 100 are taken as 100)"),
        ("status" = Option<DeliveryState>, Query, description = "Only deliveries in this state"),
        ("cursor" = Option<String>, Query, pattern = r"^c[1-9][0-9]{0,17}$", description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "The webhook's deliveries, newest first, each with its attempts", body = DeliveriesResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(id): Path<String>,
    Query(params): Query<Params>,
) -> Result<Json<DeliveriesResponse>, ApiError> {
    let id = parse_id(&id)?;
    let limit = reads::limit(&params, 50, MAX_DELIVERIES)?;
    let status = params.get("status").map(String::as_str);
    if let Some(s) = status.filter(|s| !STATES.contains(s)) {
        return Err(ApiError::invalid_field(
            "status",
            format!("`status` must be one of {}; got `{}`.", STATES.join(", "), s.chars().take(32).collect::<String>()),
        ));
    }
    let before = reads::cursor(&params)?;
    fetch(&state, &tenant, &id).await?;
    let mut deliveries: Vec<DeliveryView> = sqlx::query_as(
        "SELECT d.delivery_id AS id, d.event_type AS event, d.event_id, d.state AS status, d.attempts, d.last_status_code, \
             d.last_duration_ms, d.last_error, \
             CASE WHEN d.state IN ('pending', 'held') THEN d.next_attempt_at END AS next_attempt_at, \
             d.created_at, d.delivered_at, d.seq, \
             COALESCE((SELECT json_agg(json_build_object('attempt', a.attempt, 'started_at', a.started_at, \
                          'status_code', a.status_code, 'duration_ms', a.duration_ms, 'error', a.error) ORDER BY a.attempt) \
                       FROM webhook_attempts a WHERE a.delivery_id = d.delivery_id), '[]'::json) AS attempt_log \
         FROM webhook_deliveries d \
         WHERE d.webhook_id = $1 AND d.account_id = $2 AND ($3::bigint IS NULL OR d.seq < $3) \
           AND ($4::text IS NULL OR d.state = $4) \
         ORDER BY d.seq DESC LIMIT $5",
    )
    .bind(id.as_str())
    .bind(tenant.identity.account_id.as_str())
    .bind(before)
    .bind(status)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let next_cursor = reads::next_page(&mut deliveries, limit, |d| reads::position_cursor(d.seq));
    Ok(Json(DeliveriesResponse { ok: true, deliveries, next_cursor }))
}

/// Send one delivery again now, whatever its state; answers like the test endpoint.
#[utoipa::path(post, path = "/v1/webhooks/{id}/deliveries/{delivery_id}/retry", tag = "webhooks", operation_id = "retryWebhookDelivery",
    params(("id" = String, Path, description = "The webhook: a `wh_…` id"), ("delivery_id" = String, Path, description = "The delivery: a `dlv_…` id")),
    responses((status = 200, description = "The attempt", body = AttemptResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    tenant: Tenant,
    Path((id, delivery_id)): Path<(String, String)>,
) -> Result<Json<AttemptResponse>, ApiError> {
    let id = parse_id(&id)?;
    fetch(&state, &tenant, &id).await?;
    let attempt = state.deliverer.retry_now(&tenant.identity.account_id, &id, &delivery_id).await.map_err(retry_error)?;
    Ok(Json(AttemptResponse { ok: true, attempt }))
}
