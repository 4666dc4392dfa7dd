//! `GET /v1/me`: the account, its plan and limits, subscription status and current billing cycle.

use crate::http::error::ApiError;
use crate::http::extract::AnyTenant;
use crate::http::AppState;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use domain::plan::PlanLimits;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct MeResponse {
    pub ok: bool,
    pub account: AccountView,
    pub plan: PlanView,
    pub subscription: SubscriptionView,
    pub billing_cycle: CycleView,
    /// The key that made this request.
    pub key_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct AccountView {
    #[schema(example = "acc_01jdzq2m9a8x0v3k1s5t7w9y2b")]
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct PlanView {
    #[schema(example = "pro")]
    pub name: String,
    pub limits: LimitsView,
}

#[derive(Serialize, ToSchema)]
pub struct LimitsView {
    /// Messages that may be sent per billing cycle.
    pub sent_messages: u64,
    /// Webhook events that may be delivered per billing cycle.
    pub webhook_events: u64,
    /// Lines that may exist at once.
    pub lines: u64,
}

impl From<&PlanLimits> for LimitsView {
    fn from(l: &PlanLimits) -> Self {
        Self { sent_messages: l.sent_messages, webhook_events: l.webhook_events, lines: l.lines }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionView {
    /// `active` or `suspended`.
    #[schema(example = "active")]
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct CycleView {
    /// Inclusive.
    pub start: DateTime<Utc>,
    /// Exclusive: the start of the next cycle.
    pub end: DateTime<Utc>,
}

/// Account, plan and limits.
#[utoipa::path(get, path = "/v1/me", tag = "account", operation_id = "getMe",
    responses((status = 200, description = "The calling account, its plan, subscription and billing cycle", body = MeResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn me(State(state): State<AppState>, tenant: AnyTenant) -> Result<Json<MeResponse>, ApiError> {
    let id = &tenant.identity;
    let (_, limits) = state.plans.get(&id.plan).map_err(ApiError::server)?;
    let cycle = domain::billing::cycle_containing(id.cycle_anchor, Utc::now());
    Ok(Json(MeResponse {
        ok: true,
        account: AccountView { id: id.account_id.to_string(), name: id.account_name.clone(), created_at: id.created_at },
        plan: PlanView { name: id.plan.clone(), limits: limits.into() },
        subscription: SubscriptionView { status: id.status.as_str().to_owned() },
        billing_cycle: CycleView { start: cycle.start, end: cycle.end },
        key_id: id.key_id.to_string(),
    }))
}
