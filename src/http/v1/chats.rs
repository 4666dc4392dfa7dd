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
    /// Pass as `cursor` for the next page (chats with older activity); null on the last page.
    pub next_cursor: Option<String>,
}

/// Where a page of chats ends: its last chat's activity time and phone (the list's order), as
/// `c<microseconds>_<phone digits>`. Opaque to clients.
fn chat_cursor(last_message_at: DateTime<Utc>, phone: &str) -> String {
    format!("c{}_{}", last_message_at.timestamp_micros(), phone.trim_start_matches('+'))
}

fn parse_chat_cursor(params: &Params) -> Result<Option<(DateTime<Utc>, String)>, ApiError> {
    let Some(raw) = params.get("cursor") else { return Ok(None) };
    raw.strip_prefix('c')
        .and_then(|rest| rest.split_once('_'))
        .and_then(|(micros, digits)| {
            let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| (at, format!("+{digits}")))
        })
        .map(Some)
        .ok_or_else(|| ApiError::invalid_field("cursor", "`cursor` is not one this API returned."))
}

/// List chats.
#[utoipa::path(get, path = "/v1/chats", tag = "messages", operation_id = "listChats",
    params(("line_id" = String, Query, description = "The line"),
        ("archived" = Option<bool>, Query, description = "true: only archived chats; false: only the others; absent: both"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 9223372036854775807_i64, description = "How many chats (default and maximum 500; larger values are taken as 500)"),
        ("cursor" = Option<String>, Query, pattern = r"^c-?[0-9]{1,18}_[0-9]{1,20}$", description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "The line's chats, most recent activity first", body = ChatsResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(params): Query<Params>,
) -> Result<Json<ChatsResponse>, ApiError> {
    let line_id = parse_line_id(reads::required(&params, "line_id")?)?;
    let limit = reads::limit(&params, MAX_CHATS, MAX_CHATS)?;
    let archived = reads::boolean(&params, "archived")?;
    let after = parse_chat_cursor(&params)?;
    let account_id = &tenant.identity.account_id;
    fetch_line(&state.pool, account_id, &line_id).await?;
    crate::consistency::await_own_writes(&state.pool, account_id, &["chats"], Duration::from_secs(5)).await?;
    type Row = (String, String, Option<String>, DateTime<Utc>, String, i32, bool);
    // Keyset paging on the list's own order; one row more than asked says whether there is more.
    let (after_at, after_phone) = after.unzip();
    let mut rows: Vec<Row> = sqlx::query_as(
        "SELECT phone, last_message_id, last_message_preview, last_message_at, last_direction, unread_count, archived \
           FROM rm_chats WHERE line_id = $1 AND ($2::boolean IS NULL OR archived = $2) \
            AND ($4::timestamptz IS NULL OR (last_message_at, phone) < ($4, $5)) \
          ORDER BY last_message_at DESC, phone DESC LIMIT $3 + 1",
    )
    .bind(line_id.as_str())
    .bind(archived)
    .bind(limit)
    .bind(after_at)
    .bind(after_phone)
    .fetch_all(&state.pool)
    .await?;
    let next_cursor = reads::next_page(&mut rows, limit, |(phone, _, _, at, ..)| chat_cursor(*at, phone));
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
    Ok(Json(ChatsResponse { ok: true, chats, next_cursor }))
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"line_id": "line_xxx", "phone": "+34600000000", "archive": true}))]
pub struct ArchiveRequest {
    /// Connected line of the chat.
    #[schema(required = true, nullable = false, value_type = String)]
    pub line_id: Option<String>,
    /// The chat: a phone in international format (or its jid).
    #[schema(required = true, nullable = false, value_type = crate::http::schemas::Phone)]
    pub phone: Option<String>,
    /// `true` (default) archives, `false` unarchives.
    #[schema(value_type = Option<bool>)]
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
#[utoipa::path(post, path = "/v1/chats/archive", tag = "messages", operation_id = "archiveChat", request_body = ArchiveRequest,
    responses((status = 200, description = "The chat's archived state", body = ArchiveResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
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
