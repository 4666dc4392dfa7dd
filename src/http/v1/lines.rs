//! Lines: create, list, detail, QR code, logout.

use crate::commands::lines::{self as line_commands, CreateLineError};
use crate::commands::CommandError;
use crate::http::error::ApiError;
use crate::http::extract::{Json, Tenant};
use crate::http::schemas;
use crate::http::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::ids::{AccountId, LineId};
use domain::line::{EngineKind, LineCommand, LineError, LineStatus};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct LineView {
    #[schema(example = "line_01jdzq2m9a8x0v3k1s5t7w9y2b")]
    pub line_id: String,
    /// `pending_qr`, `connected`, `disconnected` or `logged_out`.
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

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"engine": "sim"}))]
pub struct CreateLineRequest {
    /// The session engine; `sim` (the simulated network) is the default.
    #[serde(default)]
    #[schema(value_type = Option<schemas::Engine>)]
    pub engine: Option<String>,
}

const LINE_COLUMNS: &str = "line_id, status, phone, engine, created_at, connected_at";

pub fn line_not_found() -> ApiError {
    ApiError::not_found("line_not_found", "The line_id does not exist in your account.")
}

/// A line id from a path: a malformed one cannot exist, so it is `line_not_found` too.
pub fn parse_line_id(raw: &str) -> Result<LineId, ApiError> {
    LineId::parse(raw).map_err(|_| line_not_found())
}

pub async fn fetch_line(pool: &PgPool, account_id: &AccountId, line_id: &LineId) -> Result<LineView, ApiError> {
    sqlx::query_as(&format!("SELECT {LINE_COLUMNS} FROM lines WHERE line_id = $1 AND account_id = $2"))
        .bind(line_id.as_str())
        .bind(account_id.as_str())
        .fetch_optional(pool)
        .await?
        .ok_or_else(line_not_found)
}

/// The account's line that best stands for the account where an event needs one (a test event
/// of a webhook tied to no line): a connected one, else one not logged out, newest first.
pub async fn representative_line(pool: &PgPool, account_id: &AccountId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT line_id FROM lines WHERE account_id = $1 \
          ORDER BY status = 'connected' DESC, status <> 'logged_out' DESC, created_at DESC LIMIT 1",
    )
    .bind(account_id.as_str())
    .fetch_optional(pool)
    .await
}

pub fn line_error(e: CommandError<LineError>) -> ApiError {
    match e {
        CommandError::Rejected(LineError::NotFound) => line_not_found(),
        CommandError::Rejected(LineError::NotConnected) => {
            ApiError::flat(StatusCode::CONFLICT, "line_not_connected", "The line is not connected to WhatsApp.")
        }
        CommandError::Rejected(e @ (LineError::LoggedOut | LineError::LinkedToAnother(_) | LineError::NumberInUse)) => {
            ApiError::flat(StatusCode::CONFLICT, "line_conflict", format!("{e}."))
        }
        CommandError::Rejected(LineError::AlreadyExists) => ApiError::server(anyhow::anyhow!("line id collision")),
        other => ApiError::server(other),
    }
}

/// Create a line; it waits for its QR code to be scanned.
#[utoipa::path(post, path = "/v1/lines", tag = "lines", operation_id = "createLine", request_body(content = CreateLineRequest, description = "Optional: an empty object creates a `sim` line"),
    responses((status = 201, description = "The new line, waiting for its QR code to be scanned", body = LineResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateLineRequest>,
) -> Result<(StatusCode, axum::Json<LineResponse>), ApiError> {
    let engine = match body.engine.as_deref() {
        None => EngineKind::Sim,
        Some(e) => EngineKind::parse(e)
            .ok_or_else(|| ApiError::invalid_field("engine", format!("Unknown engine `{e}`; available: sim.")))?,
    };
    let account_id = &tenant.identity.account_id;
    let line =
        line_commands::create(&state.store, &state.plans, &tenant.metadata(), account_id, engine).await.map_err(|e| match e {
            CreateLineError::LimitReached { used, limit, plan } => ApiError::flat(
                StatusCode::TOO_MANY_REQUESTS,
                "line_limit_reached",
                "You have reached the maximum number of lines in the plan.",
            )
            .with("metric", "lines")
            .with("used", used)
            .with("limit", limit)
            .with("plan", plan),
            CreateLineError::Command(e) => line_error(e),
        })?;
    let line = fetch_line(&state.pool, account_id, &line.line_id).await?;
    Ok((StatusCode::CREATED, axum::Json(LineResponse { ok: true, line })))
}

/// List lines.
#[utoipa::path(get, path = "/v1/lines", tag = "lines", operation_id = "listLines",
    responses((status = 200, description = "Every line of the account", body = LinesResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn list(State(state): State<AppState>, tenant: Tenant) -> Result<axum::Json<LinesResponse>, ApiError> {
    let lines = sqlx::query_as(&format!("SELECT {LINE_COLUMNS} FROM lines WHERE account_id = $1 ORDER BY line_id"))
        .bind(tenant.identity.account_id.as_str())
        .fetch_all(&state.pool)
        .await?;
    Ok(axum::Json(LinesResponse { ok: true, lines }))
}

/// Detail of a line.
#[utoipa::path(get, path = "/v1/lines/{line_id}", tag = "lines", operation_id = "getLine", params(("line_id" = String, Path, description = "The line: a `line_…` id from GET /v1/lines")),
    responses((status = 200, description = "The line", body = LineResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn get(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(line_id): Path<String>,
) -> Result<axum::Json<LineResponse>, ApiError> {
    let line = fetch_line(&state.pool, &tenant.identity.account_id, &parse_line_id(&line_id)?).await?;
    Ok(axum::Json(LineResponse { ok: true, line }))
}

/// Log a line out of WhatsApp. It cannot be linked again; create a new line instead.
#[utoipa::path(delete, path = "/v1/lines/{line_id}", tag = "lines", operation_id = "logoutLine", params(("line_id" = String, Path, description = "The line: a `line_…` id from GET /v1/lines")),
    responses((status = 200, description = "The line, logged out (it cannot be linked again)", body = LineResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn logout(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(line_id): Path<String>,
) -> Result<axum::Json<LineResponse>, ApiError> {
    let line_id = parse_line_id(&line_id)?;
    let account_id = &tenant.identity.account_id;
    let (_, events) = line_commands::handle(&state.store, &tenant.metadata(), account_id, &line_id, LineCommand::Logout)
        .await
        .map_err(line_error)?;
    if !events.is_empty() {
        // Its worker fails whatever is still queued.
        state.dispatcher.wake(&line_id);
        if let Err(e) = state.engine.logout(&line_id).await {
            tracing::warn!(%line_id, error = %e, "the engine could not log the line out; it is logged out here");
        }
    }
    Ok(axum::Json(LineResponse { ok: true, line: fetch_line(&state.pool, account_id, &line_id).await? }))
}

#[derive(Deserialize)]
pub struct QrQuery {
    format: Option<String>,
}

/// `format` of the QR code.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum QrFormat {
    Json,
    Svg,
}

#[derive(Serialize, ToSchema)]
pub struct QrResponse {
    pub ok: bool,
    pub line_id: String,
    /// The payload to render as a QR code and scan with WhatsApp (Linked devices).
    pub qr: String,
    /// When this code is replaced by the next one.
    pub expires_at: DateTime<Utc>,
}

/// The QR code to scan while the line waits for it (`?format=svg` for an image).
#[utoipa::path(get, path = "/v1/lines/{line_id}/qr", tag = "lines", operation_id = "getLineQr",
    params(("line_id" = String, Path, description = "The line: a `line_…` id from GET /v1/lines"), ("format" = Option<QrFormat>, Query, description = "`json` (default) or `svg` (an image)")),
    responses((status = 200, description = "The current QR code", content((QrResponse = "application/json"), (String = "image/svg+xml")))),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn qr(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(line_id): Path<String>,
    Query(query): Query<QrQuery>,
) -> Result<Response, ApiError> {
    let line_id = parse_line_id(&line_id)?;
    let line = fetch_line(&state.pool, &tenant.identity.account_id, &line_id).await?;
    if line.status != LineStatus::PendingQr.as_str() {
        return Err(ApiError::flat(
            StatusCode::CONFLICT,
            "line_not_pending_qr",
            format!("The line is {}; it shows a QR code only while it waits for a scan.", line.status),
        )
        .with("status", line.status));
    }
    let code = state.engine.qr_code(&line_id);
    match query.format.as_deref() {
        None | Some("json") => {
            Ok(axum::Json(QrResponse { ok: true, line_id: line.line_id, qr: code.payload, expires_at: code.expires_at })
                .into_response())
        }
        Some("svg") => Ok(([(header::CONTENT_TYPE, "image/svg+xml")], crate::engine::sim::qr_svg(&code.payload)).into_response()),
        Some(other) => Err(ApiError::invalid_field("format", format!("Unknown format `{other}`; use json or svg."))),
    }
}
