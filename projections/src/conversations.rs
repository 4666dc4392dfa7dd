//! Asynchronous read models of conversations: `rm_messages` (every message with its status,
//! content and reactions) and `rm_chats` (one row per line and phone: last message, unread count,
//! archived).
//!
//! Each is written two ways by the same rules: by SQL, event by event ([`Projection::apply`], what
//! verifications replay), and by a fold in memory (`MessagesFold`, `ChatsFold`), which bulk
//! rebuilds load with `COPY` and the live runners apply a batch at a time over the rows it touches
//! (`live`).

use crate::bulk::{BulkFold, CopyRows};
use crate::{ApplyFuture, Projection, ProjectionError, StoredEvent};
use chrono::{DateTime, Utc};
use domain::chat::{Chat, ChatEvent};
use domain::message::{ArchivePolicy, Content, Message, MessageEvent, Queued, Received};
use domain::Aggregate;
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::HashMap;

mod live;

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

    fn bulk(&self) -> Option<Box<dyn BulkFold>> {
        Some(Box::<MessagesFold>::default())
    }

    fn stream_types(&self) -> &'static [&'static str] {
        &[Message::STREAM_TYPE, Chat::STREAM_TYPE]
    }

    fn apply_batch<'a>(&'a self, conn: &'a mut PgConnection, events: &'a [StoredEvent]) -> ApplyFuture<'a> {
        Box::pin(live::apply_messages(conn, events))
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

    fn bulk(&self) -> Option<Box<dyn BulkFold>> {
        Some(Box::<ChatsFold>::default())
    }

    fn stream_types(&self) -> &'static [&'static str] {
        &[Message::STREAM_TYPE, Chat::STREAM_TYPE]
    }

    fn apply_batch<'a>(&'a self, conn: &'a mut PgConnection, events: &'a [StoredEvent]) -> ApplyFuture<'a> {
        Box::pin(live::apply_chats(conn, events))
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

/// An event of the log as the conversations' folds see it: a message's or a chat's, decoded.
enum Conversation {
    Message(MessageEvent),
    Chat(ChatEvent),
    Other,
}

impl Conversation {
    /// Decode `event`, taking its payload (a bulk load decodes each event once).
    fn take(event: &mut StoredEvent) -> Result<Self, ProjectionError> {
        Ok(match event.stream_type.as_str() {
            s if s == Message::STREAM_TYPE => Conversation::Message(event.take_decoded()?),
            s if s == Chat::STREAM_TYPE => Conversation::Chat(event.take_decoded()?),
            _ => Conversation::Other,
        })
    }

    /// Decode `event`, leaving it as it is.
    fn of(event: &StoredEvent) -> Result<Self, ProjectionError> {
        Ok(match event.stream_type.as_str() {
            s if s == Message::STREAM_TYPE => Conversation::Message(event.decode()?),
            s if s == Chat::STREAM_TYPE => Conversation::Chat(event.decode()?),
            _ => Conversation::Other,
        })
    }
}

/// `rm_messages` folded in memory, for bulk rebuilds: the rows [`Messages`] writes, event for
/// event the same rules (a receipt only moves a status forward, a reaction lands on its target by
/// id or WhatsApp id, a chat read marks its inbound messages).
#[derive(Default)]
struct MessagesFold {
    rows: Vec<MessageRow>,
    by_id: HashMap<String, usize>,
    /// (line, WhatsApp id) → row.
    by_engine_id: HashMap<(String, String), usize>,
    /// (line, chat) → its inbound rows.
    inbound: HashMap<(String, String), Vec<usize>>,
}

#[derive(Clone, PartialEq)]
struct MessageRow {
    message_id: String,
    account_id: String,
    line_id: String,
    chat_phone: String,
    direction: &'static str,
    kind: &'static str,
    text: Option<String>,
    caption: Option<String>,
    media_url: Option<String>,
    media_type: Option<String>,
    quoted_message_id: Option<String>,
    engine_message_id: Option<String>,
    status: &'static str,
    failure_reason: Option<String>,
    reactions: serde_json::Map<String, Value>,
    created_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    read_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
    position: i64,
    sender: Option<String>,
}

const MESSAGE_COLUMNS: &[&str] = &[
    "message_id",
    "account_id",
    "line_id",
    "chat_phone",
    "direction",
    "type",
    "text",
    "caption",
    "media_url",
    "media_type",
    "quoted_message_id",
    "engine_message_id",
    "status",
    "failure_reason",
    "reactions",
    "created_at",
    "sent_at",
    "delivered_at",
    "read_at",
    "failed_at",
    "position",
    "sender",
];

fn owned(value: Option<&str>) -> Option<String> {
    value.map(str::to_owned)
}

impl MessagesFold {
    fn react(&mut self, line_id: &str, content: &Content, who: &str) {
        let Content::Reaction { target_message_id, target_engine_message_id, emoji } = content else { return };
        let by_id =
            target_message_id.as_ref().and_then(|m| self.by_id.get(m.as_str())).filter(|i| self.rows[**i].line_id == line_id);
        let by_engine_id =
            target_engine_message_id.as_ref().and_then(|e| self.by_engine_id.get(&(line_id.to_owned(), e.clone())));
        let mut targets: Vec<usize> = by_id.into_iter().chain(by_engine_id).copied().collect();
        targets.dedup();
        for i in targets {
            let reactions = &mut self.rows[i].reactions;
            if emoji.as_str().is_empty() {
                reactions.remove(who);
            } else {
                reactions.insert(who.to_owned(), Value::String(emoji.as_str().to_owned()));
            }
        }
    }

    fn insert(&mut self, row: MessageRow) -> Result<(), ProjectionError> {
        if self.by_id.contains_key(&row.message_id) {
            return Err(ProjectionError::Inconsistent(format!("message {} is recorded twice", row.message_id)));
        }
        let i = self.rows.len();
        self.by_id.insert(row.message_id.clone(), i);
        if let Some(engine_id) = &row.engine_message_id {
            self.note_engine_id(i, &row.line_id, engine_id)?;
        }
        if row.direction == "inbound" {
            self.inbound.entry((row.line_id.clone(), row.chat_phone.clone())).or_default().push(i);
        }
        self.rows.push(row);
        Ok(())
    }

    /// Note row `i`'s WhatsApp id: unique per line, as the table's index has it.
    fn note_engine_id(&mut self, i: usize, line_id: &str, engine_id: &str) -> Result<(), ProjectionError> {
        match self.by_engine_id.insert((line_id.to_owned(), engine_id.to_owned()), i) {
            Some(other) if other != i => {
                Err(ProjectionError::Inconsistent(format!("WhatsApp id {engine_id} of line {line_id} is on two messages")))
            }
            _ => Ok(()),
        }
    }

    /// Move row of `message_id` on if its status is one of `from`.
    fn row_in(&mut self, message_id: &str, from: &[&str]) -> Option<&mut MessageRow> {
        let i = *self.by_id.get(message_id)?;
        let row = &mut self.rows[i];
        from.contains(&row.status).then_some(row)
    }
}

impl BulkFold for MessagesFold {
    fn fold(&mut self, event: &mut StoredEvent) -> Result<(), ProjectionError> {
        let decoded = Conversation::take(event)?;
        self.fold_decoded(event, decoded)
    }

    fn rows(&self) -> Vec<(&'static str, &'static [&'static str], CopyRows)> {
        let mut copy = CopyRows::new(MESSAGE_COLUMNS.len());
        for m in &self.rows {
            m.copy_to(&mut copy);
        }
        vec![("rm_messages", MESSAGE_COLUMNS, copy)]
    }
}

impl MessagesFold {
    /// Fold one event, decoded.
    fn fold_decoded(&mut self, event: &StoredEvent, decoded: Conversation) -> Result<(), ProjectionError> {
        let decoded = match decoded {
            Conversation::Chat(ChatEvent::Read { line_id, phone, engine_message_ids, .. }) => {
                let key = (line_id.as_str().to_owned(), phone.as_str().to_owned());
                for i in self.inbound.get(&key).into_iter().flatten() {
                    let row = &mut self.rows[*i];
                    let named = engine_message_ids.is_empty()
                        || row.engine_message_id.as_ref().is_some_and(|e| engine_message_ids.contains(e));
                    if row.status != "read" && named {
                        row.status = "read";
                        row.read_at = Some(event.recorded_at);
                    }
                }
                return Ok(());
            }
            Conversation::Message(decoded) => decoded,
            Conversation::Chat(_) | Conversation::Other => return Ok(()),
        };
        let (id, at) = (event.stream_id.as_str(), event.recorded_at);
        match decoded {
            MessageEvent::Queued(q) => {
                self.react(q.line_id.as_str(), &q.content, "self");
                let (text, caption, media_url, media_type) = columns(&q.content);
                self.insert(MessageRow {
                    message_id: q.message_id.to_string(),
                    account_id: q.account_id.to_string(),
                    line_id: q.line_id.to_string(),
                    chat_phone: q.to.as_str().to_owned(),
                    direction: "outbound",
                    kind: q.content.kind(),
                    text: owned(text),
                    caption: owned(caption),
                    media_url: owned(media_url),
                    media_type: owned(media_type),
                    quoted_message_id: q.quoted_message_id.as_ref().map(|m| m.to_string()),
                    engine_message_id: None,
                    status: "queued",
                    failure_reason: None,
                    reactions: Default::default(),
                    created_at: at,
                    sent_at: None,
                    delivered_at: None,
                    read_at: None,
                    failed_at: None,
                    position: event.global_position,
                    sender: None,
                })?;
            }
            MessageEvent::Received(r) => {
                self.react(r.line_id.as_str(), &r.content, r.from.as_str());
                let (text, caption, media_url, media_type) = columns(&r.content);
                let quoted = r.quoted_engine_message_id.as_ref().and_then(|e| {
                    let i = self.by_engine_id.get(&(r.line_id.to_string(), e.clone()))?;
                    Some(self.rows[*i].message_id.clone())
                });
                self.insert(MessageRow {
                    message_id: r.message_id.to_string(),
                    account_id: r.account_id.to_string(),
                    line_id: r.line_id.to_string(),
                    chat_phone: r.chat().as_str().to_owned(),
                    direction: "inbound",
                    kind: r.content.kind(),
                    text: owned(text),
                    caption: owned(caption),
                    media_url: owned(media_url),
                    media_type: owned(media_type),
                    quoted_message_id: quoted,
                    engine_message_id: Some(r.engine_message_id.clone()),
                    status: "delivered",
                    failure_reason: None,
                    reactions: Default::default(),
                    created_at: at,
                    sent_at: None,
                    delivered_at: Some(at),
                    read_at: None,
                    failed_at: None,
                    position: event.global_position,
                    // In a group, who wrote it (in a direct chat that is the chat itself).
                    sender: r.group.is_some().then(|| r.from.as_str().to_owned()),
                })?;
            }
            MessageEvent::DispatchStarted { .. } => {}
            MessageEvent::Sent { engine_message_id } => {
                let Some(i) = self.by_id.get(id).copied().filter(|i| self.rows[*i].status == "queued") else { return Ok(()) };
                let line_id = self.rows[i].line_id.clone();
                self.note_engine_id(i, &line_id, &engine_message_id)?;
                let row = &mut self.rows[i];
                (row.status, row.sent_at, row.engine_message_id) = ("sent", Some(at), Some(engine_message_id));
            }
            MessageEvent::Failed { reason } => {
                if let Some(row) = self.row_in(id, &["queued"]) {
                    (row.status, row.failed_at, row.failure_reason) = ("failed", Some(at), Some(reason));
                }
            }
            MessageEvent::Delivered {} => {
                if let Some(row) = self.row_in(id, &["queued", "sent"]) {
                    (row.status, row.delivered_at) = ("delivered", Some(at));
                }
            }
            MessageEvent::Read {} => {
                if let Some(row) = self.row_in(id, &["queued", "sent", "delivered"]) {
                    (row.status, row.read_at) = ("read", Some(at));
                    row.delivered_at = row.delivered_at.or(Some(at));
                }
            }
        }
        Ok(())
    }
}

impl MessageRow {
    fn copy_to(&self, copy: &mut CopyRows) {
        let m = self;
        copy.row()
            .text(&m.message_id)
            .text(&m.account_id)
            .text(&m.line_id)
            .text(&m.chat_phone)
            .text(m.direction)
            .text(m.kind)
            .opt_text(m.text.as_deref())
            .opt_text(m.caption.as_deref())
            .opt_text(m.media_url.as_deref())
            .opt_text(m.media_type.as_deref())
            .opt_text(m.quoted_message_id.as_deref())
            .opt_text(m.engine_message_id.as_deref())
            .text(m.status)
            .opt_text(m.failure_reason.as_deref())
            .jsonb(&Value::Object(m.reactions.clone()))
            .timestamptz(m.created_at)
            .opt_timestamptz(m.sent_at)
            .opt_timestamptz(m.delivered_at)
            .opt_timestamptz(m.read_at)
            .opt_timestamptz(m.failed_at)
            .bigint(m.position)
            .opt_text(m.sender.as_deref());
    }
}

/// `rm_chats` folded in memory, for bulk rebuilds: the rows [`Chats`] writes.
#[derive(Default)]
struct ChatsFold {
    rows: HashMap<(String, String), ChatRow>,
}

struct ChatRow {
    account_id: String,
    last_message_id: String,
    last_message_preview: String,
    last_message_at: DateTime<Utc>,
    last_direction: &'static str,
    unread_count: i32,
    archived: bool,
}

const CHAT_COLUMNS: &[&str] = &[
    "line_id",
    "phone",
    "account_id",
    "last_message_id",
    "last_message_preview",
    "last_message_at",
    "last_direction",
    "unread_count",
    "archived",
];

impl BulkFold for ChatsFold {
    fn fold(&mut self, event: &mut StoredEvent) -> Result<(), ProjectionError> {
        if !ChatsFold::folds(event) {
            return Ok(());
        }
        let decoded = Conversation::take(event)?;
        self.fold_decoded(event, decoded)
    }

    fn rows(&self) -> Vec<(&'static str, &'static [&'static str], CopyRows)> {
        let mut copy = CopyRows::new(CHAT_COLUMNS.len());
        for ((line_id, phone), c) in &self.rows {
            copy.row()
                .text(line_id)
                .text(phone)
                .text(&c.account_id)
                .text(&c.last_message_id)
                .text(&c.last_message_preview)
                .timestamptz(c.last_message_at)
                .text(c.last_direction)
                .integer(c.unread_count)
                .boolean(c.archived);
        }
        vec![("rm_chats", CHAT_COLUMNS, copy)]
    }
}

impl ChatsFold {
    /// Whether the chats fold looks at `event` at all (so the rest need not be decoded).
    fn folds(event: &StoredEvent) -> bool {
        event.stream_type == Chat::STREAM_TYPE
            || (event.stream_type == Message::STREAM_TYPE
                && matches!(event.event_type.as_str(), "message.queued" | "message.received"))
    }

    /// Fold one event, decoded.
    fn fold_decoded(&mut self, event: &StoredEvent, decoded: Conversation) -> Result<(), ProjectionError> {
        if let Conversation::Chat(chat_event) = decoded {
            let (ChatEvent::Read { line_id, phone, .. }
            | ChatEvent::Archived { line_id, phone, .. }
            | ChatEvent::Unarchived { line_id, phone, .. }) = &chat_event;
            let Some(row) = self.rows.get_mut(&(line_id.to_string(), phone.as_str().to_owned())) else { return Ok(()) };
            match chat_event {
                ChatEvent::Read { .. } => row.unread_count = 0,
                ChatEvent::Archived { .. } => row.archived = true,
                ChatEvent::Unarchived { .. } => row.archived = false,
            }
            return Ok(());
        }
        let Conversation::Message(decoded) = decoded else { return Ok(()) };
        let at = event.recorded_at;
        let (key, account_id, message_id, preview, inbound, archive) = match decoded {
            // Reactions do not move a chat.
            MessageEvent::Queued(Queued { content: Content::Reaction { .. }, .. })
            | MessageEvent::Received(Received { content: Content::Reaction { .. }, .. }) => return Ok(()),
            MessageEvent::Queued(q) => (
                (q.line_id.to_string(), q.to.as_str().to_owned()),
                q.account_id.to_string(),
                q.message_id.to_string(),
                preview(&q.content),
                false,
                Some(q.archive_policy),
            ),
            MessageEvent::Received(r) => (
                (r.line_id.to_string(), r.chat().as_str().to_owned()),
                r.account_id.to_string(),
                r.message_id.to_string(),
                preview(&r.content),
                true,
                None,
            ),
            _ => return Ok(()),
        };
        let direction = if inbound { "inbound" } else { "outbound" };
        match self.rows.get_mut(&key) {
            Some(row) => {
                (row.last_message_id, row.last_message_preview, row.last_message_at, row.last_direction) =
                    (message_id, preview, at, direction);
                match archive {
                    // The send's archive policy decides where the chat ends up.
                    Some(ArchivePolicy::Always) => row.archived = true,
                    Some(ArchivePolicy::Never) => row.archived = false,
                    Some(ArchivePolicy::PreserveIfPreviouslyArchived) => {}
                    None => row.unread_count += 1,
                }
            }
            None => {
                let row = ChatRow {
                    account_id,
                    last_message_id: message_id,
                    last_message_preview: preview,
                    last_message_at: at,
                    last_direction: direction,
                    unread_count: i32::from(inbound),
                    archived: archive == Some(ArchivePolicy::Always),
                };
                self.rows.insert(key, row);
            }
        }
        Ok(())
    }
}
