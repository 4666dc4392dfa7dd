//! Chat commands (mark read, archive) and finding a chat's messages by either of their ids.

use super::{execute, CommandError};
use crate::store::{EventStore, Metadata};
use domain::chat::{self, Chat, ChatCommand, ChatError, ChatEvent};
use domain::ids::{AccountId, LineId, MessageId};
use domain::phone::PhoneNumber;
use domain::Aggregate;
use sqlx::PgPool;

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
    line_id: &LineId,
    phone: &PhoneNumber,
    id: &str,
) -> Result<Option<FoundMessage>, sqlx::Error> {
    let row: Option<(String, Option<String>, String, String)> = sqlx::query_as(
        "SELECT message_id, engine_message_id, direction, status FROM rm_messages \
         WHERE line_id = $1 AND chat_phone = $2 AND (message_id = $3 OR engine_message_id = $3) AND type <> 'reaction'",
    )
    .bind(line_id.as_str())
    .bind(phone.as_str())
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(id, engine_message_id, direction, status)| {
        Some(FoundMessage { message_id: MessageId::parse(&id).ok()?, engine_message_id, direction, status })
    }))
}

/// The WhatsApp ids of the chat's inbound messages among `ids` (ours or WhatsApp's), in one query.
/// Returns the ids that matched no received message of the chat as the error.
pub async fn inbound_engine_ids(
    pool: &PgPool,
    line_id: &LineId,
    phone: &PhoneNumber,
    ids: &[String],
) -> Result<Result<Vec<String>, Vec<String>>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT q.id, m.engine_message_id FROM unnest($3::text[]) AS q(id) \
           JOIN rm_messages m ON m.line_id = $1 AND m.chat_phone = $2 AND m.direction = 'inbound' \
            AND m.engine_message_id IS NOT NULL AND (m.message_id = q.id OR m.engine_message_id = q.id)",
    )
    .bind(line_id.as_str())
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
pub async fn unread_engine_ids(pool: &PgPool, line_id: &LineId, phone: &PhoneNumber) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT engine_message_id FROM rm_messages WHERE line_id = $1 AND chat_phone = $2 AND direction = 'inbound' \
           AND status <> 'read' AND engine_message_id IS NOT NULL AND type <> 'reaction' ORDER BY position",
    )
    .bind(line_id.as_str())
    .bind(phone.as_str())
    .fetch_all(pool)
    .await
}

pub async fn handle(
    store: &EventStore,
    metadata: &Metadata,
    account_id: &AccountId,
    line_id: &LineId,
    phone: &PhoneNumber,
    command: ChatCommand,
) -> Result<Vec<ChatEvent>, CommandError<ChatError>> {
    let tenant = account_id.to_string();
    let (_, stored) = execute::<Chat, _>(
        store,
        &chat::stream_id(line_id, phone),
        |_| Some(tenant.clone()),
        metadata,
        |c: &Chat| c.decide(command.clone(), &()),
    )
    .await?;
    stored.iter().map(|e| e.decode().map_err(|e| CommandError::Projection(e.into()))).collect()
}
