//! Asynchronous read models of conversations: `rm_messages` (every message with its status,
//! content and reactions) and `rm_chats` (one row per line and phone: last message, unread count,
//! archived).

use crate::{ApplyFuture, Projection, StoredEvent};
use domain::message::{ArchivePolicy, Content, Message, MessageEvent};
use domain::Aggregate;
use sqlx::PgConnection;

/// Short text shown for a chat's last message.
fn preview(content: &Content) -> String {
    let text = match content {
        Content::Text { text } => text.as_str().to_owned(),
        Content::Media { caption: Some(c), media_type, .. } => format!("[{}] {}", media_type.as_str(), c.as_str()),
        Content::Media { media_type, .. } => format!("[{}]", media_type.as_str()),
    };
    text.chars().take(120).collect()
}

fn columns(content: &Content) -> (Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
    match content {
        Content::Text { text } => (Some(text.as_str()), None, None, None),
        Content::Media { media_url, media_type, caption } => {
            (None, caption.as_ref().map(|c| c.as_str()), Some(media_url.as_str()), Some(media_type.as_str()))
        }
    }
}

pub struct Messages;

impl Projection for Messages {
    fn name(&self) -> &'static str {
        "messages"
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            if event.stream_type != Message::STREAM_TYPE {
                return Ok(());
            }
            let (id, at) = (&event.stream_id, event.recorded_at);
            match event.decode::<MessageEvent>()? {
                MessageEvent::Queued(q) => {
                    let (text, caption, media_url, media_type) = columns(&q.content);
                    sqlx::query(
                        "INSERT INTO rm_messages (message_id, account_id, line_id, chat_phone, direction, type, text, caption, \
                             media_url, media_type, quoted_message_id, status, created_at, position) \
                         VALUES ($1, $2, $3, $4, 'outbound', $5, $6, $7, $8, $9, $10, 'queued', $11, $12)",
                    )
                    .bind(q.message_id.as_str())
                    .bind(q.account_id.as_str())
                    .bind(q.line_id.as_str())
                    .bind(q.to.as_str())
                    .bind(q.content.kind())
                    .bind(text)
                    .bind(caption)
                    .bind(media_url)
                    .bind(media_type)
                    .bind(q.quoted_message_id.as_ref().map(|m| m.as_str()))
                    .bind(at)
                    .bind(event.global_position)
                    .execute(conn)
                    .await?;
                }
                MessageEvent::Received(r) => {
                    let (text, caption, media_url, media_type) = columns(&r.content);
                    sqlx::query(
                        "INSERT INTO rm_messages (message_id, account_id, line_id, chat_phone, direction, type, text, caption, \
                             media_url, media_type, quoted_message_id, engine_message_id, status, created_at, delivered_at, position) \
                         VALUES ($1, $2, $3, $4, 'inbound', $5, $6, $7, $8, $9, \
                             (SELECT message_id FROM rm_messages WHERE line_id = $3 AND engine_message_id = $10), \
                             $11, 'delivered', $12, $12, $13)",
                    )
                    .bind(r.message_id.as_str())
                    .bind(r.account_id.as_str())
                    .bind(r.line_id.as_str())
                    .bind(r.from.as_str())
                    .bind(r.content.kind())
                    .bind(text)
                    .bind(caption)
                    .bind(media_url)
                    .bind(media_type)
                    .bind(r.quoted_engine_message_id)
                    .bind(&r.engine_message_id)
                    .bind(at)
                    .bind(event.global_position)
                    .execute(conn)
                    .await?;
                }
                MessageEvent::DispatchStarted { .. } => {}
                MessageEvent::Sent { engine_message_id } => {
                    sqlx::query("UPDATE rm_messages SET status = 'sent', sent_at = $2, engine_message_id = $3 WHERE message_id = $1 AND status = 'queued'")
                        .bind(id)
                        .bind(at)
                        .bind(engine_message_id)
                        .execute(conn)
                        .await?;
                }
                MessageEvent::Failed { reason } => {
                    sqlx::query("UPDATE rm_messages SET status = 'failed', failed_at = $2, failure_reason = $3 WHERE message_id = $1 AND status = 'queued'")
                        .bind(id)
                        .bind(at)
                        .bind(reason)
                        .execute(conn)
                        .await?;
                }
                // Receipts only move a status forward, whatever order they are applied in.
                MessageEvent::Delivered {} => {
                    sqlx::query("UPDATE rm_messages SET status = 'delivered', delivered_at = $2 WHERE message_id = $1 AND status IN ('queued', 'sent')")
                        .bind(id)
                        .bind(at)
                        .execute(conn)
                        .await?;
                }
                MessageEvent::Read {} => {
                    sqlx::query(
                        "UPDATE rm_messages SET status = 'read', read_at = $2, delivered_at = COALESCE(delivered_at, $2) \
                         WHERE message_id = $1 AND status IN ('queued', 'sent', 'delivered')",
                    )
                    .bind(id)
                    .bind(at)
                    .execute(conn)
                    .await?;
                }
            }
            Ok(())
        })
    }
}

pub struct Chats;

impl Projection for Chats {
    fn name(&self) -> &'static str {
        "chats"
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            if event.stream_type != Message::STREAM_TYPE
                || !matches!(event.event_type.as_str(), "message.queued" | "message.received")
            {
                return Ok(());
            }
            let at = event.recorded_at;
            match event.decode::<MessageEvent>()? {
                MessageEvent::Queued(q) => {
                    // The send's archive policy decides where the chat ends up.
                    let archived = match q.archive_policy {
                        ArchivePolicy::Always => "true",
                        ArchivePolicy::Never => "false",
                        ArchivePolicy::PreserveIfPreviouslyArchived => "rm_chats.archived",
                    };
                    sqlx::query(&format!(
                        "INSERT INTO rm_chats (line_id, phone, account_id, last_message_id, last_message_preview, last_message_at, \
                             last_direction, unread_count, archived) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'outbound', 0, $7) \
                         ON CONFLICT (line_id, phone) DO UPDATE SET last_message_id = EXCLUDED.last_message_id, \
                             last_message_preview = EXCLUDED.last_message_preview, last_message_at = EXCLUDED.last_message_at, \
                             last_direction = 'outbound', archived = {archived}"
                    ))
                    .bind(q.line_id.as_str())
                    .bind(q.to.as_str())
                    .bind(q.account_id.as_str())
                    .bind(q.message_id.as_str())
                    .bind(preview(&q.content))
                    .bind(at)
                    .bind(q.archive_policy == ArchivePolicy::Always)
                    .execute(conn)
                    .await?;
                }
                MessageEvent::Received(r) => {
                    sqlx::query(
                        "INSERT INTO rm_chats (line_id, phone, account_id, last_message_id, last_message_preview, last_message_at, \
                             last_direction, unread_count, archived) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'inbound', 1, false) \
                         ON CONFLICT (line_id, phone) DO UPDATE SET last_message_id = EXCLUDED.last_message_id, \
                             last_message_preview = EXCLUDED.last_message_preview, last_message_at = EXCLUDED.last_message_at, \
                             last_direction = 'inbound', unread_count = rm_chats.unread_count + 1",
                    )
                    .bind(r.line_id.as_str())
                    .bind(r.from.as_str())
                    .bind(r.account_id.as_str())
                    .bind(r.message_id.as_str())
                    .bind(preview(&r.content))
                    .bind(at)
                    .execute(conn)
                    .await?;
                }
                _ => {}
            }
            Ok(())
        })
    }
}
