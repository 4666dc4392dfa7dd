//! Lines of an account: the list, one line, and the line that stands for the account.

use super::owned::OwnedLine;
use crate::api::error::{ApiError, ErrorCode};
use chrono::{DateTime, Utc};
use domain::ids::{AccountId, LineId};
use domain::line::EngineKind;
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct LineView {
    #[schema(example = "line_01jdzq2m9a8x0v3k1s5t7w9y2b")]
    pub line_id: String,
    /// `pending_qr`, `qr_expired`, `connected`, `disconnected` or `logged_out`.
    pub status: String,
    /// The linked number, once the QR code has been scanned.
    #[schema(example = "+34600000000")]
    pub phone: Option<String>,
    pub engine: String,
    pub created_at: DateTime<Utc>,
    pub connected_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct LineResponse {
    pub ok: bool,
    pub line: LineView,
}

#[derive(Serialize, ToSchema)]
pub struct LinesResponse {
    pub ok: bool,
    pub lines: Vec<LineView>,
}

const LINE_COLUMNS: &str = "line_id, status, phone, engine, created_at, connected_at";

/// The account's line (what commands and queries on it take) and how it is now, or
/// `line_not_found` (another account's line does not exist for this one).
pub async fn owned(pool: &PgPool, account_id: &AccountId, line_id: &LineId) -> Result<(OwnedLine, LineView), ApiError> {
    let view = select(pool, account_id, line_id).await?;
    Ok((OwnedLine::vouched(account_id.clone(), line_id.clone()), view))
}

/// The account's line that is connected, or the published error (`line_not_found`, `line_not_connected`).
pub async fn connected(pool: &PgPool, account_id: &AccountId, line_id: &LineId) -> Result<(OwnedLine, LineView), ApiError> {
    let (line, view) = owned(pool, account_id, line_id).await?;
    if view.status != "connected" {
        return Err(ErrorCode::LineNotConnected.into());
    }
    Ok((line, view))
}

/// How the line is now (after a command on it, say).
pub async fn view(pool: &PgPool, line: &OwnedLine) -> Result<LineView, ApiError> {
    select(pool, line.account_id(), line.id()).await
}

async fn select(pool: &PgPool, account_id: &AccountId, line_id: &LineId) -> Result<LineView, ApiError> {
    sqlx::query_as(&format!("SELECT {LINE_COLUMNS} FROM lines WHERE line_id = $1 AND account_id = $2"))
        .bind(line_id.as_str())
        .bind(account_id.as_str())
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| ErrorCode::LineNotFound.into())
}

/// The account's `sim` line (the sandbox drives only those) and how it is now; else
/// `line_not_found` or `not_a_sandbox_line`.
pub async fn sim(pool: &PgPool, account_id: &AccountId, line_id: &LineId) -> Result<(OwnedLine, LineView), ApiError> {
    let (line, view) = owned(pool, account_id, line_id).await?;
    if view.engine != EngineKind::Sim.as_str() {
        return Err(ErrorCode::NotASandboxLine.into());
    }
    Ok((line, view))
}

/// Every line of the account.
pub async fn list(pool: &PgPool, account_id: &AccountId) -> Result<LinesResponse, ApiError> {
    let lines = sqlx::query_as(&format!("SELECT {LINE_COLUMNS} FROM lines WHERE account_id = $1 ORDER BY line_id"))
        .bind(account_id.as_str())
        .fetch_all(pool)
        .await?;
    Ok(LinesResponse { ok: true, lines })
}

/// The account's line that best stands for the account where an event needs one (a test event
/// of a webhook tied to no line): a connected one, else one not logged out, newest first.
pub async fn representative(pool: &PgPool, account_id: &AccountId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT line_id FROM lines WHERE account_id = $1 \
          ORDER BY status = 'connected' DESC, status <> 'logged_out' DESC, created_at DESC LIMIT 1",
    )
    .bind(account_id.as_str())
    .fetch_optional(pool)
    .await
}
