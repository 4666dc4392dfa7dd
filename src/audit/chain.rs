//! The per-stream hash chains, recomputed.
//!
//! The database computes each event's `prev_hash` and `hash` as it is inserted (migration 0011,
//! trigger `events_chain`): `prev_hash` is the hash of the stream's previous event (32 zero bytes
//! for its first), and `hash` is SHA-256 of `prev_hash` followed by the event's canonical encoding.
//! Here the encoding is read back with the same expression and everything is redone, one stream
//! at a time:
//!
//! - an event whose content no longer hashes to its `hash` was **altered**;
//! - an event whose `prev_hash` is no event's hash in its stream follows a **removed** one;
//! - two events claiming the same predecessor: one of them was **inserted**;
//! - an event whose place in the chain (following the links from the stream's start) differs
//!   from its place by version was **reordered**.
//!
//! Each event is judged by its own stored link, so one edited event is reported alone rather
//! than breaking everything after it.

use super::{Break, BreakKind};
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};

/// The canonical encoding of an event row: every column in a JSON array, rendered by jsonb (which
/// renders a value one way only). The same expression as `event_canonical_text` in migration 0011;
/// it is repeated here so that the check does not trust a function stored in the audited database.
pub const CANONICAL_SQL: &str = "jsonb_build_array(global_position, transaction_id::text, tenant_id, stream_type, \
     stream_id, stream_version, event_id, event_type, schema_version, payload, metadata, \
     (extract(epoch FROM recorded_at) * 1000000)::bigint)::text";

/// The hash a stream's first event chains to.
pub const GENESIS: [u8; 32] = [0; 32];

/// `hash` of an event whose canonical encoding is `canonical`, after an event hashed `previous`.
pub fn link(previous: &[u8], canonical: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(canonical.as_bytes());
    hasher.finalize().into()
}

#[derive(sqlx::FromRow)]
struct Row {
    global_position: i64,
    stream_type: String,
    stream_id: String,
    stream_version: i64,
    prev_hash: Vec<u8>,
    hash: Vec<u8>,
    canonical: String,
}

pub struct ChainReport {
    pub events: u64,
    pub streams: u64,
    pub breaks: Vec<Break>,
}

/// Recompute the chains of every stream (or of one account's), reading the log once in stream
/// order as a stream of rows and holding one stream at a time.
pub async fn verify(pool: &sqlx::PgPool, account_id: Option<&str>) -> Result<ChainReport, sqlx::Error> {
    let sql = format!(
        "SELECT global_position, stream_type, stream_id, stream_version, prev_hash, hash, {CANONICAL_SQL} AS canonical \
         FROM events WHERE ($1::text IS NULL OR tenant_id = $1) ORDER BY stream_type, stream_id, stream_version"
    );
    let mut rows = sqlx::query_as::<_, Row>(&sql).bind(account_id).fetch(pool);
    let mut report = ChainReport { events: 0, streams: 0, breaks: Vec::new() };
    let mut stream: Vec<Row> = Vec::new();
    while let Some(row) = rows.try_next().await? {
        report.events += 1;
        if stream.last().is_some_and(|last| last.stream_type != row.stream_type || last.stream_id != row.stream_id) {
            report.streams += 1;
            report.breaks.extend(check_stream(&std::mem::take(&mut stream)));
        }
        stream.push(row);
    }
    if !stream.is_empty() {
        report.streams += 1;
        report.breaks.extend(check_stream(&stream));
    }
    Ok(report)
}

/// The findings in one stream's events, given in version order.
fn check_stream(rows: &[Row]) -> Vec<Break> {
    let mut breaks = Vec::new();
    let here = |row: &Row, kind, detail: String| {
        Break::new(kind, detail).at(row.global_position).in_stream(&row.stream_type, &row.stream_id, row.stream_version)
    };
    for row in rows {
        if link(&row.prev_hash, &row.canonical).as_slice() != row.hash.as_slice() {
            breaks.push(here(row, BreakKind::Altered, "the event does not hash to its stored hash".into()));
        }
    }
    // Follow the links from the stream's start; where they stop, start again at the first event
    // not reached (the one after a removal).
    let mut by_link: std::collections::HashMap<&[u8], Vec<usize>> = std::collections::HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        by_link.entry(row.prev_hash.as_slice()).or_default().push(i);
    }
    let mut reached = vec![false; rows.len()];
    let mut in_chain = vec![false; rows.len()];
    let mut next_unreached = 0;
    let mut reached_count = 0;
    let mut chain_order: Vec<usize> = Vec::with_capacity(rows.len());
    let mut current: Option<usize> = None;
    while reached_count < rows.len() {
        let previous_hash: &[u8] = current.map_or(GENESIS.as_slice(), |i| rows[i].hash.as_slice());
        let followers: Vec<usize> =
            by_link.get(previous_hash).map_or(Vec::new(), |f| f.iter().copied().filter(|&i| !reached[i]).collect());
        let next = match followers.split_first() {
            Some((&first, extras)) => {
                // Two events claim the same predecessor: the later by version is the intruder.
                for &extra in extras {
                    reached[extra] = true;
                    reached_count += 1;
                    breaks.push(here(
                        &rows[extra],
                        BreakKind::Inserted,
                        format!("chained to the same event as version {}", rows[first].stream_version),
                    ));
                }
                first
            }
            // Nothing follows: the next event not reached follows something that is gone.
            None => {
                while reached[next_unreached] {
                    next_unreached += 1;
                }
                let i = next_unreached;
                let row = &rows[i];
                let before = i.checked_sub(1).map_or(0, |p| rows[p].stream_version);
                let missing = if before + 1 < row.stream_version {
                    format!("the event(s) from version {} to {} are missing", before + 1, row.stream_version - 1)
                } else {
                    "the event it was chained to is missing".to_owned()
                };
                let after = i.checked_sub(1).map_or(String::new(), |p| format!(" after position {}", rows[p].global_position));
                let mut gap = here(row, BreakKind::Removed, format!("{missing}{after}, before position {}", row.global_position));
                gap.version = Some(before + 1);
                breaks.push(gap);
                i
            }
        };
        reached[next] = true;
        in_chain[next] = true;
        reached_count += 1;
        chain_order.push(next);
        current = Some(next);
    }
    // The links must visit the events in version order (intruders aside).
    let by_version: Vec<usize> = (0..rows.len()).filter(|&i| in_chain[i]).collect();
    for (&linked, &versioned) in chain_order.iter().zip(&by_version) {
        if linked != versioned {
            let row = &rows[linked];
            breaks.push(here(
                row,
                BreakKind::Reordered,
                format!("its links put it where version {} stands", rows[versioned].stream_version),
            ));
        }
    }
    breaks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_depends_on_the_previous_hash_and_on_every_byte_of_the_event() {
        let first = link(&GENESIS, "[1, \"a\"]");
        assert_eq!(first, link(&GENESIS, "[1, \"a\"]"));
        assert_ne!(first, link(&GENESIS, "[1, \"b\"]"));
        assert_ne!(link(&first, "[2]"), link(&GENESIS, "[2]"));
    }
}
