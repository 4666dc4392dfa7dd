//! A line's chats, most recent activity first, and finding a message of a chat.

use super::owned::OwnedLine;
use super::{foreign_cursor, next_page, page_limit};
use crate::api::error::ApiError;
use crate::app::AppState;
use chrono::{DateTime, Utc};
use domain::chat_id::{ChatId, GroupJid};
use domain::ids::{AccountId, LineId, MessageId};
use serde::Serialize;
use sqlx::PgPool;
use std::time::Duration;
use utoipa::ToSchema;

/// The published maximum of chats per request.
pub const MAX_CHATS: i64 = 500;

#[derive(Serialize, ToSchema)]
pub struct ChatView {
    /// Who the chat is with: a phone in international format, or a group's jid (pass it as `phone` or `to`).
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

/// Which chats of a line: a page of at most `limit` (default and cap [`MAX_CHATS`]), only archived
/// ones or only the others if `archived` says so, after `cursor`.
pub struct ChatFilter {
    pub line_id: LineId,
    pub limit: Option<i64>,
    pub archived: Option<bool>,
    pub cursor: Option<String>,
}

/// Where a page of chats ends: its last chat's activity time and chat (the list's order), as
/// `c<microseconds>_<phone digits>`, or `c<microseconds>_g<group id>` after a group. Opaque to
/// clients.
fn chat_cursor(last_message_at: DateTime<Utc>, chat: &str) -> String {
    let chat = match chat.strip_suffix("@g.us") {
        Some(group) => format!("g{group}"),
        None => chat.trim_start_matches('+').to_owned(),
    };
    format!("c{}_{chat}", last_message_at.timestamp_micros())
}

fn parse_chat_cursor(raw: Option<&str>) -> Result<Option<(DateTime<Utc>, String)>, ApiError> {
    let Some(raw) = raw else { return Ok(None) };
    raw.strip_prefix('c')
        .and_then(|rest| rest.split_once('_'))
        .and_then(|(micros, chat)| {
            let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
            let chat = match chat.strip_prefix('g') {
                Some(group) => GroupJid::parse(&format!("{group}@g.us"))?.to_string(),
                None => (!chat.is_empty() && chat.bytes().all(|b| b.is_ascii_digit())).then(|| format!("+{chat}"))?,
            };
            Some((at, chat))
        })
        .map(Some)
        .ok_or_else(foreign_cursor)
}

/// A page of the line's chats, once the caller's own writes are visible.
pub async fn list(state: &AppState, account_id: &AccountId, filter: ChatFilter) -> Result<ChatsResponse, ApiError> {
    let limit = page_limit(filter.limit, MAX_CHATS, MAX_CHATS)?;
    let after = parse_chat_cursor(filter.cursor.as_deref())?;
    let (line, _) = super::lines::owned(&state.pool, account_id, &filter.line_id).await?;
    crate::consistency::await_own_writes(&state.pool, account_id, &["chats"], Duration::from_secs(5)).await?;
    let reads = state.read_pool().await;
    type Row = (String, String, Option<String>, DateTime<Utc>, String, i32, bool);
    // Keyset paging on the list's own order; one row more than asked says whether there is more.
    let (after_at, after_phone) = after.unzip();
    let mut rows: Vec<Row> = sqlx::query_as(
        "SELECT phone, last_message_id, last_message_preview, last_message_at, last_direction, unread_count, archived \
           FROM rm_chats WHERE line_id = $1 AND ($2::boolean IS NULL OR archived = $2) \
            AND ($4::timestamptz IS NULL OR (last_message_at, phone) < ($4, $5)) \
          ORDER BY last_message_at DESC, phone DESC LIMIT $3 + 1",
    )
    .bind(line.id().as_str())
    .bind(filter.archived)
    .bind(limit)
    .bind(after_at)
    .bind(after_phone)
    .fetch_all(&reads)
    .await?;
    let next_cursor = next_page(&mut rows, limit, |(phone, _, _, at, ..)| chat_cursor(*at, phone));
    let chats = rows
        .into_iter()
        .map(|(phone, last_message_id, last_message_preview, last_message_at, last_direction, unread_count, archived)| ChatView {
            // Stored by the projection from a ChatId; the row's own text if it ever is not one.
            jid: ChatId::from_stored(&phone).map_or_else(|_| phone.clone(), |chat| chat.jid()),
            phone,
            last_message_id,
            last_message_preview,
            last_message_at,
            last_direction,
            unread_count,
            archived,
        })
        .collect();
    Ok(ChatsResponse { ok: true, chats, next_cursor })
}

/// A message of a chat, as the read model knows it.
#[derive(Debug, Clone)]
pub struct FoundMessage {
    pub message_id: MessageId,
    pub engine_message_id: Option<String>,
    pub direction: String,
    /// `queued`, `sent`, `delivered`, `read`, `failed` (outbound) or `received`.
    pub status: String,
}

/// Find a message of the chat (line, phone) by our id (`msg_…`) or its WhatsApp id.
pub async fn find_message(
    pool: &PgPool,
    line: &OwnedLine,
    phone: &ChatId,
    id: &str,
) -> Result<Option<FoundMessage>, sqlx::Error> {
    let row: Option<(String, Option<String>, String, String)> = sqlx::query_as(
        "SELECT message_id, engine_message_id, direction, status FROM rm_messages \
         WHERE line_id = $1 AND chat_phone = $2 AND (message_id = $3 OR engine_message_id = $3) AND type <> 'reaction'",
    )
    .bind(line.id().as_str())
    .bind(phone.as_str())
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(id, engine_message_id, direction, status)| {
        Some(FoundMessage { message_id: MessageId::parse(&id).ok()?, engine_message_id, direction, status })
    }))
}

/// [`find_message`] once the caller's own writes are visible (a message it just sent or injected
/// can be quoted or reacted to at once).
pub async fn find_own_message(
    pool: &PgPool,
    line: &OwnedLine,
    phone: &ChatId,
    id: &str,
) -> Result<Option<FoundMessage>, ApiError> {
    crate::consistency::await_own_writes(pool, line.account_id(), &["messages"], Duration::from_secs(5)).await?;
    Ok(find_message(pool, line, phone, id).await?)
}

/// The WhatsApp ids of the chat's inbound messages among `ids` (ours or WhatsApp's), in one query.
/// Returns the ids that matched no received message of the chat as the error.
pub async fn inbound_engine_ids(
    pool: &PgPool,
    line: &OwnedLine,
    phone: &ChatId,
    ids: &[String],
) -> Result<Result<Vec<String>, Vec<String>>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT q.id, m.engine_message_id FROM unnest($3::text[]) AS q(id) \
           JOIN rm_messages m ON m.line_id = $1 AND m.chat_phone = $2 AND m.direction = 'inbound' \
            AND m.engine_message_id IS NOT NULL AND (m.message_id = q.id OR m.engine_message_id = q.id)",
    )
    .bind(line.id().as_str())
    .bind(phone.as_str())
    .bind(ids)
    .fetch_all(pool)
    .await?;
    let missing: Vec<String> = ids.iter().filter(|id| !rows.iter().any(|(q, _)| q == *id)).cloned().collect();
    if !missing.is_empty() {
        return Ok(Err(missing));
    }
    let mut engine_ids: Vec<String> = rows.into_iter().map(|(_, e)| e).collect();
    engine_ids.dedup();
    Ok(Ok(engine_ids))
}

/// The WhatsApp ids of the chat's inbound messages not read yet.
pub async fn unread_engine_ids(pool: &PgPool, line: &OwnedLine, phone: &ChatId) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT engine_message_id FROM rm_messages WHERE line_id = $1 AND chat_phone = $2 AND direction = 'inbound' \
           AND status <> 'read' AND engine_message_id IS NOT NULL AND type <> 'reaction' ORDER BY position",
    )
    .bind(line.id().as_str())
    .bind(phone.as_str())
    .fetch_all(pool)
    .await
}
