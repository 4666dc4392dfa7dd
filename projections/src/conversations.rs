//! Asynchronous read models of conversations: `rm_messages` (every message with its status,
//! content and reactions) and `rm_chats` (one row per line and phone: last message, unread count,
//! archived).

use crate::{ApplyFuture, Projection, StoredEvent};
use domain::chat::{Chat, ChatEvent};
use domain::message::{ArchivePolicy, Content, Message, MessageEvent, Queued, Received};
use domain::Aggregate;
use sqlx::PgConnection;

/// Short text shown for a chat's last message.
fn preview(content: &Content) -> String {
    let text = match content {
        Content::Text { text } => text.as_str().to_owned(),
        Content::Media { caption: Some(c), media_type, .. } => format!("[{}] {}", media_type.as_str(), c.as_str()),
        Content::Media { media_type, .. } => format!("[{}]", media_type.as_str()),
        Content::Reaction { emoji, .. } => emoji.as_str().to_owned(),
    };
    text.chars().take(120).collect()
}

fn columns(content: &Content) -> (Option<&str>, Option<&str>, Option<&str>, Option<&str>) {
    match content {
        Content::Text { text } => (Some(text.as_str()), None, None, None),
        Content::Media { media_url, media_type, caption } => {
            (None, caption.as_ref().map(|c| c.as_str()), Some(media_url.as_str()), Some(media_type.as_str()))
        }
        Content::Reaction { emoji, .. } => (Some(emoji.as_str()), None, None, None),
    }
}

/// Set (or, with an empty emoji, remove) `who`'s reaction on the target message of the line.
async fn react(conn: &mut PgConnection, line_id: &str, content: &Content, who: &str) -> Result<(), sqlx::Error> {
    let Content::Reaction { target_message_id, target_engine_message_id, emoji } = content else { return Ok(()) };
    sqlx::query(
        "UPDATE rm_messages SET reactions = CASE WHEN $4 = '' THEN reactions - $5 ELSE reactions || jsonb_build_object($5::text, $4::text) END \
         WHERE line_id = $1 AND (message_id = $2 OR engine_message_id = $3)",
    )
    .bind(line_id)
    .bind(target_message_id.as_ref().map(|m| m.as_str()))
    .bind(target_engine_message_id)
    .bind(emoji.as_str())
    .bind(who)
    .execute(conn)
    .await?;
    Ok(())
}

pub struct Messages;

impl Projection for Messages {
    fn name(&self) -> &'static str {
        "messages"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_messages"]
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            if event.stream_type == Chat::STREAM_TYPE {
                if let ChatEvent::Read { line_id, phone, engine_message_ids, .. } = event.decode::<ChatEvent>()? {
                    sqlx::query(
                        "UPDATE rm_messages SET status = 'read', read_at = $4 \
                         WHERE line_id = $1 AND chat_phone = $2 AND direction = 'inbound' AND status <> 'read' \
                           AND (cardinality($3::text[]) = 0 OR engine_message_id = ANY($3))",
                    )
                    .bind(line_id.as_str())
                    .bind(phone.as_str())
                    .bind(&engine_message_ids)
                    .bind(event.recorded_at)
                    .execute(conn)
                    .await?;
                }
                return Ok(());
            }
            if event.stream_type != Message::STREAM_TYPE {
                return Ok(());
            }
            let (id, at) = (&event.stream_id, event.recorded_at);
            match event.decode::<MessageEvent>()? {
                MessageEvent::Queued(q) => {
                    // A reaction is a message of its own on the network, shown on its target.
                    react(&mut *conn, q.line_id.as_str(), &q.content, "self").await?;
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
                    react(&mut *conn, r.line_id.as_str(), &r.content, r.from.as_str()).await?;
                    let (text, caption, media_url, media_type) = columns(&r.content);
                    sqlx::query(
                        "INSERT INTO rm_messages (message_id, account_id, line_id, chat_phone, direction, type, text, caption, \
                             media_url, media_type, quoted_message_id, engine_message_id, status, created_at, delivered_at, position, sender) \
                         VALUES ($1, $2, $3, $4, 'inbound', $5, $6, $7, $8, $9, \
                             (SELECT message_id FROM rm_messages WHERE line_id = $3 AND engine_message_id = $10), \
                             $11, 'delivered', $12, $12, $13, $14)",
                    )
                    .bind(r.message_id.as_str())
                    .bind(r.account_id.as_str())
                    .bind(r.line_id.as_str())
                    .bind(r.chat().as_str())
                    .bind(r.content.kind())
                    .bind(text)
                    .bind(caption)
                    .bind(media_url)
                    .bind(media_type)
                    .bind(r.quoted_engine_message_id)
                    .bind(&r.engine_message_id)
                    .bind(at)
                    .bind(event.global_position)
                    // In a group, who wrote it (in a direct chat that is the chat itself).
                    .bind(r.group.is_some().then(|| r.from.as_str()))
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

    fn tables(&self) -> &'static [&'static str] {
        &["rm_chats"]
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            if event.stream_type == Chat::STREAM_TYPE {
                let (sql, line_id, phone) = match event.decode::<ChatEvent>()? {
                    ChatEvent::Read { line_id, phone, .. } => {
                        ("UPDATE rm_chats SET unread_count = 0 WHERE line_id = $1 AND phone = $2", line_id, phone)
                    }
                    ChatEvent::Archived { line_id, phone, .. } => {
                        ("UPDATE rm_chats SET archived = true WHERE line_id = $1 AND phone = $2", line_id, phone)
                    }
                    ChatEvent::Unarchived { line_id, phone, .. } => {
                        ("UPDATE rm_chats SET archived = false WHERE line_id = $1 AND phone = $2", line_id, phone)
                    }
                };
                sqlx::query(sql).bind(line_id.as_str()).bind(phone.as_str()).execute(conn).await?;
                return Ok(());
            }
            if event.stream_type != Message::STREAM_TYPE
                || !matches!(event.event_type.as_str(), "message.queued" | "message.received")
            {
                return Ok(());
            }
            let at = event.recorded_at;
            match event.decode::<MessageEvent>()? {
                // Reactions do not move a chat.
                MessageEvent::Queued(Queued { content: Content::Reaction { .. }, .. })
                | MessageEvent::Received(Received { content: Content::Reaction { .. }, .. }) => {}
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
                    .bind(r.chat().as_str())
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
