//! An account's own events as its people read them (the console's Activity page): newest first,
//! paged by keyset on the log position, each with who acted, and payloads without secrets (the
//! redaction of `bridge audit replay`, [`crate::audit::replay::redacted_payload`]).

use super::{cursor_at, next_page};
use chrono::{DateTime, Utc};
use domain::ids::AccountId;
use projections::log::EVENT_COLUMNS;
use projections::StoredEvent;
use serde_json::Value;
use sqlx::PgPool;
use std::collections::HashMap;

/// Who caused an event, as the account's people know them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// An API key, by its id.
    ApiKey(String),
    /// A console user, by email (by id if the user is no longer found).
    ConsoleUser(String),
    /// The operator of the service (the CLI).
    Operator,
    /// The service itself (its engines, its schedules), or an event recorded before actors were.
    System,
}

impl Who {
    /// `api_key`, `console_user`, `operator` or `system`.
    pub fn kind(&self) -> &'static str {
        match self {
            Who::ApiKey(_) => "api_key",
            Who::ConsoleUser(_) => "console_user",
            Who::Operator => "operator",
            Who::System => "system",
        }
    }
}

pub struct ActivityEntry {
    pub position: i64,
    pub recorded_at: DateTime<Utc>,
    pub event_type: String,
    /// `type/id`, as audits name streams.
    pub stream: String,
    pub who: Who,
    pub request_id: Option<String>,
    /// Without secrets.
    pub payload: Value,
}

pub struct ActivityPage {
    pub entries: Vec<ActivityEntry>,
    /// The cursor of the next (older) page, if there is one.
    pub older: Option<String>,
}

/// Up to `limit` of the account's events older than the `before` position (newest first).
pub async fn newest_first(
    pool: &PgPool,
    account_id: &AccountId,
    before: Option<i64>,
    limit: i64,
) -> Result<ActivityPage, sqlx::Error> {
    let mut events: Vec<StoredEvent> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM events \
          WHERE tenant_id = $1 AND ($2::bigint IS NULL OR global_position < $2) \
          ORDER BY global_position DESC LIMIT $3"
    ))
    .bind(account_id.as_str())
    .bind(before)
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let older = next_page(&mut events, limit, |e| cursor_at(e.global_position));
    let emails = console_user_emails(pool, account_id, &events).await?;
    let entries = events
        .iter()
        .map(|e| ActivityEntry {
            position: e.global_position,
            recorded_at: e.recorded_at,
            event_type: e.event_type.clone(),
            stream: format!("{}/{}", e.stream_type, e.stream_id),
            who: who(&e.metadata, &emails),
            request_id: e.metadata.get("request_id").and_then(Value::as_str).map(str::to_owned),
            payload: crate::audit::replay::redacted_payload(e),
        })
        .collect();
    Ok(ActivityPage { entries, older })
}

/// The emails of the account's console users who caused any of `events`.
async fn console_user_emails(
    pool: &PgPool,
    account_id: &AccountId,
    events: &[StoredEvent],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let mut ids: Vec<&str> = events.iter().filter_map(|e| console_user_of(&e.metadata)).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT user_id, email FROM console_users WHERE account_id = $1 AND user_id = ANY($2)")
            .bind(account_id.as_str())
            .bind(&ids)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().collect())
}

fn console_user_of(metadata: &Value) -> Option<&str> {
    let actor = metadata.get("actor")?;
    (actor.get("kind")?.as_str()? == "console_user").then(|| actor.get("user_id")?.as_str())?
}

/// Who an event's metadata names (see `store::Actor` for the shapes).
fn who(metadata: &Value, emails: &HashMap<String, String>) -> Who {
    let actor = metadata.get("actor");
    let field = |name: &str| actor.and_then(|a| a.get(name)).and_then(Value::as_str).map(str::to_owned);
    match actor.and_then(|a| a.get("kind")).and_then(Value::as_str) {
        Some("api_key") => field("key_id").map_or(Who::System, Who::ApiKey),
        Some("console_user") => {
            field("user_id").map_or(Who::System, |id| Who::ConsoleUser(emails.get(&id).cloned().unwrap_or(id)))
        }
        Some("operator") => Who::Operator,
        _ => Who::System,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actors_are_named_as_the_account_knows_them() {
        let emails = HashMap::from([("cu_1".to_owned(), "ana@example.com".to_owned())]);
        let of = |actor: Value| who(&json!({ "actor": actor }), &emails);
        assert_eq!(of(json!({"kind": "api_key", "key_id": "key_1"})), Who::ApiKey("key_1".into()));
        assert_eq!(of(json!({"kind": "console_user", "user_id": "cu_1"})), Who::ConsoleUser("ana@example.com".into()));
        assert_eq!(of(json!({"kind": "console_user", "user_id": "cu_2"})), Who::ConsoleUser("cu_2".into()));
        assert_eq!(of(json!({"kind": "operator", "name": "cli:root"})), Who::Operator, "the operator's own name stays inside");
        assert_eq!(of(json!({"kind": "engine", "line_id": "line_1"})), Who::System);
        assert_eq!(of(json!({"kind": "system"})), Who::System);
        assert_eq!(who(&json!({}), &emails), Who::System);
        assert_eq!(console_user_of(&json!({"actor": {"kind": "console_user", "user_id": "cu_1"}})), Some("cu_1"));
        assert_eq!(console_user_of(&json!({"actor": {"kind": "api_key", "key_id": "key_1"}})), None);
    }
}
