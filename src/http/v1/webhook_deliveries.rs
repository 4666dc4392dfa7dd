//! A webhook's deliveries: send a test event now, list deliveries with their attempts, and send
//! one delivery again.

use super::reads::{self, Params};
use crate::api::error::ApiError;
use crate::api::rate_limit::RateLimits;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::commands::webhooks as webhook_commands;
use crate::queries::webhook_deliveries::{self as delivery_queries, DeliveryFilter};
use crate::queries::webhooks::parse_id;
use crate::webhook_delivery::AttemptReport;
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
    let attempt = webhook_commands::send_test(&state, &tenant.caller(), &limits, &parse_id(&id)?).await?;
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
    delivery_queries::list(&state.read_pool().await, &tenant.identity.account_id, filter).await.map(Json)
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
    let attempt = webhook_commands::retry_delivery(&state, &tenant.caller(), &parse_id(&id)?, &delivery_id).await?;
    Ok(Json(AttemptResponse { ok: true, attempt }))
}
