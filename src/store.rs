//! The event store: atomic appends across several streams with optimistic concurrency per stream,
//! inline projections in the same transaction, and a NOTIFY that readers receive after commit.
//!
//! Command handlers produce an [`Append`] (a decision); the store writes it. Keeping the two apart
//! is what lets concurrent appends share one transaction (group commit, [`EventStore::append_batch_in`])
//! without touching the handlers.

use domain::ids::EventId;
use domain::DomainEvent;
use projections::log::read_stream;
use projections::notify::{Announcement, Notice, CHANNEL};
use projections::{Projection, ProjectionError, StoredEvent};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use std::sync::Arc;

/// Who caused an append: written into every event's metadata for auditors.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    ApiKey {
        key_id: String,
    },
    Operator {
        name: String,
    },
    Engine {
        line_id: String,
    },
    /// A person signed in to the console (the web UI).
    ConsoleUser {
        user_id: String,
    },
    System,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metadata {
    pub actor: Actor,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
}

impl Metadata {
    pub fn new(actor: Actor) -> Self {
        Self { actor, request_id: None, correlation_id: None, causation_id: None }
    }

    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }
}

/// Events for one stream, to be written after `expected_version` (0 for a new stream).
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub stream_type: &'static str,
    pub stream_id: String,
    pub expected_version: i64,
    pub events: Vec<(String, i32, Value)>,
}

impl StreamAppend {
    pub fn new<E: DomainEvent>(
        stream_type: &'static str,
        stream_id: impl Into<String>,
        expected_version: i64,
        events: &[E],
    ) -> Self {
        let events = events
            .iter()
            .map(|e| {
                let (event_type, payload) = e.to_stored();
                (event_type, e.schema_version(), payload)
            })
            .collect();
        Self { stream_type, stream_id: stream_id.into(), expected_version, events }
    }
}

/// One decision: events for one or more streams of one tenant, written all or nothing.
#[derive(Debug, Clone)]
pub struct Append {
    pub tenant_id: String,
    pub metadata: Metadata,
    pub streams: Vec<StreamAppend>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended to the stream since it was read: reload, decide again.
    #[error("concurrent write to stream {stream_type}/{stream_id}")]
    Conflict { stream_type: String, stream_id: String },
    #[error("database error")]
    Db(#[source] sqlx::Error),
    #[error("inline projection failed")]
    Projection(#[from] ProjectionError),
}

impl AppendError {
    /// The constraint (or unique index) a write of the append violated, by name: an inline
    /// projection's constraint is how some rules that span streams are enforced.
    pub fn violated_constraint(&self) -> Option<&str> {
        let db = match self {
            AppendError::Db(e) | AppendError::Projection(ProjectionError::Db(e)) => e.as_database_error(),
            _ => None,
        };
        db.and_then(|db| db.constraint())
    }
}

impl From<sqlx::Error> for AppendError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.constraint() == Some("events_stream_version_key") => {
                AppendError::Conflict { stream_type: String::new(), stream_id: String::new() }
            }
            _ => AppendError::Db(e),
        }
    }
}

/// Streams whose changes must reach every node's caches even if this process dies right after
/// committing (key revocations, suspensions): they NOTIFY inside their transaction. It costs
/// throughput (PostgreSQL serialises the commits of notifying transactions), which these rare
/// events can afford and the message streams cannot.
const ANNOUNCED_IN_TRANSACTION: [&str; 2] = ["account", "api_key"];

/// Coalesces the announcements of committed appends into one NOTIFY every few milliseconds.
#[derive(Clone)]
pub struct Announcer {
    queue: tokio::sync::mpsc::UnboundedSender<Announcement>,
}

impl Announcer {
    /// Start the announcing task on `pool`; it stops with `shutdown` after a last flush.
    /// `origin` names this node in its notices, so other nodes can tell whose appends they hear of.
    pub fn start(
        pool: PgPool,
        origin: Option<String>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, mut pending) = tokio::sync::mpsc::unbounded_channel::<Announcement>();
        let task = tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    first = pending.recv() => first,
                    _ = shutdown.cancelled() => None,
                };
                let Some(first) = first else { break };
                let mut batch = vec![first];
                // Whatever else committed meanwhile goes in the same NOTIFY.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                while let Ok(more) = pending.try_recv() {
                    if !batch.contains(&more) {
                        batch.push(more);
                    }
                }
                let notify = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(Notice::payload(batch, origin.clone()))
                    .execute(&pool)
                    .await;
                if let Err(e) = notify {
                    // Readers still poll: a lost wake-up delays them by one poll interval.
                    tracing::warn!(error = %e, "announcing appends failed");
                }
            }
            // Flush what is left so no committed append goes unannounced on a clean stop.
            let mut rest = Vec::new();
            while let Ok(more) = pending.try_recv() {
                rest.push(more);
            }
            if !rest.is_empty() {
                let _ = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(Notice::payload(rest, origin))
                    .execute(&pool)
                    .await;
            }
        });
        (Self { queue }, task)
    }
}

#[derive(Clone)]
pub struct EventStore {
    pool: PgPool,
    inline: Arc<Vec<Arc<dyn Projection>>>,
    /// Without one (one-shot commands), every append notifies inside its transaction.
    announcer: Option<Announcer>,
    /// This process's projection runners, woken the moment an append commits (other processes
    /// hear of it through the NOTIFY).
    local: Option<projections::notify::LogWatcher>,
}

impl EventStore {
    pub fn new(pool: PgPool, inline: Vec<Arc<dyn Projection>>) -> Self {
        Self { pool, inline: Arc::new(inline), announcer: None, local: None }
    }

    /// Wake this process's runners through `watcher` as soon as an append commits.
    pub fn with_local_wakeups(mut self, watcher: projections::notify::LogWatcher) -> Self {
        self.local = Some(watcher);
        self
    }

    /// Announce appends after they commit, coalesced, instead of inside their transactions.
    pub fn with_announcer(mut self, announcer: Announcer) -> Self {
        self.announcer = Some(announcer);
        self
    }

    fn announcement(append: &Append) -> Announcement {
        let mut kinds: Vec<&str> = append.streams.iter().map(|s| s.stream_type).collect();
        kinds.sort_unstable();
        kinds.dedup();
        Announcement {
            tenant: append.tenant_id.clone(),
            stream_types: kinds.into_iter().map(str::to_owned).collect(),
            origin: None,
        }
    }

    fn notifies_in_transaction(&self, append: &Append) -> bool {
        self.announcer.is_none() || append.streams.iter().any(|s| ANNOUNCED_IN_TRANSACTION.contains(&s.stream_type))
    }

    /// Call once the transaction that ran [`EventStore::append_in`] has committed: readers on
    /// every node are woken (unless the append already notified inside its transaction).
    pub fn committed(&self, append: &Append) {
        if let (false, Some(announcer)) = (self.notifies_in_transaction(append), &self.announcer) {
            let _ = announcer.queue.send(Self::announcement(append));
        }
        if let Some(local) = &self.local {
            local.poke();
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The inline projections every append runs, in order.
    pub fn inline_projections() -> Vec<Arc<dyn Projection>> {
        use projections::*;
        vec![
            Arc::new(accounts::Accounts),
            Arc::new(api_keys::ApiKeys),
            Arc::new(lines::Lines),
            Arc::new(messaging::UsageCounters),
            Arc::new(messaging::IdempotencyKeys { response: crate::commands::messages::accepted_response }),
            Arc::new(messaging::DispatchQueue),
            Arc::new(webhooks::Webhooks),
            Arc::new(console_users::ConsoleUsers),
        ]
    }

    /// Every event of a stream, in order.
    pub async fn read_stream(&self, stream_type: &str, stream_id: &str) -> Result<Vec<StoredEvent>, sqlx::Error> {
        read_stream(&self.pool, stream_type, stream_id).await
    }

    /// Write `append` in its own transaction. Nothing is written if any stream moved on since it was
    /// read ([`AppendError::Conflict`]) or any inline projection fails.
    pub async fn append(&self, append: &Append) -> Result<Vec<StoredEvent>, AppendError> {
        let started = std::time::Instant::now();
        let mut tx = self.pool.begin().await?;
        let stored = self.append_in(&mut tx, append).await?;
        tx.commit().await?;
        crate::metrics::global().append(started.elapsed(), 1);
        self.committed(append);
        Ok(stored)
    }

    /// Write `append` inside the caller's transaction (for commands that check more in it). Once
    /// that transaction commits, the caller must call [`EventStore::committed`].
    pub async fn append_in(&self, conn: &mut PgConnection, append: &Append) -> Result<Vec<StoredEvent>, AppendError> {
        let mut stored = self.append_batch_in(conn, &[append]).await?;
        Ok(stored.pop().unwrap_or_default())
    }
}

/// The events of several appends in one statement (each event with its own tenant and
/// metadata), returning only what the database assigns.
const INSERT_BATCH_SQL: &str = "INSERT INTO events (tenant_id, stream_type, stream_id, stream_version, event_id, event_type, \
         schema_version, payload, metadata) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::int[], $8::jsonb[], $9::jsonb[]) \
     RETURNING event_id, global_position, transaction_id::text::bigint, recorded_at";

impl EventStore {
    /// Write several appends inside the caller's transaction with one INSERT, then run the inline
    /// projections once over all their events (set-based where a projection can). All stand or
    /// none: a conflict on any stream fails them all. Returns each append's stored events; once
    /// the transaction commits, the caller must call [`EventStore::committed`] for each.
    pub async fn append_batch_in(
        &self,
        conn: &mut PgConnection,
        appends: &[&Append],
    ) -> Result<Vec<Vec<StoredEvent>>, AppendError> {
        self.append_batch_in_applied(conn, appends, &[]).await
    }

    /// [`EventStore::append_batch_in`] for a caller that has itself written, in the same
    /// transaction, what the inline projections named in `applied` make of these events (the send
    /// batch adds to the quota counters in the statement that checks them); those are not run.
    pub async fn append_batch_in_applied(
        &self,
        conn: &mut PgConnection,
        appends: &[&Append],
        applied: &[&str],
    ) -> Result<Vec<Vec<StoredEvent>>, AppendError> {
        // Every event in the order written (which is the order of their positions), and how many
        // each append has.
        let mut all: Vec<StoredEvent> = Vec::new();
        let mut sizes: Vec<usize> = Vec::with_capacity(appends.len());
        for append in appends {
            let metadata = serde_json::to_value(&append.metadata).expect("metadata serializes");
            let before = all.len();
            for stream in &append.streams {
                for (i, (event_type, schema_version, payload)) in stream.events.iter().enumerate() {
                    all.push(StoredEvent {
                        global_position: 0,
                        transaction_id: 0,
                        tenant_id: append.tenant_id.clone(),
                        stream_type: stream.stream_type.to_owned(),
                        stream_id: stream.stream_id.clone(),
                        stream_version: stream.expected_version + 1 + i as i64,
                        event_id: EventId::new().to_string(),
                        event_type: event_type.clone(),
                        schema_version: *schema_version,
                        payload: payload.clone(),
                        metadata: metadata.clone(),
                        recorded_at: chrono::DateTime::UNIX_EPOCH,
                    });
                }
            }
            sizes.push(all.len() - before);
        }
        if all.is_empty() {
            return Ok(sizes.iter().map(|_| Vec::new()).collect());
        }
        let announce_now: Vec<&&Append> = appends.iter().filter(|a| self.notifies_in_transaction(a)).collect();
        let column = |f: fn(&StoredEvent) -> &str| all.iter().map(f).collect::<Vec<&str>>();
        let assigned: Vec<(String, i64, i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(INSERT_BATCH_SQL)
            .bind(column(|e| &e.tenant_id))
            .bind(column(|e| &e.stream_type))
            .bind(column(|e| &e.stream_id))
            .bind(all.iter().map(|e| e.stream_version).collect::<Vec<i64>>())
            .bind(column(|e| &e.event_id))
            .bind(column(|e| &e.event_type))
            .bind(all.iter().map(|e| e.schema_version).collect::<Vec<i32>>())
            .bind(all.iter().map(|e| &e.payload).collect::<Vec<&Value>>())
            .bind(all.iter().map(|e| &e.metadata).collect::<Vec<&Value>>())
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| match AppendError::from(e) {
                AppendError::Conflict { .. } => conflict_of(appends[0]),
                other => other,
            })?;
        if !announce_now.is_empty() {
            let notice = Notice::payload(announce_now.iter().map(|a| Self::announcement(a)).collect(), None);
            sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(notice).execute(&mut *conn).await?;
        }
        let assigned: std::collections::HashMap<String, (i64, i64, chrono::DateTime<chrono::Utc>)> =
            assigned.into_iter().map(|(id, position, xid, at)| (id, (position, xid, at))).collect();
        for event in all.iter_mut() {
            let (position, xid, at) = assigned[&event.event_id];
            (event.global_position, event.transaction_id, event.recorded_at) = (position, xid, at);
        }
        debug_assert!(all.windows(2).all(|w| w[0].global_position < w[1].global_position), "positions follow the rows");
        for projection in self.inline.iter().filter(|p| !applied.contains(&p.name())) {
            projection.apply_batch(&mut *conn, &all).await?;
        }
        let mut rest = all.into_iter();
        Ok(sizes.into_iter().map(|n| rest.by_ref().take(n).collect()).collect())
    }
}

fn conflict_of(append: &Append) -> AppendError {
    // The constraint does not say which stream; with one stream (the common case) it is that one.
    let first = &append.streams[0];
    AppendError::Conflict { stream_type: first.stream_type.to_owned(), stream_id: first.stream_id.clone() }
}
