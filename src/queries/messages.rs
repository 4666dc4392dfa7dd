//! The messages of one chat, newest first, a page at a time.

use super::{cursor_at, next_page, page_limit, position_cursor};
use crate::api::error::ApiError;
use crate::app::AppState;
use chrono::{DateTime, Utc};
use domain::chat_id::ChatId;
use domain::ids::{AccountId, LineId, MessageId};
use domain::phone::PhoneNumber;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
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
    /// The chat: the other party's phone, or the group's jid.
    pub phone: String,
    /// Who wrote a message received in a group (absent elsewhere: the chat is the sender).
    #[sqlx(skip)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<Sender>,
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
    #[serde(skip)]
    #[sqlx(rename = "sender")]
    pub sender_phone: Option<String>,
}

/// The author of a message in a group.
#[derive(Serialize, ToSchema, Debug, Clone)]
pub struct Sender {
    #[schema(example = "+34600000002")]
    pub phone: String,
    #[schema(example = "34600000002@s.whatsapp.net")]
    pub jid: String,
}

impl Sender {
    pub fn of(phone: &str) -> Self {
        let jid = PhoneNumber::parse(phone).map_or_else(|_| phone.to_owned(), |p| p.jid());
        Self { phone: phone.to_owned(), jid }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MessagesResponse {
    pub ok: bool,
    pub messages: Vec<MessageView>,
    /// Pass as `cursor` to get the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Which messages: those of the chat with `phone` on the line, a page of at most `limit` (default
/// and cap [`MAX_MESSAGES`]) older than `cursor`.
pub struct MessageFilter {
    pub line_id: LineId,
    pub phone: ChatId,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// A page of the chat's messages, once the caller's own writes are visible.
pub async fn list(state: &AppState, account_id: &AccountId, filter: MessageFilter) -> Result<MessagesResponse, ApiError> {
    let limit = page_limit(filter.limit, MAX_MESSAGES, MAX_MESSAGES)?;
    let before = position_cursor(filter.cursor.as_deref())?;
    let (line, _) = super::lines::owned(&state.pool, account_id, &filter.line_id).await?;
    crate::consistency::await_own_writes(&state.pool, account_id, &["messages"], Duration::from_secs(5)).await?;
    let reads = state.read_pool().await;
    let mut messages: Vec<MessageView> = sqlx::query_as(
        "SELECT message_id, engine_message_id, line_id, chat_phone AS phone, direction, type, text, caption, media_url, media_type, \
                quoted_message_id, status, failure_reason, reactions, created_at, sent_at, delivered_at, read_at, failed_at, position, sender \
           FROM rm_messages WHERE line_id = $1 AND chat_phone = $2 AND type <> 'reaction' AND ($3::bigint IS NULL OR position < $3) \
          ORDER BY position DESC LIMIT $4",
    )
    .bind(line.id().as_str())
    .bind(filter.phone.as_str())
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&reads)
    .await?;
    let next_cursor = next_page(&mut messages, limit, |m| cursor_at(m.position));
    for m in &mut messages {
        m.sender = m.sender_phone.as_deref().map(Sender::of);
    }
    Ok(MessagesResponse { ok: true, messages, next_cursor })
}

/// A received message of the account whose file an engine keeps the keys to (its line, as the
/// engines know it, and its id), found by our id or WhatsApp's. Read from the engine's own record,
/// written with the message, so a webhook's receiver can fetch the file at once.
pub async fn received_media(
    pool: &PgPool,
    account_id: &AccountId,
    id: &str,
) -> Result<Option<(crate::engine::EngineLine, MessageId)>, sqlx::Error> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT s.message_id, s.line_id FROM whatsapp_inbound_seen s \
           JOIN whatsapp_inbound_media m ON m.message_id = s.message_id \
           JOIN lines l ON l.line_id = s.line_id \
          WHERE l.account_id = $1 AND (s.message_id = $2 OR s.engine_message_id = $2) LIMIT 1",
    )
    .bind(account_id.as_str())
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(message_id, line_id)| {
        let line = crate::engine::EngineLine { id: LineId::parse(&line_id).ok()?, engine: domain::line::EngineKind::Whatsapp };
        Some((line, MessageId::parse(&message_id).ok()?))
    }))
}
