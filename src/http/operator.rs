//! The operator HTTP API under `/operator/v1`: the audit and billing reads of the CLI, for
//! operators and auditors who have no shell on a node. It is guarded by `BRIDGE_OPERATOR_TOKEN`
//! (`Authorization: Bearer …`), never by a tenant's API key, and is off when no token is set.
//!
//! - `GET /operator/v1/accounts/{id}/events` — the account's events in log order (`from`, `to`,
//!   `stream`, `limit` ≤ 1000, `cursor`), as `bridge audit replay` prints them.
//! - `GET /operator/v1/accounts/{id}/state?as_of=` — as `bridge audit state`.
//! - `GET /operator/v1/audit/verify[?account=]` — as `bridge audit verify`.
//! - `GET /operator/v1/usage?cycle=YYYY-MM` (or `from`, `to`; `format=csv|json`) — as
//!   `bridge usage export`.

use crate::api::error::{ApiError, ErrorCode};
use crate::app::AppState;
use crate::audit;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use projections::LogPosition;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts/{account_id}/events", get(events))
        .route("/accounts/{account_id}/state", get(state))
        .route("/audit/verify", get(verify))
        .route("/usage", get(usage))
}

/// A request that presented the operator token.
pub struct Operator;

/// Compare in constant time (over fixed-length digests, so the length leaks nothing either).
fn same_secret(presented: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(presented.as_bytes()), Sha256::digest(expected.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        check_token(state.config.operator_token.as_ref(), &parts.headers).map(|()| Operator)
    }
}

/// Whether `headers` present the operator token (`expected`; `None`: the operator API is off).
pub(crate) fn check_token(expected: Option<&crate::config::Secret>, headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::unauthorized("The operator API is off: the server has no BRIDGE_OPERATOR_TOKEN."));
    };
    let presented =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    match presented {
        Some(token) if same_secret(token, expected.expose()) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("Invalid operator token (tenant API keys do not open the operator API).")),
        None => Err(ApiError::unauthorized("Missing operator token: send Authorization: Bearer <BRIDGE_OPERATOR_TOKEN>.")),
    }
}

fn time(field: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value.map(|v| crate::audit::parse_time(v).map_err(|message| ApiError::invalid_field(field, message))).transpose()
}

async fn known_account(state: &AppState, raw: &str) -> Result<String, ApiError> {
    let account_id = domain::ids::AccountId::parse(raw)
        .map_err(|e| ApiError::new(ErrorCode::AccountNotFound, format!("No account {raw}: {e}.")))?
        .to_string();
    if !audit::account_exists(&state.pool, &account_id).await? {
        return Err(ApiError::new(ErrorCode::AccountNotFound, format!("No account {account_id}.")));
    }
    Ok(account_id)
}

#[derive(Deserialize)]
struct EventsQuery {
    from: Option<String>,
    to: Option<String>,
    stream: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

const MAX_EVENTS: i64 = 1000;

/// A cursor is the log position of the last event of a page: `<transaction id>.<position>`, both
/// neither negative (a negative transaction id is no `xid8`: the database would refuse it).
fn parse_cursor(value: &str) -> Option<LogPosition> {
    let (transaction_id, global_position) = value.split_once('.')?;
    let position = LogPosition { transaction_id: transaction_id.parse().ok()?, global_position: global_position.parse().ok()? };
    (position.transaction_id >= 0 && position.global_position >= 0).then_some(position)
}

async fn events(
    _: Operator,
    State(state): State<AppState>,
    Path(account_id): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let account_id = known_account(&state, &account_id).await?;
    let limit = q.limit.unwrap_or(MAX_EVENTS);
    if !(1..=MAX_EVENTS).contains(&limit) {
        return Err(ApiError::invalid_field("limit", format!("limit must be 1 to {MAX_EVENTS}")).with("max", MAX_EVENTS));
    }
    let after = match q.cursor.as_deref() {
        Some(c) => Some(parse_cursor(c).ok_or_else(|| ApiError::invalid_field("cursor", "cursor is not one this API returned"))?),
        None => None,
    };
    let filter = audit::replay::Filter {
        account_id,
        from: time("from", q.from.as_deref())?,
        to: time("to", q.to.as_deref())?,
        stream: q.stream,
        after,
        limit: Some(limit),
    };
    let mut lines = Vec::new();
    let mut last = None;
    audit::replay::replay(&state.pool, &filter, |event, line| {
        last = Some(event.position());
        lines.push(line);
        Ok(())
    })
    .await
    .map_err(ApiError::server)?;
    let next_cursor = last.filter(|_| lines.len() as i64 == limit).map(|p| format!("{}.{}", p.transaction_id, p.global_position));
    Ok(Json(json!({"events": lines, "next_cursor": next_cursor})))
}

#[derive(Deserialize)]
struct StateQuery {
    as_of: Option<String>,
}

async fn state(
    _: Operator,
    State(state): State<AppState>,
    Path(account_id): Path<String>,
    Query(q): Query<StateQuery>,
) -> Result<Json<Value>, ApiError> {
    let account_id = known_account(&state, &account_id).await?;
    let as_of = time("as_of", q.as_of.as_deref())?.unwrap_or_else(Utc::now);
    let result = audit::state::as_of(&state.pool, &account_id, as_of).await.map_err(ApiError::server)?;
    Ok(Json(serde_json::to_value(result).map_err(ApiError::server)?))
}

#[derive(Deserialize)]
struct VerifyQuery {
    account: Option<String>,
}

async fn verify(_: Operator, State(state): State<AppState>, Query(q): Query<VerifyQuery>) -> Result<Json<Value>, ApiError> {
    let account = match q.account.as_deref() {
        Some(a) => Some(known_account(&state, a).await?),
        None => None,
    };
    let report = audit::verify(&state.pool, state.master_key.audit_key(), account.as_deref()).await?;
    Ok(Json(serde_json::to_value(report).map_err(ApiError::server)?))
}

#[derive(Deserialize)]
struct UsageQuery {
    cycle: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: Option<String>,
}

async fn usage(_: Operator, State(state): State<AppState>, Query(q): Query<UsageQuery>) -> Result<Response, ApiError> {
    let (from, to) = (time("from", q.from.as_deref())?, time("to", q.to.as_deref())?);
    let period = crate::usage::ExportPeriod::choose(q.cycle.as_deref(), from, to)
        .map_err(|(field, message)| ApiError::invalid_field(field, message))?;
    let rows = crate::usage::export(&state.pool, &state.plans, period, Utc::now()).await?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(json!({"from": period.from, "to": period.to, "rows": rows})).into_response()),
        Some("csv") => {
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/csv; charset=utf-8")], crate::usage::to_csv(&rows)).into_response())
        }
        Some(_) => Err(ApiError::invalid_field("format", "format is csv or json")),
    }
}
