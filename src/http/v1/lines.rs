//! Lines: create, list, detail, QR code, logout.

use crate::api::error::{ApiError, ErrorCode};
use crate::api::fields::parse_line_id;
use crate::api::schemas;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::commands::lines::{self as line_commands, CreateLineError};
use crate::commands::CommandError;
use crate::http::extract::Json;
use crate::queries::lines as line_queries;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use domain::line::{EngineKind, LineCommand, LineError, LineStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::queries::lines::{LineResponse, LineView, LinesResponse};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"engine": "sim"}))]
pub struct CreateLineRequest {
    /// The session engine; `sim` (the simulated network) is the default.
    #[serde(default)]
    #[schema(value_type = Option<schemas::Engine>)]
    pub engine: Option<String>,
}

pub fn line_error(e: CommandError<LineError>) -> ApiError {
    match e {
        CommandError::Rejected(LineError::NotFound) => ErrorCode::LineNotFound.into(),
        CommandError::Rejected(LineError::NotConnected) => ErrorCode::LineNotConnected.into(),
        CommandError::Rejected(e @ (LineError::LoggedOut | LineError::LinkedToAnother(_) | LineError::NumberInUse)) => {
            ApiError::new(ErrorCode::LineConflict, format!("{e}."))
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
            CreateLineError::LimitReached { used, limit, plan } => {
                ApiError::over_limit(ErrorCode::LineLimitReached, "lines", used, limit, plan)
            }
            CreateLineError::Command(e) => line_error(e),
        })?;
    let (_, line) = line_queries::owned(&state.pool, account_id, &line.line_id).await?;
    Ok((StatusCode::CREATED, axum::Json(LineResponse { ok: true, line })))
}

/// List lines.
#[utoipa::path(get, path = "/v1/lines", tag = "lines", operation_id = "listLines",
    responses((status = 200, description = "Every line of the account", body = LinesResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn list(State(state): State<AppState>, tenant: Tenant) -> Result<axum::Json<LinesResponse>, ApiError> {
    line_queries::list(&state.pool, &tenant.identity.account_id).await.map(axum::Json)
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
    let (_, line) = line_queries::owned(&state.pool, &tenant.identity.account_id, &parse_line_id(&line_id)?).await?;
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
    let (line, _) = line_queries::owned(&state.pool, &tenant.identity.account_id, &parse_line_id(&line_id)?).await?;
    let (_, events) =
        line_commands::handle(&state.store, &tenant.metadata(), &line, LineCommand::Logout).await.map_err(line_error)?;
    if !events.is_empty() {
        let line_id = line.id();
        // Its worker fails whatever is still queued.
        state.dispatcher.wake(line_id);
        if let Err(e) = state.engine.logout(line_id).await {
            tracing::warn!(%line_id, error = %e, "the engine could not log the line out; it is logged out here");
        }
    }
    Ok(axum::Json(LineResponse { ok: true, line: line_queries::view(&state.pool, &line).await? }))
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
    let (_, line) = line_queries::owned(&state.pool, &tenant.identity.account_id, &line_id).await?;
    if line.status != LineStatus::PendingQr.as_str() {
        return Err(ApiError::new(
            ErrorCode::LineNotPendingQr,
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
