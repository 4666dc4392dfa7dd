//! Rebuilding a read model from the log while it keeps serving, and checking one against a fresh
//! replay.
//!
//! A rebuild builds the projection's tables anew in a schema of their own (`rebuild_<name>`), with
//! the same columns, constraints and index names, by running the projection from the start of the
//! log on a connection whose `search_path` puts that schema first, so the projection's own SQL
//! writes there unchanged. Its checkpoint is kept as `rebuild:<name>`, in the same transactions as
//! its rows, so an interrupted rebuild resumes where it stopped. Once it has caught up, one short
//! transaction switches: it locks the live checkpoint (every batch of the live runner takes that
//! lock first, so the live runner waits), applies the last few events, moves the live tables out
//! and the new ones into `public`, and hands the new checkpoint to the live runner. Readers wait
//! for that transaction only; the old tables are dropped after it.
//!
//! An inline projection (the quota counters) has no runner: appends write it in their own
//! transactions. Its switch locks appends out instead (`LOCK TABLE events IN EXCLUSIVE MODE`,
//! which readers pass), applies the events up to the head, now final, and swaps; appends wait for
//! those milliseconds.
//!
//! A projection that can fold the log in memory ([`Projection::bulk`]) is rebuilt faster: its
//! copies start bare, the log below the horizon is folded in memory and written with one binary
//! `COPY` per table, the keys and indexes are built over the loaded rows, and the rebuild goes on
//! from there as above. Verification always replays with the projection's own SQL, so it checks
//! the bulk fold too.
//!
//! A verification builds into a scratch schema (`verify_<name>`) up to where the live projection
//! is, takes a read-only snapshot of the live tables at that same position, and compares the two
//! row by row in it, holding no transaction id: neither the live runner nor any reader of the log
//! waits for the comparison ([`freeze`]).

use crate::log::{head, LogPosition};
use crate::runtime::{apply_batch_to, checkpoint, lock_key, set_checkpoint, Applied, Fold};
use crate::{Projection, ProjectionError};
use serde::Serialize;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use std::cmp::Ordering;
use std::time::Instant;

/// First half of the advisory lock a rebuild or verification holds for its projection.
const LOCK_CLASS: i32 = 0x5742_0003;

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("{0} cannot be rebuilt: its rows record what was done (deliveries made), which the log alone cannot recreate")]
    NotRebuildable(&'static str),
    #[error("a rebuild or verification of {0} is already running")]
    Busy(&'static str),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

impl From<sqlx::Error> for RebuildError {
    fn from(e: sqlx::Error) -> Self {
        RebuildError::Projection(ProjectionError::Db(e))
    }
}

/// How far a rebuild has got, for progress displays.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Progress {
    pub applied: u64,
    /// Events between the start and the log's head when the rebuild started (an estimate: the
    /// log keeps growing).
    pub total: u64,
    pub position: i64,
    pub elapsed_secs: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rebuilt {
    pub projection: &'static str,
    pub events: u64,
    /// Whether an interrupted rebuild was taken up again rather than started over.
    pub resumed: bool,
    pub checkpoint: LogPosition,
    pub elapsed_secs: f64,
}

/// Rows that differ between the live tables and a fresh replay.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub table: &'static str,
    /// `live` (only in the live table) or `replayed` (only in the fresh replay).
    pub side: &'static str,
    pub row: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    pub projection: &'static str,
    pub checkpoint: LogPosition,
    pub rows_compared: i64,
    pub differences: Vec<Difference>,
    /// Differences beyond those listed.
    pub more_differences: i64,
}

const MAX_LISTED_DIFFERENCES: i64 = 100;

/// A connection of its own holding the rebuild lock of `projection`.
async fn locked_connection(pool: &PgPool, name: &'static str) -> Result<PgConnection, RebuildError> {
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
        .bind(LOCK_CLASS)
        .bind(lock_key(name))
        .fetch_one(&mut conn)
        .await?;
    if !locked {
        conn.close().await.ok();
        return Err(RebuildError::Busy(name));
    }
    Ok(conn)
}

async fn exists(conn: &mut PgConnection, sql: &str, name: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(sql).bind(name).fetch_one(conn).await
}

/// Create `schema` with empty copies of the live `tables`: same columns, defaults, checks, keys
/// and index names (index names are per schema, so they can be the same).
async fn create_copies(conn: &mut PgConnection, schema: &str, tables: &[&str]) -> Result<(), sqlx::Error> {
    create_bare_copies(conn, schema, tables).await?;
    add_keys_and_indexes(conn, schema, tables).await
}

/// Create `schema` with copies of the live `tables` that have their columns, defaults and checks
/// but no keys or indexes yet: what a bulk load writes into.
async fn create_bare_copies(conn: &mut PgConnection, schema: &str, tables: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&mut *conn).await?;
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut *conn).await?;
    for table in tables {
        sqlx::query(&format!(
            "CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)"
        ))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Give the copies in `schema` the live tables' keys, unique constraints, foreign keys and other
/// indexes, under the same names.
async fn add_keys_and_indexes(conn: &mut PgConnection, schema: &str, tables: &[&str]) -> Result<(), sqlx::Error> {
    for table in tables {
        // Keys, unique constraints and foreign keys, under their own names.
        let constraints: Vec<(String, String)> = sqlx::query_as(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = ('public.' || $1)::regclass AND contype IN ('p', 'u', 'x', 'f') ORDER BY conname",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        for (name, definition) in constraints {
            sqlx::query(&format!("ALTER TABLE {schema}.{table} ADD CONSTRAINT {name} {definition}")).execute(&mut *conn).await?;
        }
        // The other indexes, with the definition pointed at the copy.
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i \
             WHERE i.indrelid = ('public.' || $1)::regclass \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
             ORDER BY i.indexrelid",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        for definition in indexes {
            let pointed = definition.replacen(&format!(" ON public.{table} "), &format!(" ON {schema}.{table} "), 1);
            sqlx::query(&pointed).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// Apply batches into the schema `conn` writes to, under `checkpoint_name`, until the log (or
/// `upto`) is reached.
async fn catch_up<F: FnMut(Progress)>(
    conn: &mut PgConnection,
    projection: &dyn Projection,
    checkpoint_name: &str,
    upto: Option<LogPosition>,
    batch_size: i64,
    fold: Fold,
    tracker: &mut Tracker<F>,
) -> Result<(), ProjectionError> {
    loop {
        let applied = apply_batch_to(conn, projection, checkpoint_name, upto, batch_size, fold).await?;
        tracker.batch(&applied);
        if (applied.count as i64) < batch_size {
            return Ok(());
        }
    }
}

/// Counts what a rebuild or verification applied and reports it after every batch.
struct Tracker<F: FnMut(Progress)> {
    started: Instant,
    /// The estimate of what there is to apply, from the log's head when counting started.
    total: u64,
    applied: u64,
    position: i64,
    report: F,
}

impl<F: FnMut(Progress)> Tracker<F> {
    async fn new(conn: &mut PgConnection, started: Instant, from: LogPosition, report: F) -> Result<Self, sqlx::Error> {
        let head = head(&mut *conn).await?.map_or(0, |p| p.global_position);
        let total = (head - from.global_position).max(0) as u64;
        Ok(Self { started, total, applied: 0, position: from.global_position, report })
    }

    fn batch(&mut self, applied: &Applied) {
        self.applied += applied.count as u64;
        if let Some(last) = applied.last {
            self.position = last.global_position;
        }
        (self.report)(Progress {
            applied: self.applied,
            total: self.total.max(self.applied),
            position: self.position,
            elapsed_secs: self.started.elapsed().as_secs_f64(),
        });
    }
}

/// Where a projection is now (its checkpoint row is locked and let go at once).
async fn current_checkpoint(conn: &mut PgConnection, name: &str) -> Result<LogPosition, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let position = checkpoint(&mut tx, name).await?;
    tx.rollback().await?;
    Ok(position)
}

/// The projection's tables, and a connection of its own holding its rebuild lock.
async fn start(pool: &PgPool, projection: &dyn Projection) -> Result<(&'static [&'static str], PgConnection), RebuildError> {
    let tables = projection.tables();
    if tables.is_empty() {
        return Err(RebuildError::NotRebuildable(projection.name()));
    }
    Ok((tables, locked_connection(pool, projection.name()).await?))
}

/// Rebuild `projection`'s tables from the log while the live ones keep serving (see the module
/// docs). Safe to interrupt and run again: it resumes.
pub async fn rebuild(
    pool: &PgPool,
    projection: &dyn Projection,
    batch_size: i64,
    progress: impl FnMut(Progress),
) -> Result<Rebuilt, RebuildError> {
    let (name, started) = (projection.name(), Instant::now());
    let (tables, mut conn) = start(pool, projection).await?;
    let (schema, retired, shadow_checkpoint) = (format!("rebuild_{name}"), format!("retired_{name}"), format!("rebuild:{name}"));
    // What a run interrupted right after its switch left behind.
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {retired} CASCADE")).execute(&mut conn).await?;

    let schema_exists = exists(&mut conn, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", &schema).await?;
    let checkpoint_exists =
        exists(&mut conn, "SELECT EXISTS (SELECT 1 FROM projection_checkpoints WHERE name = $1)", &shadow_checkpoint).await?;
    let mut tables_exist = true;
    for table in tables {
        let qualified = format!("{schema}.{table}");
        tables_exist &= exists(&mut conn, "SELECT to_regclass($1) IS NOT NULL", &qualified).await?;
    }
    let resumed = schema_exists && checkpoint_exists && tables_exist;
    let bulk = !resumed && projection.bulk().is_some();
    if !resumed {
        sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1").bind(&shadow_checkpoint).execute(&mut conn).await?;
        if bulk {
            create_bare_copies(&mut conn, &schema, tables).await?;
        } else {
            create_copies(&mut conn, &schema, tables).await?;
        }
    }
    // From here on, the projection's unqualified table names are the copies.
    sqlx::query(&format!("SET search_path = {schema}, public")).execute(&mut conn).await?;

    let mut tracker = if bulk {
        // Everything below the horizon folded in memory and copied in at once, then the keys and
        // indexes built over it, then the checkpoint: until it is written, an interrupted run
        // starts over.
        let mut tracker = Tracker::new(&mut conn, started, LogPosition::START, progress).await?;
        if let Some((at, events)) = crate::bulk::load(pool, &mut conn, projection, LogPosition::START, None).await? {
            // Index builds sort the whole table: give them room to do it in memory.
            sqlx::query("SET maintenance_work_mem = '256MB'").execute(&mut conn).await?;
            let indexing = Instant::now();
            add_keys_and_indexes(&mut conn, &schema, tables).await?;
            sqlx::query("RESET maintenance_work_mem").execute(&mut conn).await?;
            tracing::info!(projection = name, secs = indexing.elapsed().as_secs_f64(), "keys and indexes built");
            set_checkpoint(&mut conn, &shadow_checkpoint, at).await?;
            tracker.batch(&Applied { count: events as usize, last: Some(at) });
        }
        tracker
    } else {
        let from = checkpoint(&mut conn, &shadow_checkpoint).await?;
        Tracker::new(&mut conn, started, from, progress).await?
    };
    catch_up(&mut conn, projection, &shadow_checkpoint, None, batch_size, Fold::Batch, &mut tracker).await?;

    // The switch: one short transaction.
    let mut tx = conn.begin().await?;
    if projection.inline() {
        // Appends write an inline projection in their own transactions, so they are kept out for
        // the moment of the switch (readers of the log are not). The projection's tables are
        // locked first: the commands that write them lock them before appending, and taking the
        // two locks in their order cannot deadlock with them.
        for table in tables {
            sqlx::query(&format!("LOCK TABLE public.{table} IN ACCESS EXCLUSIVE MODE")).execute(&mut *tx).await?;
        }
        sqlx::query("LOCK TABLE public.events IN EXCLUSIVE MODE").execute(&mut *tx).await?;
        // With appends locked out, the head is final.
        let head = head(&mut *tx).await?.unwrap_or(LogPosition::START);
        catch_up(&mut tx, projection, &shadow_checkpoint, Some(head), batch_size, Fold::Batch, &mut tracker).await?;
    } else {
        // The live runner waits on its checkpoint row from here to the commit. The horizon only
        // moves forward, so the copy, read below it now, is at least where the live runner stopped.
        checkpoint(&mut tx, name).await?;
        catch_up(&mut tx, projection, &shadow_checkpoint, None, batch_size, Fold::Batch, &mut tracker).await?;
    }
    let new_checkpoint = checkpoint(&mut tx, &shadow_checkpoint).await?;
    sqlx::query(&format!("CREATE SCHEMA {retired}")).execute(&mut *tx).await?;
    for table in tables {
        sqlx::query(&format!("ALTER TABLE public.{table} SET SCHEMA {retired}")).execute(&mut *tx).await?;
        sqlx::query(&format!("ALTER TABLE {schema}.{table} SET SCHEMA public")).execute(&mut *tx).await?;
    }
    // An inline projection has no row here, and the statement changes nothing.
    sqlx::query(
        "UPDATE public.projection_checkpoints SET transaction_id = $2::text::xid8, global_position = $3, updated_at = now() \
         WHERE name = $1",
    )
    .bind(name)
    .bind(new_checkpoint.transaction_id.to_string())
    .bind(new_checkpoint.global_position)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM public.projection_checkpoints WHERE name = $1").bind(&shadow_checkpoint).execute(&mut *tx).await?;
    tx.commit().await?;

    sqlx::query(&format!("DROP SCHEMA {retired} CASCADE")).execute(&mut conn).await?;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut conn).await?;
    conn.close().await?;
    Ok(Rebuilt {
        projection: name,
        events: tracker.applied,
        resumed,
        checkpoint: new_checkpoint,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

/// Replay `projection` from the start of the log into scratch tables and compare them with the
/// live ones at the same log position ([`freeze`], then [`Frozen::compare`]).
pub async fn verify(
    pool: &PgPool,
    projection: &dyn Projection,
    batch_size: i64,
    progress: impl FnMut(Progress),
) -> Result<Verified, RebuildError> {
    freeze(pool, projection, batch_size, progress).await?.compare().await
}

/// A verification ready to compare: the scratch tables replayed up to `checkpoint`, and a
/// read-only snapshot in which the live tables are at that same position.
pub struct Frozen {
    projection: &'static str,
    tables: &'static [&'static str],
    schema: String,
    scratch_checkpoint: String,
    checkpoint: LogPosition,
    /// Holds the verification's lock, and reads the scratch tables.
    conn: PgConnection,
    /// In a read-only REPEATABLE READ transaction on the snapshot taken at `checkpoint`.
    live: PgConnection,
}

/// Replay `projection` into scratch tables up to where the live one is, and hold a snapshot of
/// the live tables at that position.
///
/// Only the last stretch of the replay runs in a transaction that has to wait for anything: for
/// an asynchronous projection it locks the live checkpoint (so the live runner waits for those
/// few events); for an inline one it reads the head in a REPEATABLE READ snapshot, where the live
/// rows are exactly those of the events visible. That transaction exports its snapshot to a
/// second, read-only transaction and commits. The comparison then reads the live tables in that
/// read-only snapshot, and the scratch tables (no longer written) as committed: neither side holds
/// a transaction id, so the live runner goes on at once and no reader of the log finds its horizon
/// held back, however long the comparison takes.
pub async fn freeze(
    pool: &PgPool,
    projection: &dyn Projection,
    batch_size: i64,
    progress: impl FnMut(Progress),
) -> Result<Frozen, RebuildError> {
    let (name, started) = (projection.name(), Instant::now());
    let (tables, mut conn) = start(pool, projection).await?;
    let (schema, scratch_checkpoint) = (format!("verify_{name}"), format!("verify:{name}"));
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1").bind(&scratch_checkpoint).execute(&mut conn).await?;
    create_copies(&mut conn, &schema, tables).await?;
    sqlx::query(&format!("SET search_path = {schema}, public")).execute(&mut conn).await?;

    let mut tracker = Tracker::new(&mut conn, started, LogPosition::START, progress).await?;
    let mut live = pool.acquire().await?.detach();
    let mut tx = if projection.inline() {
        // Most of the log first, below the horizon (where nothing can still commit); then, in one
        // snapshot, the rest.
        catch_up(&mut conn, projection, &scratch_checkpoint, None, batch_size, Fold::EventByEvent, &mut tracker).await?;
        let mut tx = conn.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
        tx
    } else {
        // Never past the live projection, which only moves forward: up to where it is now, then,
        // with it waiting, up to where it stopped.
        let live_now = current_checkpoint(&mut conn, name).await?;
        catch_up(&mut conn, projection, &scratch_checkpoint, Some(live_now), batch_size, Fold::EventByEvent, &mut tracker)
            .await?;
        conn.begin().await?
    };
    let checkpoint = match projection.inline() {
        true => head(&mut *tx).await?.unwrap_or(LogPosition::START),
        false => checkpoint(&mut tx, name).await?,
    };
    catch_up(&mut tx, projection, &scratch_checkpoint, Some(checkpoint), batch_size, Fold::EventByEvent, &mut tracker).await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()").fetch_one(&mut *tx).await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").execute(&mut live).await?;
    sqlx::query(&format!("SET TRANSACTION SNAPSHOT '{snapshot}'")).execute(&mut live).await?;
    tx.commit().await?;
    Ok(Frozen { projection: name, tables, schema, scratch_checkpoint, checkpoint, conn, live })
}

impl Frozen {
    /// The log position both sides are at.
    pub fn checkpoint(&self) -> LogPosition {
        self.checkpoint
    }

    /// The server processes of the two connections (to see what they hold).
    pub async fn backends(&mut self) -> Result<[i32; 2], sqlx::Error> {
        let pid = "SELECT pg_backend_pid()";
        Ok([sqlx::query_scalar(pid).fetch_one(&mut self.conn).await?, sqlx::query_scalar(pid).fetch_one(&mut self.live).await?])
    }

    /// Compare the live rows with the replayed ones, table by table: both sides are read in one
    /// order (each row as JSON text, bytewise) and merged, so a row on one side only is a
    /// difference, as many times as it is missing.
    pub async fn compare(mut self) -> Result<Verified, RebuildError> {
        use futures_util::TryStreamExt;
        let (mut differences, mut more, mut rows_compared) = (Vec::new(), 0i64, 0i64);
        for &table in self.tables {
            let rows = |schema: &str| {
                format!("SELECT to_jsonb(x)::text FROM {schema}.{table} x ORDER BY to_jsonb(x)::text COLLATE \"C\"")
            };
            let (live_rows, replayed_rows) = (rows("public"), rows(&self.schema));
            let mut live = sqlx::query_scalar::<_, String>(&live_rows).fetch(&mut self.live);
            let mut replayed = sqlx::query_scalar::<_, String>(&replayed_rows).fetch(&mut self.conn);
            let (mut l, mut r) = (live.try_next().await?, replayed.try_next().await?);
            let mut differ = |side: &'static str, row: String| {
                if differences.len() < MAX_LISTED_DIFFERENCES as usize {
                    let row = serde_json::from_str(&row).unwrap_or(Value::String(row));
                    differences.push(Difference { table, side, row });
                } else {
                    more += 1;
                }
            };
            loop {
                let order = match (&l, &r) {
                    (None, None) => break,
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (Some(a), Some(b)) => a.cmp(b),
                };
                if order != Ordering::Greater {
                    rows_compared += 1;
                    if order == Ordering::Less {
                        differ("live", l.take().expect("a live row"));
                    }
                    l = live.try_next().await?;
                }
                if order != Ordering::Less {
                    if order == Ordering::Greater {
                        differ("replayed", r.take().expect("a replayed row"));
                    }
                    r = replayed.try_next().await?;
                }
            }
        }
        sqlx::query("ROLLBACK").execute(&mut self.live).await?;
        self.live.close().await?;
        let mut conn = self.conn;
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema)).execute(&mut conn).await?;
        sqlx::query("DELETE FROM public.projection_checkpoints WHERE name = $1")
            .bind(&self.scratch_checkpoint)
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(Verified {
            projection: self.projection,
            checkpoint: self.checkpoint,
            rows_compared,
            differences,
            more_differences: more,
        })
    }
}
