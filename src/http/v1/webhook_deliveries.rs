//! A webhook's deliveries: send a test event now, list deliveries with their attempts, and send
//! one delivery again.

use super::reads::{self, Params};
use crate::api::error::{ApiError, ErrorCode};
use crate::api::rate_limit::RateLimits;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::queries::webhook_deliveries::{self as delivery_queries, DeliveryFilter};
use crate::queries::webhooks::{self as webhook_queries, parse_id};
use crate::webhook_delivery::{AttemptReport, RetryError};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

pub use crate::queries::webhook_deliveries::{DeliveriesResponse, DeliveryView, MAX_DELIVERIES};

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

fn retry_error(e: RetryError) -> ApiError {
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
    let (webhook, view) = webhook_queries::owned(&state.pool, &tenant.identity.account_id, &parse_id(&id)?).await?;
    limits.webhook_test(webhook.id())?;
    // A test event carries a real line id, so a receiver that routes by line can handle it.
    let line_id = match view.line_id {
        Some(line_id) => Some(line_id),
        None => crate::queries::lines::representative(&state.pool, webhook.account_id()).await?,
    };
    let attempt = state.deliverer.send_test(&webhook, line_id).await.map_err(retry_error)?.ok_or(ErrorCode::WebhookNotFound)?;
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
    let filter = DeliveryFilter {
        webhook_id: parse_id(&id)?,
        limit: reads::limit(&params, MAX_DELIVERIES)?,
        status: params.get("status").cloned(),
        cursor: params.get("cursor").cloned(),
    };
    delivery_queries::list(&state.pool, &tenant.identity.account_id, filter).await.map(Json)
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
    let (webhook, _) = webhook_queries::owned(&state.pool, &tenant.identity.account_id, &parse_id(&id)?).await?;
    let attempt = state.deliverer.retry_now(&webhook, &delivery_id).await.map_err(retry_error)?;
    Ok(Json(AttemptResponse { ok: true, attempt }))
}
