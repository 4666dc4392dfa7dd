//! A webhook's deliveries, newest first, each with its attempts.

use super::{cursor_at, next_page, page_limit, position_cursor};
use crate::api::error::ApiError;
use chrono::{DateTime, Utc};
use domain::ids::{AccountId, WebhookId};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use utoipa::ToSchema;

pub const MAX_DELIVERIES: i64 = 100;
const DEFAULT_DELIVERIES: i64 = 50;
const STATES: [&str; 5] = ["pending", "held", "in_flight", "delivered", "failed"];

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

/// Which deliveries of a webhook: a page of at most `limit` (default 50, cap [`MAX_DELIVERIES`]),
/// in one `status` if given, older than `cursor`.
pub struct DeliveryFilter {
    pub webhook_id: WebhookId,
    pub limit: Option<i64>,
    pub status: Option<String>,
    pub cursor: Option<String>,
}

/// A page of the account's webhook's deliveries (`webhook_not_found` for another account's).
pub async fn list(pool: &PgPool, account_id: &AccountId, filter: DeliveryFilter) -> Result<DeliveriesResponse, ApiError> {
    let limit = page_limit(filter.limit, DEFAULT_DELIVERIES, MAX_DELIVERIES)?;
    let status = filter.status.as_deref();
    if let Some(s) = status.filter(|s| !STATES.contains(s)) {
        return Err(ApiError::invalid_field(
            "status",
            format!("`status` must be one of {}; got `{}`.", STATES.join(", "), s.chars().take(32).collect::<String>()),
        ));
    }
    let before = position_cursor(filter.cursor.as_deref())?;
    let (webhook, _) = super::webhooks::owned(pool, account_id, &filter.webhook_id).await?;
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
    .bind(webhook.id().as_str())
    .bind(webhook.account_id().as_str())
    .bind(before)
    .bind(status)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let next_cursor = next_page(&mut deliveries, limit, |d| cursor_at(d.seq));
    Ok(DeliveriesResponse { ok: true, deliveries, next_cursor })
}
