//! `GET /v1/chats`: a line's chats, most recent first.

use super::lines::{fetch_line, parse_line_id};
use super::reads::{self, Params};
use crate::http::error::ApiError;
use crate::http::extract::Tenant;
use crate::http::AppState;
use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

/// The published maximum of chats per request.
pub const MAX_CHATS: i64 = 500;

#[derive(Serialize, ToSchema)]
pub struct ChatView {
    #[schema(example = "+34600000000")]
    pub phone: String,
    #[schema(example = "34600000000@s.whatsapp.net")]
    pub jid: String,
    pub last_message_id: String,
    pub last_message_preview: Option<String>,
    pub last_message_at: DateTime<Utc>,
    /// `inbound` or `outbound`.
    pub last_direction: String,
    pub unread_count: i32,
    pub archived: bool,
}

#[derive(Serialize, ToSchema)]
pub struct ChatsResponse {
    pub ok: bool,
    pub chats: Vec<ChatView>,
}

/// List chats.
#[utoipa::path(get, path = "/v1/chats", tag = "messages",
    params(("line_id" = String, Query), ("archived" = Option<bool>, Query), ("limit" = Option<i64>, Query, description = "1 to 500 (default 100)")),
    responses((status = 200, body = ChatsResponse), (status = 404, description = "line_not_found")),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(params): Query<Params>,
) -> Result<Json<ChatsResponse>, ApiError> {
    let line_id = parse_line_id(reads::required(&params, "line_id")?)?;
    let limit = reads::limit(&params, 100, MAX_CHATS)?;
    let archived = reads::boolean(&params, "archived")?;
    let account_id = &tenant.identity.account_id;
    fetch_line(&state.pool, account_id, &line_id).await?;
    crate::consistency::await_own_writes(&state.pool, account_id, &["chats"], Duration::from_secs(5)).await?;
    type Row = (String, String, Option<String>, DateTime<Utc>, String, i32, bool);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT phone, last_message_id, last_message_preview, last_message_at, last_direction, unread_count, archived \
           FROM rm_chats WHERE line_id = $1 AND ($2::boolean IS NULL OR archived = $2) \
          ORDER BY last_message_at DESC, phone LIMIT $3",
    )
    .bind(line_id.as_str())
    .bind(archived)
    .bind(limit)
    .fetch_all(&state.pool)
    .await?;
    let chats = rows
        .into_iter()
        .map(|(phone, last_message_id, last_message_preview, last_message_at, last_direction, unread_count, archived)| ChatView {
            jid: format!("{}@s.whatsapp.net", phone.trim_start_matches('+')),
            phone,
            last_message_id,
            last_message_preview,
            last_message_at,
            last_direction,
            unread_count,
            archived,
        })
        .collect();
    Ok(Json(ChatsResponse { ok: true, chats }))
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRequest {
    pub line_id: Option<String>,
    /// The chat: a phone in international format (or its jid).
    pub phone: Option<String>,
    /// `true` (default) archives, `false` unarchives.
    pub archive: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct ArchiveResponse {
    pub ok: bool,
    pub line_id: String,
    pub phone: String,
    pub archived: bool,
}

/// Archive (or unarchive) a chat.
#[utoipa::path(post, path = "/v1/chats/archive", tag = "messages", request_body = ArchiveRequest,
    responses((status = 200, body = ArchiveResponse)), security(("bearer" = []), ("bridge_key" = [])))]
pub async fn archive(
    State(state): State<AppState>,
    tenant: Tenant,
    crate::http::extract::Json(body): crate::http::extract::Json<ArchiveRequest>,
) -> Result<Json<ArchiveResponse>, ApiError> {
    let chat = super::messages::phone("phone", &body.phone)?;
    let line = super::messages::connected_line(&state, &tenant, &body.line_id).await?;
    let archived = body.archive.unwrap_or(true);
    let account_id = &tenant.identity.account_id;
    let command = domain::chat::ChatCommand::Archive {
        account_id: account_id.clone(),
        line_id: line.clone(),
        phone: chat.clone(),
        archived,
    };
    crate::commands::chats::handle(&state.store, &tenant.metadata(), account_id, &line, &chat, command)
        .await
        .map_err(ApiError::server)?;
    Ok(Json(ArchiveResponse { ok: true, line_id: line.to_string(), phone: chat.to_string(), archived }))
}
