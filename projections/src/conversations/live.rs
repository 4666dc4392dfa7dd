//! The live runners' set-based apply of `rm_messages` and `rm_chats`. A batch of events loads
//! the rows it can touch in one query, folds the events over them in memory with the folds the
//! bulk rebuilds use (the same rules as the event-by-event SQL of [`Messages`](super::Messages)
//! and [`Chats`](super::Chats)), and writes back what changed with one `UNNEST` upsert per table:
//! two statements a batch, where the event-by-event SQL takes one or two an event. Verifications
//! still replay with that SQL, so each `projections verify` checks these folds against it.

use super::{
    ChatRow, ChatsFold, Conversation, MessageRow, MessagesFold, ProjectionError, StoredEvent, CHAT_COLUMNS, MESSAGE_COLUMNS,
};
use chrono::{DateTime, Utc};
use domain::chat::ChatEvent;
use domain::message::{Content, MessageEvent};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use std::collections::HashSet;
use std::sync::LazyLock;

/// `value` as one of the `known` spellings (the folds keep these columns as static strings).
fn known(column: &str, value: String, known: &[&'static str]) -> Result<&'static str, ProjectionError> {
    known
        .iter()
        .find(|k| **k == value)
        .copied()
        .ok_or_else(|| ProjectionError::Inconsistent(format!("rm_messages.{column} holds `{value}`, which no event writes")))
}

fn message_row(r: &PgRow) -> Result<MessageRow, ProjectionError> {
    let reactions = match r.try_get::<Value, _>(14)? {
        Value::Object(map) => map,
        _ => Default::default(),
    };
    Ok(MessageRow {
        message_id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        line_id: r.try_get(2)?,
        chat_phone: r.try_get(3)?,
        direction: known("direction", r.try_get(4)?, &["outbound", "inbound"])?,
        kind: known("type", r.try_get(5)?, &["text", "image", "video", "audio", "document", "reaction"])?,
        text: r.try_get(6)?,
        caption: r.try_get(7)?,
        media_url: r.try_get(8)?,
        media_type: r.try_get(9)?,
        quoted_message_id: r.try_get(10)?,
        engine_message_id: r.try_get(11)?,
        status: known("status", r.try_get(12)?, &["queued", "sent", "delivered", "read", "failed"])?,
        failure_reason: r.try_get(13)?,
        reactions,
        created_at: r.try_get(15)?,
        sent_at: r.try_get(16)?,
        delivered_at: r.try_get(17)?,
        read_at: r.try_get(18)?,
        failed_at: r.try_get(19)?,
        position: r.try_get(20)?,
        sender: r.try_get(21)?,
    })
}

/// The rows a batch can touch: its own messages and the targets of its reactions by id; the
/// messages its reactions and quotes name by WhatsApp id; and the unread inbound messages of the
/// chats it marks read. The last two look each key up on its own (a lateral subquery the planner
/// cannot flatten): as joins, a plan made for big chats scanned the whole table on every batch,
/// even one with no key at all.
static LOAD_MESSAGES: LazyLock<String> = LazyLock::new(|| {
    let columns = MESSAGE_COLUMNS.iter().map(|c| format!("m.{c}")).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT {columns} FROM rm_messages m WHERE m.message_id = ANY($1) \
         UNION ALL \
         SELECT {columns} FROM UNNEST($2::text[], $3::text[]) AS k(line_id, engine_message_id) \
           CROSS JOIN LATERAL (SELECT * FROM rm_messages r \
                WHERE r.line_id = k.line_id AND r.engine_message_id = k.engine_message_id OFFSET 0) m \
         UNION ALL \
         SELECT {columns} FROM UNNEST($4::text[], $5::text[]) AS c(line_id, phone) \
           CROSS JOIN LATERAL (SELECT * FROM rm_messages r \
                WHERE r.line_id = c.line_id AND r.chat_phone = c.phone AND r.direction = 'inbound' AND r.status <> 'read' \
                OFFSET 0) m"
    )
});

/// One upsert of whole rows, column arrays in `columns`' order, keyed by `key`.
fn upsert(table: &str, columns: &[&str], types: &[&str], key: &str) -> String {
    let arrays = types.iter().enumerate().map(|(i, t)| format!("${}::{t}[]", i + 1)).collect::<Vec<_>>().join(", ");
    let keys: Vec<&str> = key.split(", ").collect();
    let set = columns.iter().filter(|c| !keys.contains(c)).map(|c| format!("{c} = EXCLUDED.{c}")).collect::<Vec<_>>().join(", ");
    format!("INSERT INTO {table} ({}) SELECT * FROM UNNEST({arrays}) ON CONFLICT ({key}) DO UPDATE SET {set}", columns.join(", "))
}

static UPSERT_MESSAGES: LazyLock<String> = LazyLock::new(|| {
    let types: Vec<&str> = MESSAGE_COLUMNS
        .iter()
        .map(|column| match *column {
            "reactions" => "jsonb",
            "created_at" | "sent_at" | "delivered_at" | "read_at" | "failed_at" => "timestamptz",
            "position" => "bigint",
            _ => "text",
        })
        .collect();
    upsert("rm_messages", MESSAGE_COLUMNS, &types, "message_id")
});

static UPSERT_CHATS: LazyLock<String> = LazyLock::new(|| {
    let types = ["text", "text", "text", "text", "text", "timestamptz", "text", "integer", "boolean"];
    upsert("rm_chats", CHAT_COLUMNS, &types, "line_id, phone")
});

pub(super) async fn apply_messages(conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), ProjectionError> {
    let decoded: Vec<Conversation> = events.iter().map(Conversation::of).collect::<Result<_, _>>()?;
    let mut ids: Vec<&str> = Vec::new();
    let (mut engine_lines, mut engine_ids): (Vec<&str>, Vec<&str>) = Default::default();
    let (mut chat_lines, mut chat_phones): (Vec<&str>, Vec<&str>) = Default::default();
    for (event, decoded) in events.iter().zip(&decoded) {
        match decoded {
            Conversation::Message(m) => {
                ids.push(&event.stream_id);
                let (line_id, content, quoted) = match m {
                    MessageEvent::Queued(q) => (q.line_id.as_str(), &q.content, None),
                    MessageEvent::Received(r) => (r.line_id.as_str(), &r.content, r.quoted_engine_message_id.as_deref()),
                    _ => continue,
                };
                if let Content::Reaction { target_message_id, target_engine_message_id, .. } = content {
                    ids.extend(target_message_id.as_ref().map(|m| m.as_str()));
                    if let Some(engine_id) = target_engine_message_id {
                        engine_lines.push(line_id);
                        engine_ids.push(engine_id);
                    }
                }
                if let Some(engine_id) = quoted {
                    engine_lines.push(line_id);
                    engine_ids.push(engine_id);
                }
            }
            Conversation::Chat(ChatEvent::Read { line_id, phone, .. }) => {
                chat_lines.push(line_id.as_str());
                chat_phones.push(phone.as_str());
            }
            _ => {}
        }
    }
    if ids.is_empty() && chat_lines.is_empty() {
        return Ok(());
    }
    let loaded = sqlx::query(&LOAD_MESSAGES)
        .bind(&ids)
        .bind(&engine_lines)
        .bind(&engine_ids)
        .bind(&chat_lines)
        .bind(&chat_phones)
        .fetch_all(&mut *conn)
        .await?;
    let mut fold = MessagesFold::default();
    for row in &loaded {
        let row = message_row(row)?;
        // A row can be found by more than one of its keys.
        if !fold.by_id.contains_key(&row.message_id) {
            fold.insert(row)?;
        }
    }
    let before = fold.rows.clone();
    for (event, decoded) in events.iter().zip(decoded) {
        fold.fold_decoded(event, decoded)?;
    }
    let changed: Vec<&MessageRow> =
        fold.rows.iter().enumerate().filter(|(i, row)| before.get(*i) != Some(*row)).map(|(_, row)| row).collect();
    if changed.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&MessageRow) -> &str| changed.iter().map(|m| f(m)).collect::<Vec<&str>>();
    let opt_text = |f: fn(&MessageRow) -> Option<&str>| changed.iter().map(|m| f(m)).collect::<Vec<Option<&str>>>();
    let time = |f: fn(&MessageRow) -> Option<DateTime<Utc>>| changed.iter().map(|m| f(m)).collect::<Vec<_>>();
    sqlx::query(&UPSERT_MESSAGES)
        .bind(text(|m| &m.message_id))
        .bind(text(|m| &m.account_id))
        .bind(text(|m| &m.line_id))
        .bind(text(|m| &m.chat_phone))
        .bind(text(|m| m.direction))
        .bind(text(|m| m.kind))
        .bind(opt_text(|m| m.text.as_deref()))
        .bind(opt_text(|m| m.caption.as_deref()))
        .bind(opt_text(|m| m.media_url.as_deref()))
        .bind(opt_text(|m| m.media_type.as_deref()))
        .bind(opt_text(|m| m.quoted_message_id.as_deref()))
        .bind(opt_text(|m| m.engine_message_id.as_deref()))
        .bind(text(|m| m.status))
        .bind(opt_text(|m| m.failure_reason.as_deref()))
        .bind(changed.iter().map(|m| Value::Object(m.reactions.clone())).collect::<Vec<_>>())
        .bind(changed.iter().map(|m| m.created_at).collect::<Vec<_>>())
        .bind(time(|m| m.sent_at))
        .bind(time(|m| m.delivered_at))
        .bind(time(|m| m.read_at))
        .bind(time(|m| m.failed_at))
        .bind(changed.iter().map(|m| m.position).collect::<Vec<_>>())
        .bind(opt_text(|m| m.sender.as_deref()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A row of `rm_chats` as read: its key, then a [`ChatRow`]'s columns.
type ChatRecord = (String, String, String, String, Option<String>, DateTime<Utc>, String, i32, bool);

pub(super) async fn apply_chats(conn: &mut PgConnection, events: &[StoredEvent]) -> Result<(), ProjectionError> {
    let mut folded: Vec<(&StoredEvent, Conversation)> = Vec::new();
    let mut keys: HashSet<(String, String)> = HashSet::new();
    for event in events.iter().filter(|e| ChatsFold::folds(e)) {
        folded.push((event, Conversation::of(event)?));
    }
    for (_, decoded) in &folded {
        let key = match decoded {
            Conversation::Chat(
                ChatEvent::Read { line_id, phone, .. }
                | ChatEvent::Archived { line_id, phone, .. }
                | ChatEvent::Unarchived { line_id, phone, .. },
            ) => (line_id.to_string(), phone.as_str().to_owned()),
            Conversation::Message(MessageEvent::Queued(q)) => (q.line_id.to_string(), q.to.as_str().to_owned()),
            Conversation::Message(MessageEvent::Received(r)) => (r.line_id.to_string(), r.chat().as_str().to_owned()),
            _ => continue,
        };
        keys.insert(key);
    }
    if keys.is_empty() {
        return Ok(());
    }
    let (lines, phones): (Vec<String>, Vec<String>) = keys.into_iter().unzip();
    let loaded: Vec<ChatRecord> = sqlx::query_as(
        "SELECT line_id, phone, account_id, last_message_id, last_message_preview, last_message_at, last_direction, \
                unread_count, archived \
           FROM rm_chats WHERE (line_id, phone) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
    )
    .bind(&lines)
    .bind(&phones)
    .fetch_all(&mut *conn)
    .await?;
    let mut fold = ChatsFold::default();
    for (line_id, phone, account_id, last_message_id, preview, last_message_at, direction, unread_count, archived) in loaded {
        let last_direction = match direction.as_str() {
            "inbound" => "inbound",
            "outbound" => "outbound",
            other => {
                return Err(ProjectionError::Inconsistent(format!(
                    "rm_chats.last_direction holds `{other}`, which no event writes"
                )))
            }
        };
        let row = ChatRow {
            account_id,
            last_message_id,
            last_message_preview: preview.unwrap_or_default(),
            last_message_at,
            last_direction,
            unread_count,
            archived,
        };
        fold.rows.insert((line_id, phone), row);
    }
    for (event, decoded) in folded {
        fold.fold_decoded(event, decoded)?;
    }
    let rows: Vec<(&(String, String), &ChatRow)> = fold.rows.iter().collect();
    sqlx::query(&UPSERT_CHATS)
        .bind(rows.iter().map(|((line_id, _), _)| line_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|((_, phone), _)| phone.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, c)| c.account_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, c)| c.last_message_id.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, c)| c.last_message_preview.as_str()).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, c)| c.last_message_at).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, c)| c.last_direction).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, c)| c.unread_count).collect::<Vec<_>>())
        .bind(rows.iter().map(|(_, c)| c.archived).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    Ok(())
}
