//! The Overview page: plan, billing cycle, usage against limits, and the lines with their status,
//! read through the same queries as `GET /v1/usage` and `GET /v1/lines`.

use super::auth::ConsoleSession;
use super::page::{render, Chrome, ConsoleError, Nav};
use crate::app::AppState;
use crate::queries::lines::LineView;
use askama::Template;
use axum::extract::State;
use axum::response::Response;

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    chrome: Option<Chrome>,
    plan: String,
    subscription: String,
    cycle_start: String,
    cycle_start_day: String,
    cycle_end: String,
    cycle_end_day: String,
    /// (metric, used, limit, remaining)
    usage: Vec<(String, u64, u64, u64)>,
    lines: Vec<LineView>,
}

pub async fn overview(State(state): State<AppState>, session: ConsoleSession) -> Result<Response, ConsoleError> {
    let usage =
        crate::queries::account::usage_of(&state.pool, &state.plans, &session.account_id, &session.plan, session.cycle_anchor)
            .await
            .map_err(|e| ConsoleError::Internal(anyhow::anyhow!("reading usage: {e:?}")))?;
    let lines = crate::queries::lines::list(&state.pool, &session.account_id)
        .await
        .map_err(|e| ConsoleError::Internal(anyhow::anyhow!("reading lines: {e:?}")))?;
    let day = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d").to_string();
    Ok(render(&OverviewPage {
        chrome: Some(session.chrome(Nav::Overview)),
        plan: usage.plan.clone(),
        subscription: session.subscription.clone(),
        cycle_start: usage.period.start.to_rfc3339(),
        cycle_start_day: day(usage.period.start),
        cycle_end: usage.period.end.to_rfc3339(),
        cycle_end_day: day(usage.period.end),
        usage: usage.usage.into_iter().map(|(m, u)| (m, u.used, u.limit, u.remaining)).collect(),
        lines: lines.lines,
    }))
}
