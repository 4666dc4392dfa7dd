//! Reading the event log.
//!
//! Positions are `(transaction_id, global_position)`. Identity values are taken when a row is
//! inserted but become visible when its transaction commits, so a transaction holding position 7
//! can commit after the one holding position 8. A reader that kept only `global_position > last`
//! would then skip 7 forever. Reading in `(transaction_id, global_position)` order and stopping
//! below `pg_snapshot_xmin(pg_current_snapshot())` (the oldest transaction still running) means
//! every event before the reader's position is final: nothing can commit behind it.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
pub struct LogPosition {
    pub transaction_id: i64,
    pub global_position: i64,
}

impl LogPosition {
    pub const START: LogPosition = LogPosition { transaction_id: 0, global_position: 0 };
}

/// One event as stored in the log.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredEvent {
    pub global_position: i64,
    pub transaction_id: i64,
    pub tenant_id: String,
    pub stream_type: String,
    pub stream_id: String,
    pub stream_version: i64,
    pub event_id: String,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    pub fn position(&self) -> LogPosition {
        LogPosition { transaction_id: self.transaction_id, global_position: self.global_position }
    }

    /// [`StoredEvent::decode`], taking the payload out of the event instead of copying it: for a
    /// reader that is done with the payload (a bulk fold).
    pub fn take_decoded<E: domain::DomainEvent>(&mut self) -> Result<E, domain::EventDecodeError> {
        E::from_stored(&self.event_type, self.schema_version, std::mem::take(&mut self.payload))
    }

    /// Decode into a domain event type, upcasting older schema versions.
    pub fn decode<E: domain::DomainEvent>(&self) -> Result<E, domain::EventDecodeError> {
        E::from_stored(&self.event_type, self.schema_version, self.payload.clone())
    }
}

/// The columns of [`StoredEvent`], with `xid8` read as a bigint. The bigint keeps the column's
/// name, so a query selecting these must order by `events.transaction_id` (the column), never by
/// the bare name: that names the bigint, which no index has, and sorts the whole table.
pub const EVENT_COLUMNS: &str = "global_position, transaction_id::text::bigint AS transaction_id, tenant_id, \
     stream_type, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata, recorded_at";

/// Up to `limit` events after `after`, in log order, that no running transaction can precede,
/// as projections read them (see [`read_between`]).
pub async fn read_after<'c>(conn: impl PgExecutor<'c>, after: LogPosition, limit: i64) -> Result<Vec<StoredEvent>, sqlx::Error> {
    read_between(conn, after, None, limit, &[]).await
}

/// The columns a projection reads: no metadata (no projection folds it), and the payload only of
/// the stream types the parameter `types` names (all when it is empty). The other events come
/// with a null payload, so a reader still moves past them without their bytes.
fn projection_columns(types: &str) -> String {
    format!(
        "global_position, transaction_id::text::bigint AS transaction_id, tenant_id, stream_type, stream_id, \
         stream_version, event_id, event_type, schema_version, \
         CASE WHEN cardinality({types}::text[]) = 0 OR stream_type = ANY({types}::text[]) THEN payload \
             ELSE 'null'::jsonb END AS payload, \
         'null'::jsonb AS metadata, recorded_at"
    )
}

static BELOW_HORIZON: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM events \
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY events.transaction_id, events.global_position LIMIT $3",
        projection_columns("$4")
    )
});
static UP_TO: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {} FROM events \
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
           AND (transaction_id, global_position) <= ($5::text::xid8, $6) \
         ORDER BY events.transaction_id, events.global_position LIMIT $3",
        projection_columns("$4")
    )
});

/// The statements that read the log in order (after a position below the horizon, between two
/// positions, and the head), for tests that check PostgreSQL reads them along the log's index.
#[doc(hidden)]
pub fn ordered_reads() -> [&'static str; 3] {
    [&BELOW_HORIZON, &UP_TO, HEAD]
}

/// Like [`read_after`], but up to `upto` (inclusive) when it is given: a position the caller
/// knows to be final (below the horizon when it was read, or with appends locked out), so the
/// horizon is not consulted again. Only events of `stream_types` (all when empty) carry their
/// payload, and none their metadata.
pub async fn read_between<'c>(
    conn: impl PgExecutor<'c>,
    after: LogPosition,
    upto: Option<LogPosition>,
    limit: i64,
    stream_types: &[&str],
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql: &str = if upto.is_some() { &UP_TO } else { &BELOW_HORIZON };
    let query =
        sqlx::query_as(sql).bind(after.transaction_id.to_string()).bind(after.global_position).bind(limit).bind(stream_types);
    let query = match upto {
        Some(upto) => query.bind(upto.transaction_id.to_string()).bind(upto.global_position),
        None => query,
    };
    query.fetch_all(conn).await
}

/// Every event of one stream, in stream order.
pub async fn read_stream<'c>(
    conn: impl PgExecutor<'c>,
    stream_type: &str,
    stream_id: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE stream_type = $1 AND stream_id = $2 ORDER BY stream_version");
    sqlx::query_as(&sql).bind(stream_type).bind(stream_id).fetch_all(conn).await
}

const HEAD: &str = "SELECT transaction_id::text::bigint, global_position FROM events \
     ORDER BY events.transaction_id DESC, events.global_position DESC LIMIT 1";

/// The newest position of the log (committed or not), for lag reporting.
pub async fn head<'c>(conn: impl PgExecutor<'c>) -> Result<Option<LogPosition>, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(HEAD).fetch_optional(conn).await?;
    Ok(row.map(|(transaction_id, global_position)| LogPosition { transaction_id, global_position }))
}
