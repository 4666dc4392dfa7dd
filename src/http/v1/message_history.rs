//! `GET /v1/messages`: the messages of one chat, newest first, a page at a time.

use super::lines::{fetch_line, parse_line_id};
use super::reads::{self, Params};
use crate::http::error::ApiError;
use crate::http::extract::Tenant;
use crate::http::schemas;
use crate::http::AppState;
use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use domain::phone::PhoneNumber;
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;
use utoipa::ToSchema;

/// The published maximum of messages per request.
pub const MAX_MESSAGES: i64 = 200;

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct MessageView {
    pub message_id: String,
    /// The WhatsApp id, once sent or received.
    pub engine_message_id: Option<String>,
    pub line_id: String,
    /// The other party of the chat.
    pub phone: String,
    /// `outbound` or `inbound`.
    pub direction: String,
    /// `text`, `image`, `video`, `audio` or `document`.
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    pub caption: Option<String>,
    pub media_url: Option<String>,
    pub media_type: Option<String>,
    pub quoted_message_id: Option<String>,
    /// `queued`, `sent`, `delivered`, `read` or `failed`.
    pub status: String,
    pub failure_reason: Option<String>,
    /// Emoji by reacting phone.
    #[schema(value_type = Object)]
    pub reactions: Value,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub read_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub position: i64,
}

#[derive(Serialize, ToSchema)]
pub struct MessagesResponse {
    pub ok: bool,
    pub messages: Vec<MessageView>,
    /// Pass as `cursor` to get the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Read messages.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", operation_id = "listMessages",
    params(("line_id" = String, Query, description = "The line"),
        ("phone" = schemas::Phone, Query, description = "The chat: a phone in international format, or its jid"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 9223372036854775807_i64, description = "How many messages (default and maximum 200; larger values are taken as 200)"),
        ("cursor" = Option<String>, Query, pattern = r"^c[1-9][0-9]{0,17}$", description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "The chat's messages, newest first", body = MessagesResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(params): Query<Params>,
) -> Result<Json<MessagesResponse>, ApiError> {
    let line_id = parse_line_id(reads::required(&params, "line_id")?)?;
    let phone = PhoneNumber::parse_phone_or_jid(reads::required(&params, "phone")?)
        .map_err(|e| ApiError::invalid_field("phone", format!("{e}.")))?;
    let limit = reads::limit(&params, MAX_MESSAGES, MAX_MESSAGES)?;
    let before = reads::cursor(&params)?;
    let account_id = &tenant.identity.account_id;
    fetch_line(&state.pool, account_id, &line_id).await?;
    crate::consistency::await_own_writes(&state.pool, account_id, &["messages"], Duration::from_secs(5)).await?;
    let mut messages: Vec<MessageView> = sqlx::query_as(
        "SELECT message_id, engine_message_id, line_id, chat_phone AS phone, direction, type, text, caption, media_url, media_type, \
                quoted_message_id, status, failure_reason, reactions, created_at, sent_at, delivered_at, read_at, failed_at, position \
           FROM rm_messages WHERE line_id = $1 AND chat_phone = $2 AND type <> 'reaction' AND ($3::bigint IS NULL OR position < $3) \
          ORDER BY position DESC LIMIT $4",
    )
    .bind(line_id.as_str())
    .bind(phone.as_str())
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&state.pool)
    .await?;
    let next_cursor = reads::next_page(&mut messages, limit, |m| reads::position_cursor(m.position));
    Ok(Json(MessagesResponse { ok: true, messages, next_cursor }))
}
