//! The calling account: its plan and limits, subscription and billing cycle (`me`), and what it
//! has used of the plan in the current cycle (`usage`).

use crate::api::error::ApiError;
use crate::auth::Identity;
use chrono::{DateTime, Utc};
use domain::ids::AccountId;
use domain::plan::{Metric, PlanCatalog, PlanLimits};
use serde::Serialize;
use sqlx::PgPool;
use std::collections::BTreeMap;
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

#[derive(Serialize, ToSchema)]
pub struct UsageResponse {
    pub ok: bool,
    #[schema(example = "pro")]
    pub plan: String,
    pub period: CycleView,
    /// `sent_messages`, `webhook_events` and `lines`.
    pub usage: BTreeMap<String, MetricUsage>,
}

#[derive(Serialize, ToSchema)]
pub struct MetricUsage {
    pub used: u64,
    pub limit: u64,
    pub remaining: u64,
}

/// The account of the key that made the request.
pub fn me(plans: &PlanCatalog, id: &Identity) -> Result<MeResponse, ApiError> {
    let (_, limits) = plans.get(&id.plan).map_err(ApiError::server)?;
    let cycle = domain::billing::cycle_containing(id.cycle_anchor, Utc::now());
    Ok(MeResponse {
        ok: true,
        account: AccountView { id: id.account_id.to_string(), name: id.account_name.clone(), created_at: id.created_at },
        plan: PlanView { name: id.plan.clone(), limits: limits.into() },
        subscription: SubscriptionView { status: id.status.as_str().to_owned() },
        billing_cycle: CycleView { start: cycle.start, end: cycle.end },
        key_id: id.key_id.to_string(),
    })
}

/// The account's use of each metric of its plan in the current billing cycle.
pub async fn usage(pool: &PgPool, plans: &PlanCatalog, id: &Identity) -> Result<UsageResponse, ApiError> {
    usage_of(pool, plans, &id.account_id, &id.plan, id.cycle_anchor).await
}

/// [`usage`] of an account known by its id, plan and cycle anchor (the console's session knows
/// these without an API key).
pub async fn usage_of(
    pool: &PgPool,
    plans: &PlanCatalog,
    account_id: &AccountId,
    plan: &str,
    cycle_anchor: DateTime<Utc>,
) -> Result<UsageResponse, ApiError> {
    let (_, limits) = plans.get(plan).map_err(ApiError::server)?;
    let cycle = domain::billing::cycle_containing(cycle_anchor, Utc::now());
    let used = crate::usage::current(pool, account_id, cycle.start).await?;
    let usage = Metric::ALL
        .into_iter()
        .map(|metric| {
            let used = used.get(&metric).copied().unwrap_or(0);
            let limit = limits.limit(metric);
            (metric.as_str().to_owned(), MetricUsage { used, limit, remaining: limit.saturating_sub(used) })
        })
        .collect();
    Ok(UsageResponse { ok: true, plan: plan.to_owned(), period: CycleView { start: cycle.start, end: cycle.end }, usage })
}
