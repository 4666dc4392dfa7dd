//! `GET /v1/me`: the account, its plan and limits, subscription status and current billing cycle.

use crate::api::error::ApiError;
use crate::api::tenant::AnyTenant;
use crate::app::AppState;
use axum::extract::State;
use axum::Json;

pub use crate::queries::account::{AccountView, CycleView, LimitsView, MeResponse, PlanView, SubscriptionView};

/// Account, plan and limits.
#[utoipa::path(get, path = "/v1/me", tag = "account", operation_id = "getMe",
    responses((status = 200, description = "The calling account, its plan, subscription and billing cycle", body = MeResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn me(State(state): State<AppState>, tenant: AnyTenant) -> Result<Json<MeResponse>, ApiError> {
    crate::queries::account::me(&state.plans, &tenant.identity).map(Json)
}
