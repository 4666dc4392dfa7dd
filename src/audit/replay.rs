//! An account's history as auditors read it: its events in log order, one JSON object each, with
//! who acted (which key, operator or engine) and which request, and no secret.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use projections::log::EVENT_COLUMNS;
use projections::{LogPosition, StoredEvent};
use serde_json::{json, Value};

/// Which of an account's events to replay.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub account_id: String,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    /// A stream: `type/id` (`line/line_…`), or just its id (ids carry their type's prefix).
    pub stream: Option<String>,
    /// Only events after this log position (a cursor for paging).
    pub after: Option<LogPosition>,
    pub limit: Option<i64>,
}

/// Payload fields that never leave the server in an audit: webhook secrets are stored sealed, API
/// keys and the console's one-time links as hashes, console passwords as argon2id hashes, and none
/// of them is of use to an auditor.
const REDACTED_FIELDS: [&str; 5] = ["secret", "key_hash", "previous_hash", "password_hash", "token_hash"];

fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if REDACTED_FIELDS.contains(&key.as_str()) && !field.is_null() {
                    *field = Value::String("[redacted]".into());
                } else {
                    redact(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The event's payload without its secrets: what an audit, and the console's Activity page, show.
pub fn redacted_payload(event: &StoredEvent) -> Value {
    let mut payload = event.payload.clone();
    redact(&mut payload);
    payload
}

/// One event as an audit line.
pub fn line(event: &StoredEvent) -> Value {
    let payload = redacted_payload(event);
    json!({
        "position": event.global_position,
        "recorded_at": event.recorded_at,
        "stream": format!("{}/{}", event.stream_type, event.stream_id),
        "stream_version": event.stream_version,
        "event_id": event.event_id,
        "type": event.event_type,
        "schema_version": event.schema_version,
        "payload": payload,
        "metadata": event.metadata,
    })
}

/// Call `each` with every matching event's audit line, in log order, reading the log as a stream.
pub async fn replay(
    pool: &sqlx::PgPool,
    filter: &Filter,
    mut each: impl FnMut(&StoredEvent, Value) -> std::io::Result<()>,
) -> anyhow::Result<u64> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE tenant_id = $1 \
           AND ($2::timestamptz IS NULL OR recorded_at >= $2) \
           AND ($3::timestamptz IS NULL OR recorded_at < $3) \
           AND ($4::text IS NULL OR stream_id = $4 OR stream_type || '/' || stream_id = $4) \
           AND ($5::text IS NULL OR (transaction_id, global_position) > ($5::text::xid8, $6)) \
         ORDER BY events.transaction_id, events.global_position \
         LIMIT $7"
    );
    let mut rows = sqlx::query_as::<_, StoredEvent>(&sql)
        .bind(&filter.account_id)
        .bind(filter.from)
        .bind(filter.to)
        .bind(&filter.stream)
        .bind(filter.after.map(|p| p.transaction_id.to_string()))
        .bind(filter.after.map_or(0, |p| p.global_position))
        .bind(filter.limit.unwrap_or(i64::MAX))
        .fetch(pool);
    let mut count = 0;
    while let Some(event) = rows.try_next().await? {
        each(&event, line(&event))?;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_key_hashes_are_redacted_wherever_they_are() {
        let mut payload =
            json!({"url": "https://x", "secret": "c2VhbGVk", "nested": [{"key_hash": "ab"}], "previous_hash": null});
        redact(&mut payload);
        assert_eq!(
            payload,
            json!({"url": "https://x", "secret": "[redacted]", "nested": [{"key_hash": "[redacted]"}], "previous_hash": null})
        );
        let mut console = json!({"email": "ana@example.com", "token_hash": "ab", "password_hash": "$argon2id$v=19$x"});
        redact(&mut console);
        assert_eq!(console, json!({"email": "ana@example.com", "token_hash": "[redacted]", "password_hash": "[redacted]"}));
    }
}
