//! `GET /v1/usage`: consumption of the current billing cycle against the plan's limits.

use crate::api::error::ApiError;
use crate::api::tenant::AnyTenant;
use crate::app::AppState;
use axum::extract::State;
use axum::Json;

pub use crate::queries::account::{MetricUsage, UsageResponse};

/// Period consumption.
#[utoipa::path(get, path = "/v1/usage", tag = "account", operation_id = "getUsage",
    responses((status = 200, description = "Usage in the current billing cycle", body = UsageResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn usage(State(state): State<AppState>, tenant: AnyTenant) -> Result<Json<UsageResponse>, ApiError> {
    crate::queries::account::usage(&state.read_pool().await, &state.plans, &tenant.identity).await.map(Json)
}
