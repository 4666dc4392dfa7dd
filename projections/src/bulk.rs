//! Bulk loading for rebuilds: a projection that can fold events in memory gives its final rows,
//! which are written into bare copies of its tables with one binary `COPY` per table, before the
//! tables get their keys and indexes. A rebuild then goes on from there event by event, as the
//! live runner would (see [`crate::rebuild`]).
//!
//! The in-memory fold must give exactly the rows the projection's own SQL gives; `projections
//! verify`, which replays with that SQL, is what checks a rebuilt table.

use crate::log::{read_between, LogPosition};
use crate::{Projection, ProjectionError, StoredEvent};
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use std::time::Instant;

/// A projection's fold in memory.
pub trait BulkFold: Send {
    /// Fold one event (events come in log order). The fold may take the payload out.
    fn fold(&mut self, event: &mut StoredEvent) -> Result<(), ProjectionError>;

    /// The rows folded so far, per table: the table, its columns, and the rows in `COPY`'s binary
    /// format (see [`CopyRows`]).
    fn rows(&self) -> Vec<(&'static str, &'static [&'static str], CopyRows)>;
}

/// Rows in PostgreSQL's binary `COPY` format.
pub struct CopyRows {
    buf: Vec<u8>,
    columns: i16,
    pub count: u64,
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

impl CopyRows {
    pub fn new(columns: usize) -> Self {
        let mut buf = Vec::with_capacity(1 << 16);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0_i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0_i32.to_be_bytes()); // header extension
        Self { buf, columns: columns as i16, count: 0 }
    }

    /// Start a row; its fields follow, one per column, in the table's column order.
    pub fn row(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&self.columns.to_be_bytes());
        self.count += 1;
        self
    }

    fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self
    }

    pub fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&(-1_i32).to_be_bytes());
        self
    }

    pub fn text(&mut self, value: &str) -> &mut Self {
        self.field(value.as_bytes())
    }

    pub fn opt_text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    pub fn bigint(&mut self, value: i64) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    pub fn integer(&mut self, value: i32) -> &mut Self {
        self.field(&value.to_be_bytes())
    }

    pub fn boolean(&mut self, value: bool) -> &mut Self {
        self.field(&[u8::from(value)])
    }

    pub fn timestamptz(&mut self, value: DateTime<Utc>) -> &mut Self {
        self.field(&(value.timestamp_micros() - POSTGRES_EPOCH_MICROS).to_be_bytes())
    }

    pub fn opt_timestamptz(&mut self, value: Option<DateTime<Utc>>) -> &mut Self {
        match value {
            Some(v) => self.timestamptz(v),
            None => self.null(),
        }
    }

    /// `jsonb`: a version byte, then the JSON text.
    pub fn jsonb(&mut self, value: &serde_json::Value) -> &mut Self {
        let mut bytes = vec![1_u8];
        serde_json::to_writer(&mut bytes, value).expect("JSON serializes");
        self.field(&bytes)
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1_i16).to_be_bytes());
        self.buf
    }
}

/// Events read per query while folding.
const READ_CHUNK: i64 = 20_000;

/// Fold the log after `from` (up to `upto`, or the horizon) in memory and `COPY` the rows into
/// the tables `conn` writes to (bare: no keys or indexes yet, so the load does not maintain them).
/// Nothing is written before the whole fold is done. The log is read on another connection of
/// `pool`, a chunk ahead of the fold, so PostgreSQL reads while the process folds. Returns the
/// position folded up to and the number of events.
pub async fn load(
    pool: &PgPool,
    conn: &mut PgConnection,
    projection: &dyn Projection,
    from: LogPosition,
    upto: Option<LogPosition>,
) -> Result<Option<(LogPosition, u64)>, ProjectionError> {
    let Some(mut fold) = projection.bulk() else { return Ok(None) };
    let started = Instant::now();
    let (chunks, mut folding) = tokio::sync::mpsc::channel(2);
    let (pool, stream_types) = (pool.clone(), projection.stream_types());
    let reader = tokio::spawn(async move {
        let mut reader = pool.acquire().await?;
        let mut at = from;
        loop {
            let chunk = read_between(&mut *reader, at, upto, READ_CHUNK, stream_types).await?;
            let last = chunk.last().map(StoredEvent::position);
            let done = (chunk.len() as i64) < READ_CHUNK;
            if chunks.send(chunk).await.is_err() || done {
                return Ok::<_, sqlx::Error>(());
            }
            at = last.expect("a full chunk has a last event");
        }
    });
    let (mut at, mut events) = (from, 0u64);
    while let Some(mut chunk) = folding.recv().await {
        if let Some(last) = chunk.last() {
            at = last.position();
        }
        events += chunk.len() as u64;
        for event in &mut chunk {
            fold.fold(event)?;
        }
    }
    reader.await.map_err(|e| ProjectionError::Inconsistent(format!("the log reader stopped: {e}")))??;
    let folded = started.elapsed();
    for (table, columns, rows) in fold.rows() {
        if rows.count == 0 {
            continue;
        }
        let statement = format!("COPY {table} ({}) FROM STDIN (FORMAT binary)", columns.join(", "));
        let mut copy = conn.copy_in_raw(&statement).await?;
        for chunk in rows.finish().chunks(1 << 20) {
            copy.send(chunk).await?;
        }
        copy.finish().await?;
    }
    tracing::info!(
        projection = projection.name(),
        events,
        folded_secs = folded.as_secs_f64(),
        copied_secs = (started.elapsed() - folded).as_secs_f64(),
        "bulk load"
    );
    Ok(Some((at, events)))
}
