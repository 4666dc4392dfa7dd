//! The Usage page: the current billing cycle per metric against the plan's limit (what
//! `GET /v1/usage` answers), sent messages and webhook events per day as a chart drawn here
//! ([`super::usage_chart`]) and as a table, and the account's usage as CSV (what
//! `bridge usage export` writes, for this account only).

use super::auth::ConsoleSession;
use super::page::{render, render_with, utc, Chrome, ConsoleError, Nav};
use crate::app::AppState;
use crate::usage::{DayUsage, ExportPeriod};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use serde::Deserialize;

/// The routes of the section, relative to `/console`.
pub fn routes() -> Router<AppState> {
    Router::new().route("/usage", get(usage)).route("/usage.csv", get(csv))
}

/// One metric of the cycle.
pub struct MetricRow {
    pub metric: String,
    pub used: u64,
    pub limit: u64,
    pub remaining: u64,
    /// Used, in percent of the limit (0 to 100).
    pub percent: u64,
}

#[derive(Template)]
#[template(path = "console/usage.html")]
struct UsagePage {
    chrome: Option<Chrome>,
    plan: String,
    cycle_start: String,
    cycle_end: String,
    metrics: Vec<MetricRow>,
    days: Vec<DayUsage>,
    chart: String,
    /// The export's month (`YYYY-MM`) as typed, and what is wrong with it.
    cycle: String,
    cycle_error: Option<String>,
}

async fn page(state: &AppState, session: &ConsoleSession) -> Result<UsagePage, ConsoleError> {
    let usage =
        crate::queries::account::usage_of(&state.pool, &state.plans, &session.account_id, &session.plan, session.cycle_anchor)
            .await
            .map_err(|e| ConsoleError::Internal(anyhow::anyhow!("reading usage: {}", e.message())))?;
    let (start, end) = (usage.period.start, usage.period.end);
    let days = crate::usage::per_day(&state.pool, &session.account_id, start, end.min(Utc::now())).await?;
    let metrics = usage
        .usage
        .into_iter()
        .map(|(metric, u)| MetricRow {
            percent: u.used.saturating_mul(100).checked_div(u.limit).map_or(100, |p| p.min(100)),
            metric,
            used: u.used,
            limit: u.limit,
            remaining: u.remaining,
        })
        .collect();
    Ok(UsagePage {
        chrome: Some(session.chrome(Nav::Usage)),
        plan: usage.plan,
        cycle_start: utc(start),
        cycle_end: utc(end),
        metrics,
        chart: super::usage_chart::svg(&days),
        days,
        cycle: start.format("%Y-%m").to_string(),
        cycle_error: None,
    })
}

pub async fn usage(State(state): State<AppState>, session: ConsoleSession) -> Result<Response, ConsoleError> {
    Ok(render(&page(&state, &session).await?))
}

#[derive(Deserialize)]
pub struct CsvQuery {
    #[serde(default)]
    cycle: String,
}

/// The account's usage of the billing cycles that start in the month asked for, as CSV.
pub async fn csv(
    State(state): State<AppState>,
    session: ConsoleSession,
    Query(query): Query<CsvQuery>,
) -> Result<Response, ConsoleError> {
    let cycle = query.cycle.trim();
    let period = match ExportPeriod::choose(Some(cycle), None, None) {
        Ok(period) => period,
        Err((_, why)) => {
            let mut shown = page(&state, &session).await?;
            shown.cycle = cycle.chars().take(32).collect();
            shown.cycle_error = Some(format!("{}{}.", why[..1].to_uppercase(), &why[1..]));
            return Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &shown));
        }
    };
    let rows = crate::usage::export_account(&state.pool, &state.plans, &session.account_id, period, Utc::now()).await?;
    let filename = format!("usage-{}-{}.csv", session.account_id, period.from.format("%Y-%m"));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        crate::usage::to_csv(&rows),
    )
        .into_response())
}
