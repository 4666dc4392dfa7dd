//! Lines: create, list, detail, QR code, logout.

use crate::api::error::ApiError;
use crate::api::fields::parse_line_id;
use crate::api::schemas;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::commands::lines as line_commands;
use crate::http::extract::Json;
use crate::queries::lines as line_queries;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::queries::lines::{LineResponse, LineView, LinesResponse};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"engine": "sim"}))]
pub struct CreateLineRequest {
    /// The session engine: `whatsapp` (a real number) or `sim` (the simulated network). The
    /// default is the server's (`whatsapp` in production, `sim` in sandboxes and demos).
    #[serde(default)]
    #[schema(value_type = Option<schemas::Engine>)]
    pub engine: Option<String>,
}

/// Create a line; it waits for its QR code to be scanned.
#[utoipa::path(post, path = "/v1/lines", tag = "lines", operation_id = "createLine", request_body(content = CreateLineRequest, description = "Optional: an empty object creates a line on the server's default engine"),
    responses((status = 201, description = "The new line, waiting for its QR code to be scanned", body = LineResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn create(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<CreateLineRequest>,
) -> Result<(StatusCode, axum::Json<LineResponse>), ApiError> {
    let line = line_commands::create_line(&state, &tenant.caller(), body.engine.as_deref()).await?;
    Ok((StatusCode::CREATED, axum::Json(LineResponse { ok: true, line })))
}

/// List lines.
#[utoipa::path(get, path = "/v1/lines", tag = "lines", operation_id = "listLines",
    responses((status = 200, description = "Every line of the account", body = LinesResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn list(State(state): State<AppState>, tenant: Tenant) -> Result<axum::Json<LinesResponse>, ApiError> {
    line_queries::list(&state.read_pool().await, &tenant.identity.account_id).await.map(axum::Json)
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
    let line = line_commands::logout(&state, &tenant.caller(), &line_id).await?;
    Ok(axum::Json(LineResponse { ok: true, line }))
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
///
/// Codes rotate. When a `whatsapp` line's codes have run out (`qr_expired`), asking again starts a new run.
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
    let (line, code) = line_commands::qr_code(&state, &tenant.caller(), &parse_line_id(&line_id)?).await?;
    match query.format.as_deref() {
        None | Some("json") => {
            Ok(axum::Json(QrResponse { ok: true, line_id: line.line_id, qr: code.payload, expires_at: code.expires_at })
                .into_response())
        }
        Some("svg") => Ok(([(header::CONTENT_TYPE, "image/svg+xml")], crate::engine::sim::qr_svg(&code.payload)).into_response()),
        Some(other) => Err(ApiError::invalid_field("format", format!("Unknown format `{other}`; use json or svg."))),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"phone": "+34600000000"}))]
pub struct PairingCodeRequest {
    /// The number of the phone that will link the line, in international format.
    #[schema(required = true, nullable = false, value_type = schemas::Phone)]
    pub phone: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PairingCodeResponse {
    pub ok: bool,
    pub line_id: String,
    /// Type it on the phone: WhatsApp → Linked devices → Link a device → Link with phone number
    /// instead. Eight characters.
    #[schema(example = "ABCD2345")]
    pub pairing_code: String,
}

/// A code to link the line by typing it on the phone instead of scanning the QR code.
#[utoipa::path(post, path = "/v1/lines/{line_id}/pairing-code", tag = "lines", operation_id = "requestPairingCode",
    params(("line_id" = String, Path, description = "The line: a `line_…` id from GET /v1/lines")),
    request_body(content = PairingCodeRequest),
    responses((status = 200, description = "The pairing code to type on the phone", body = PairingCodeResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn pairing_code(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(line_id): Path<String>,
    Json(body): Json<PairingCodeRequest>,
) -> Result<axum::Json<PairingCodeResponse>, ApiError> {
    let line_id = parse_line_id(&line_id)?;
    let phone = crate::api::fields::phone("phone", &body.phone)?;
    let (line, code) = line_commands::pairing_code(&state, &tenant.caller(), &line_id, &phone).await?;
    Ok(axum::Json(PairingCodeResponse { ok: true, line_id: line.line_id, pairing_code: code }))
}
