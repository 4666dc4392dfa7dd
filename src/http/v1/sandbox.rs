//! Sandbox endpoints: drive the simulated network of a tenant's own `sim` lines.

use super::lines::LineResponse;
use crate::api::error::ApiError;
use crate::api::fields::parse_line_id;
use crate::api::json::json_body;
use crate::api::rate_limit::RateLimits;
use crate::api::schemas;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::commands::sandbox::{self, InboundRequest, InboundResponse};
use crate::http::extract::Json;
use crate::queries::lines as line_queries;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"phone": "+34600000001"}))]
pub struct ScanRequest {
    /// The number of the simulated phone that scans the code.
    #[schema(value_type = schemas::PlainPhone)]
    phone: String,
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"reason": "network"}))]
pub struct DisconnectRequest {
    /// Why the session dropped (`sandbox` when absent), as `line.status` webhooks report it.
    #[serde(default)]
    #[schema(value_type = Option<schemas::FreeText>)]
    reason: Option<String>,
}

/// A simulated phone scans the line's QR code: the line links to that number and connects.
#[utoipa::path(post, path = "/v1/sandbox/lines/{line_id}/scan", tag = "sandbox", operation_id = "sandboxScan", params(("line_id" = String, Path, description = "A `sim` line of the account")),
    request_body = ScanRequest, responses((status = 200, description = "The line, connected to that number", body = LineResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn scan(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(line_id): Path<String>,
    Json(body): Json<ScanRequest>,
) -> Result<axum::Json<LineResponse>, ApiError> {
    let line = sandbox::scan(&state, &tenant.caller(), &line_id, &body.phone).await?;
    Ok(axum::Json(LineResponse { ok: true, line }))
}

/// The line's session drops.
/// The body is optional: `{"reason": "…"}`.
#[utoipa::path(post, path = "/v1/sandbox/lines/{line_id}/disconnect", tag = "sandbox", operation_id = "sandboxDisconnect", params(("line_id" = String, Path, description = "A `sim` line of the account")),
    request_body(content = Option<DisconnectRequest>, description = "Optional"),
    responses((status = 200, description = "The line, disconnected", body = LineResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn disconnect(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(line_id): Path<String>,
    body: Bytes,
) -> Result<axum::Json<LineResponse>, ApiError> {
    // No body, or `null`, is a disconnect without a reason.
    let body: DisconnectRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DisconnectRequest::default()
    } else {
        json_body::<Option<DisconnectRequest>>(&body)?.unwrap_or_default()
    };
    let line = sandbox::disconnect(&state, &tenant.caller(), &line_id, body.reason).await?;
    Ok(axum::Json(LineResponse { ok: true, line }))
}

/// What `inbound` takes, for the document: exactly one of text, a file, or a reaction.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
#[schema(example = json!({"from": "+34600000001", "message": "Hola"}))]
pub enum InboundSchema {
    Text(InboundText),
    Media(InboundMedia),
    Reaction(InboundReaction),
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct InboundText {
    #[schema(value_type = schemas::Phone)]
    from: String,
    /// The group it arrives in; a direct chat with `from` when absent.
    #[schema(value_type = Option<schemas::GroupJid>)]
    group: Option<String>,
    #[schema(value_type = schemas::MessageText)]
    message: String,
    #[schema(value_type = Option<schemas::MessageRef>)]
    quoted_message_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct InboundMedia {
    #[schema(value_type = schemas::Phone)]
    from: String,
    /// The group it arrives in; a direct chat with `from` when absent.
    #[schema(value_type = Option<schemas::GroupJid>)]
    group: Option<String>,
    #[schema(value_type = schemas::MediaUrl)]
    media_url: String,
    #[schema(value_type = Option<schemas::MediaType>)]
    media_type: Option<String>,
    #[schema(value_type = Option<schemas::Caption>)]
    caption: Option<String>,
    #[schema(value_type = Option<schemas::MessageRef>)]
    quoted_message_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct InboundReaction {
    #[schema(value_type = schemas::Phone)]
    from: String,
    /// The group it arrives in; a direct chat with `from` when absent.
    #[schema(value_type = Option<schemas::GroupJid>)]
    group: Option<String>,
    /// The message reacted to: our id or its WhatsApp id.
    #[schema(value_type = schemas::MessageRef)]
    react_to: String,
    #[schema(value_type = Option<schemas::Emoji>)]
    emoji: Option<String>,
    #[schema(value_type = Option<schemas::MessageRef>)]
    quoted_message_id: Option<String>,
}

/// A message arrives on the line from a simulated phone: text, media, a reaction, or a quoted reply.
/// Limited per line (`rate_limits.sandbox_inbound`).
#[utoipa::path(post, path = "/v1/sandbox/lines/{line_id}/inbound", tag = "sandbox", operation_id = "sandboxInbound", params(("line_id" = String, Path, description = "A `sim` line of the account")),
    request_body = InboundSchema, responses((status = 200, description = "Received", body = InboundResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn inbound(
    State(state): State<AppState>,
    tenant: Tenant,
    limits: RateLimits,
    Path(line_id): Path<String>,
    Json(body): Json<InboundRequest>,
) -> Result<axum::Json<InboundResponse>, ApiError> {
    sandbox::inbound(&state, &tenant.caller(), &limits, &line_id, body).await.map(axum::Json)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"mode": "fail"}))]
pub struct FaultRequest {
    /// `fail` (sends fail), `hang` (sends never answer) or `none`.
    #[schema(value_type = FaultMode)]
    mode: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum FaultMode {
    Fail,
    Hang,
    None,
}

#[derive(Serialize, ToSchema)]
pub struct FaultResponse {
    pub ok: bool,
    pub line_id: String,
    pub mode: String,
}

/// The line's fault switch: `fail` (sends fail), `hang` (sends never answer) or `none`.
#[utoipa::path(post, path = "/v1/sandbox/lines/{line_id}/fault", tag = "sandbox", operation_id = "sandboxFault", params(("line_id" = String, Path, description = "A `sim` line of the account")),
    request_body = FaultRequest, responses((status = 200, description = "The line's fault mode", body = FaultResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn fault(
    State(state): State<AppState>,
    tenant: Tenant,
    Path(line_id): Path<String>,
    Json(body): Json<FaultRequest>,
) -> Result<axum::Json<FaultResponse>, ApiError> {
    let (line, _) = line_queries::sim(&state.pool, &tenant.identity.account_id, &parse_line_id(&line_id)?).await?;
    let line_id = line.id();
    match body.mode.as_str() {
        "none" => sqlx::query("DELETE FROM sim_faults WHERE line_id = $1").bind(line_id.as_str()).execute(&state.pool).await?,
        "fail" | "hang" => {
            sqlx::query(
                "INSERT INTO sim_faults (line_id, mode) VALUES ($1, $2) ON CONFLICT (line_id) DO UPDATE SET mode = EXCLUDED.mode",
            )
            .bind(line_id.as_str())
            .bind(&body.mode)
            .execute(&state.pool)
            .await?
        }
        _ => return Err(ApiError::invalid_field("mode", "`mode` must be one of fail, hang, none.")),
    };
    Ok(axum::Json(FaultResponse { ok: true, line_id: line_id.to_string(), mode: body.mode }))
}
