//! The asynchronous projection runtime.
//!
//! A [`Runner`] keeps one projection up to date. It holds a PostgreSQL advisory lock on its own
//! connection for as long as it is active, so across every process and node at most one runner of
//! a projection applies events; the others wait in standby and take over when the lock is freed
//! (a process that dies loses its connection, and with it the lock). Each batch is applied and its
//! checkpoint written in one transaction, so a batch that fails or is interrupted is re-run whole
//! and no event is ever applied twice.

use crate::log::{read_between, LogPosition};
use crate::{Projection, ProjectionError};
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// First half of every projection lock's key, so they cannot collide with other advisory locks.
const LOCK_CLASS: i32 = 0x5742_0001;

/// The advisory lock (both keys) a runner of `name` holds while it runs: whoever holds it (an
/// operator pausing a projection, a test) keeps every runner of that projection in standby.
pub fn advisory_lock(name: &str) -> (i32, i32) {
    (LOCK_CLASS, lock_key(name))
}

/// A stable 32-bit key per projection name (FNV-1a), the second half of its advisory lock.
pub(crate) fn lock_key(name: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as i32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunnerState {
    /// Not started, or another runner holds the lock.
    Standby,
    /// Holds the lock and applies events.
    Active,
    Stopped,
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    pub batch_size: i64,
    /// How often an active runner looks at the log without a notification (the fallback).
    pub poll_interval: Duration,
    /// How often a runner in standby tries to take the lock.
    pub lock_retry: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self { batch_size: 500, poll_interval: Duration::from_secs(1), lock_retry: Duration::from_secs(2) }
    }
}

pub struct Runner {
    pool: PgPool,
    projection: Arc<dyn Projection>,
    config: RunnerConfig,
    wakeups: watch::Receiver<u64>,
    state: watch::Sender<RunnerState>,
    progress: watch::Sender<LogPosition>,
}

impl Runner {
    pub fn new(pool: PgPool, projection: Arc<dyn Projection>, wakeups: watch::Receiver<u64>, config: RunnerConfig) -> Self {
        Self {
            pool,
            projection,
            config,
            wakeups,
            state: watch::channel(RunnerState::Standby).0,
            progress: watch::channel(LogPosition::START).0,
        }
    }

    /// Follow the position up to which this runner has applied the log (it changes only when
    /// this runner commits a batch).
    pub fn progress(&self) -> watch::Receiver<LogPosition> {
        self.progress.subscribe()
    }

    /// Follow the runner's state (standby, active, stopped).
    pub fn state(&self) -> watch::Receiver<RunnerState> {
        self.state.subscribe()
    }

    /// Run until `shutdown`: wait for the lock, then apply events as they arrive.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let name = self.projection.name();
        while !shutdown.is_cancelled() {
            match self.hold_lock_and_apply(&shutdown).await {
                Ok(()) => {}
                Err(e) => {
                    tracing::error!(projection = name, error = ?e, "projection runner failed; retrying");
                    self.state.send_replace(RunnerState::Standby);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(self.config.lock_retry) => {}
            }
        }
        self.state.send_replace(RunnerState::Stopped);
    }

    /// Returns `Ok` when the lock could not be taken (standby) or on shutdown.
    async fn hold_lock_and_apply(&mut self, shutdown: &CancellationToken) -> Result<(), ProjectionError> {
        // A connection of its own, not the pool's: the advisory lock lives as long as it does.
        let mut conn = PgConnection::connect_with(&self.pool.connect_options()).await?;
        if !try_lock(&mut conn, self.projection.name()).await? {
            self.state.send_replace(RunnerState::Standby);
            conn.close().await?;
            return Ok(());
        }
        self.state.send_replace(RunnerState::Active);
        tracing::info!(projection = self.projection.name(), "projection runner active");
        loop {
            let applied = apply_batch(&mut conn, self.projection.as_ref(), self.config.batch_size).await?;
            if let Some(position) = applied.last {
                self.progress.send_replace(position);
            }
            if applied.count as i64 >= self.config.batch_size {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wakeups.changed() => {}
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        // Let a standby runner elsewhere take over at once.
        unlock_and_close(conn, self.projection.name()).await?;
        Ok(())
    }
}

/// Release the lock and close the connection. Unlocking explicitly matters: a closed connection's
/// backend exits (and frees its locks) asynchronously, so a successor trying at once could fail.
async fn unlock_and_close(mut conn: PgConnection, name: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_unlock($1, $2)").bind(LOCK_CLASS).bind(lock_key(name)).execute(&mut conn).await?;
    conn.close().await
}

async fn try_lock(conn: &mut PgConnection, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)").bind(LOCK_CLASS).bind(lock_key(name)).fetch_one(conn).await
}

/// The projection's checkpoint (the start of the log if it has none), locked until the caller's
/// transaction ends. Every batch takes this lock first, which is how a rebuild pauses the live
/// runner for the moment it switches tables (see [`crate::rebuild`]). The row is created if it is
/// missing, in the same statement, so that there is always a row to wait on: two transactions
/// that each found no row would otherwise both go ahead.
pub async fn checkpoint(conn: &mut PgConnection, name: &str) -> Result<LogPosition, sqlx::Error> {
    let (transaction_id, global_position): (i64, i64) = sqlx::query_as(
        "INSERT INTO projection_checkpoints (name) VALUES ($1) \
         ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name \
         RETURNING transaction_id::text::bigint, global_position",
    )
    .bind(name)
    .fetch_one(conn)
    .await?;
    Ok(LogPosition { transaction_id, global_position })
}

/// The projection's checkpoint as it is now, without locking it (the start of the log if it has
/// none).
async fn peek_checkpoint(conn: &mut PgConnection, name: &str) -> Result<LogPosition, sqlx::Error> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT transaction_id::text::bigint, global_position FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    Ok(row.map_or(LogPosition::START, |(transaction_id, global_position)| LogPosition { transaction_id, global_position }))
}

/// Write the checkpoint `name`.
pub(crate) async fn set_checkpoint(conn: &mut PgConnection, name: &str, at: LogPosition) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (name, transaction_id, global_position, updated_at) \
         VALUES ($1, $2::text::xid8, $3, now()) \
         ON CONFLICT (name) DO UPDATE SET transaction_id = EXCLUDED.transaction_id, \
             global_position = EXCLUDED.global_position, updated_at = now()",
    )
    .bind(name)
    .bind(at.transaction_id.to_string())
    .bind(at.global_position)
    .execute(conn)
    .await?;
    Ok(())
}

/// What one batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub count: usize,
    /// The new checkpoint, if anything was applied.
    pub last: Option<LogPosition>,
}

/// Apply one batch after the checkpoint and move the checkpoint, in one transaction. The caller
/// must hold the projection's lock.
pub async fn apply_batch(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    batch_size: i64,
) -> Result<Applied, ProjectionError> {
    apply_batch_to(conn, projection, projection.name(), None, batch_size, Fold::Batch).await
}

/// How a batch is folded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// With the projection's [`Projection::apply_batch`] (set-based where it has one): runners
    /// and rebuilds.
    Batch,
    /// One [`Projection::apply`] per event: verifications, which check the set-based folds
    /// against the projection's event-by-event SQL.
    EventByEvent,
}

/// [`apply_batch`] with the checkpoint kept under `checkpoint_name`, and never past `upto`. Inside
/// a transaction already open on `conn`, the batch is a savepoint of it.
pub async fn apply_batch_to(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    checkpoint_name: &str,
    upto: Option<LogPosition>,
    batch_size: i64,
    fold: Fold,
) -> Result<Applied, ProjectionError> {
    // Read before taking the checkpoint's lock: the lock is a write, which gives the transaction
    // an id, and a transaction id held while a batch is read would hold back the horizon of every
    // reader of the log (`pg_snapshot_xmin`) for that long. Only the apply holds one.
    let from = peek_checkpoint(&mut *conn, checkpoint_name).await?;
    let events = read_between(&mut *conn, from, upto, batch_size, projection.stream_types()).await?;
    let Some(last) = events.last().map(|e| e.position()) else {
        return Ok(Applied { count: 0, last: None });
    };
    let mut tx = conn.begin().await?;
    if checkpoint(&mut tx, checkpoint_name).await? != from {
        // Moved while the batch was read (a rebuild handed over its checkpoint): read again.
        // End the transaction now: a dropped one is only rolled back on the connection's next
        // use, and until then it sits "idle in transaction" holding a snapshot.
        tx.rollback().await?;
        return Ok(Applied { count: 0, last: None });
    }
    match fold {
        Fold::Batch => projection.apply_batch(&mut tx, &events).await?,
        Fold::EventByEvent => {
            for event in &events {
                projection.apply(&mut tx, event).await?;
            }
        }
    }
    set_checkpoint(&mut tx, checkpoint_name, last).await?;
    tx.commit().await?;
    Ok(Applied { count: events.len(), last: Some(last) })
}

/// Take the lock if it is free, apply everything the log holds now, and let go. `None` means
/// another runner holds the lock (and is the one keeping the projection up to date). Used by
/// one-shot commands and by tests, which drive projections to completion instead of waiting.
pub async fn catch_up_once(
    pool: &PgPool,
    projection: &dyn Projection,
    batch_size: i64,
) -> Result<Option<usize>, ProjectionError> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    if !try_lock(&mut conn, projection.name()).await? {
        conn.close().await?;
        return Ok(None);
    }
    let mut total = 0;
    loop {
        let n = apply_batch(&mut conn, projection, batch_size).await?.count;
        total += n;
        if (n as i64) < batch_size {
            break;
        }
    }
    unlock_and_close(conn, projection.name()).await?;
    Ok(Some(total))
}

#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    pub checkpoint: LogPosition,
    /// Events in the log after the checkpoint.
    pub lag: i64,
    /// Whether some runner (in any process) holds the projection's lock right now.
    pub active: bool,
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Checkpoint, lag and activity of each named projection, in one query.
pub async fn status(pool: &PgPool, names: &[&str]) -> Result<Vec<ProjectionStatus>, sqlx::Error> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let keys: Vec<i64> = names.iter().map(|n| i64::from(lock_key(n) as u32)).collect();
    type Row = (String, i64, i64, Option<chrono::DateTime<chrono::Utc>>, i64, bool);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT n.name, \
                COALESCE(c.transaction_id, '0')::text::bigint, \
                COALESCE(c.global_position, 0), \
                c.updated_at, \
                (SELECT count(*) FROM events e \
                  WHERE (e.transaction_id, e.global_position) > (COALESCE(c.transaction_id, '0'), COALESCE(c.global_position, 0))), \
                EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
                         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                         AND l.classid = ($3::bigint & 4294967295)::oid AND l.objid = n.key::oid AND l.objsubid = 2) \
           FROM unnest($1::text[], $2::bigint[]) AS n(name, key) \
           LEFT JOIN projection_checkpoints c ON c.name = n.name \
          ORDER BY n.name",
    )
    .bind(&names)
    .bind(&keys)
    .bind(i64::from(LOCK_CLASS as u32))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, transaction_id, global_position, updated_at, lag, active)| ProjectionStatus {
            name,
            checkpoint: LogPosition { transaction_id, global_position },
            lag,
            active,
            updated_at,
        })
        .collect())
}
