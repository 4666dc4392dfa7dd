//! `GET /v1/usage`: consumption of the current billing cycle against the plan's limits.

use super::me::CycleView;
use crate::http::error::ApiError;
use crate::http::extract::AnyTenant;
use crate::http::AppState;
use axum::extract::State;
use axum::Json;
use chrono::Utc;
use domain::plan::Metric;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

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

/// Period consumption.
#[utoipa::path(get, path = "/v1/usage", tag = "account", operation_id = "getUsage",
    responses((status = 200, description = "Usage in the current billing cycle", body = UsageResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn usage(State(state): State<AppState>, tenant: AnyTenant) -> Result<Json<UsageResponse>, ApiError> {
    let id = &tenant.identity;
    let (_, limits) = state.plans.get(&id.plan).map_err(ApiError::server)?;
    let cycle = domain::billing::cycle_containing(id.cycle_anchor, Utc::now());
    let used = crate::usage::current(&state.pool, &id.account_id, cycle.start).await?;
    let usage = Metric::ALL
        .into_iter()
        .map(|metric| {
            let used = used.get(&metric).copied().unwrap_or(0);
            let limit = limits.limit(metric);
            (metric.as_str().to_owned(), MetricUsage { used, limit, remaining: limit.saturating_sub(used) })
        })
        .collect();
    Ok(Json(UsageResponse { ok: true, plan: id.plan.clone(), period: CycleView { start: cycle.start, end: cycle.end }, usage }))
}
