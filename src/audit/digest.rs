//! Signed digests of the stream heads.
//!
//! A hash chain alone does not stop someone with write access to the database from rewriting a
//! whole chain, or from deleting the newest events of a stream (what is left still chains). So
//! every few minutes the server records a digest: the log position it covers (always below the
//! oldest running transaction, so nothing can later commit inside it), the newest event (version
//! and hash) of each stream that changed since the previous digest, a root that chains the digests
//! (SHA-256 of the previous root and this digest's contents), and an HMAC of the root with a key
//! derived from the master key, which the database does not hold.
//!
//! Verifying a digest means checking its root and signature, then recomputing its heads from the
//! log as it is now: a head that is gone was removed, one that hashes differently was altered, and
//! a head the digest does not list was inserted into a range it had already signed.

use super::{Break, BreakKind};
use hmac::{Hmac, Mac};
use projections::LogPosition;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Advisory lock taken while a digest is recorded, so nodes take turns.
const DIGEST_LOCK: (i32, i32) = (0x5742_0002, 1);

/// The root the first digest chains to.
pub const GENESIS_ROOT: [u8; 32] = [0; 32];

/// The newest event of one stream within a digest's range.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    pub stream_type: String,
    pub stream_id: String,
    pub tenant_id: String,
    pub stream_version: i64,
    #[serde(with = "super::exported_digest::hex_bytes")]
    pub hash: Vec<u8>,
    /// Where the event stands in the log (read from the log; digests do not store it).
    #[sqlx(default)]
    #[serde(skip)]
    pub global_position: Option<i64>,
}

/// A recorded digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub digest_id: i64,
    pub covers: LogPosition,
    pub heads_changed: usize,
}

/// The root of a digest: the previous root, where it ends, and its heads in (type, id) order.
pub fn root(previous: &[u8], digest_id: i64, covers: LogPosition, heads: &[Head]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(digest_id.to_be_bytes());
    h.update(covers.transaction_id.to_be_bytes());
    h.update(covers.global_position.to_be_bytes());
    for head in heads {
        for part in [&head.stream_type, &head.stream_id, &head.tenant_id] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        h.update(head.stream_version.to_be_bytes());
        h.update((head.hash.len() as u64).to_be_bytes());
        h.update(&head.hash);
    }
    h.finalize().into()
}

pub fn sign(key: &[u8; 32], root: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(root);
    mac.finalize().into_bytes().to_vec()
}

pub(super) fn signature_matches(key: &[u8; 32], root: &[u8], signature: &[u8]) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(root);
    mac.verify_slice(signature).is_ok()
}

/// The heads of the streams that changed after `after` up to and including `upto`, in (type, id)
/// order; with `account_id`, only that account's.
async fn heads_between(
    conn: &mut PgConnection,
    after: LogPosition,
    upto: LogPosition,
    account_id: Option<&str>,
) -> Result<Vec<Head>, sqlx::Error> {
    sqlx::query_as(
        "SELECT DISTINCT ON (stream_type, stream_id) stream_type, stream_id, tenant_id, stream_version, hash, global_position FROM events \
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
           AND (transaction_id, global_position) <= ($3::text::xid8, $4) \
           AND ($5::text IS NULL OR tenant_id = $5) \
         ORDER BY stream_type, stream_id, stream_version DESC",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(upto.transaction_id.to_string())
    .bind(upto.global_position)
    .bind(account_id)
    .fetch_all(conn)
    .await
}

/// Record a digest of everything committed since the last one. `None` when the log has not moved.
pub async fn record(pool: &PgPool, key: &[u8; 32]) -> Result<Option<Recorded>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)").bind(DIGEST_LOCK.0).bind(DIGEST_LOCK.1).execute(&mut *tx).await?;
    let last: Option<(i64, i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT digest_id, transaction_id::text::bigint, global_position, root FROM log_digests ORDER BY digest_id DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (last_id, after, previous_root) = match last {
        Some((id, transaction_id, global_position, root)) => (id, LogPosition { transaction_id, global_position }, root),
        None => (0, LogPosition::START, GENESIS_ROOT.to_vec()),
    };
    // The newest event no running transaction can precede.
    let upto: Option<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id::text::bigint, global_position FROM events \
         WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY events.transaction_id DESC, events.global_position DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(upto) = upto.map(|(transaction_id, global_position)| LogPosition { transaction_id, global_position }) else {
        tx.rollback().await?;
        return Ok(None);
    };
    if upto <= after {
        tx.rollback().await?;
        return Ok(None);
    }
    let heads = heads_between(&mut tx, after, upto, None).await?;
    let digest_id = last_id + 1;
    let root = root(&previous_root, digest_id, upto, &heads);
    sqlx::query(
        "INSERT INTO log_digests (digest_id, transaction_id, global_position, heads_changed, root, signature) \
         VALUES ($1, $2::text::xid8, $3, $4, $5, $6)",
    )
    .bind(digest_id)
    .bind(upto.transaction_id.to_string())
    .bind(upto.global_position)
    .bind(heads.len() as i32)
    .bind(root.as_slice())
    .bind(sign(key, &root))
    .execute(&mut *tx)
    .await?;
    let column = |f: fn(&Head) -> String| heads.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO log_digest_heads (digest_id, stream_type, stream_id, tenant_id, stream_version, hash) \
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bytea[])",
    )
    .bind(digest_id)
    .bind(column(|h| h.stream_type.clone()))
    .bind(column(|h| h.stream_id.clone()))
    .bind(column(|h| h.tenant_id.clone()))
    .bind(heads.iter().map(|h| h.stream_version).collect::<Vec<_>>())
    .bind(heads.iter().map(|h| h.hash.clone()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(Recorded { digest_id, covers: upto, heads_changed: heads.len() }))
}

/// Record a digest every `interval` until `shutdown` (and a last one then).
pub async fn run(pool: PgPool, key: [u8; 32], interval: Duration, shutdown: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = tokio::time::sleep(interval) => false,
        };
        match record(&pool, &key).await {
            Ok(Some(d)) => tracing::debug!(digest_id = d.digest_id, heads = d.heads_changed, "recorded an audit digest"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = ?e, "recording an audit digest failed; trying again at the next interval"),
        }
        if stopping {
            break;
        }
    }
}

pub struct DigestReport {
    pub digests: u64,
    pub events_after_last: u64,
    pub breaks: Vec<Break>,
}

type DigestRow = (i64, i64, i64, Vec<u8>, Vec<u8>);

/// Check every digest's root and signature, then its heads (one account's, or all) against the
/// log as it is now.
pub async fn verify(pool: &PgPool, key: &[u8; 32], account_id: Option<&str>) -> Result<DigestReport, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let digests: Vec<DigestRow> = sqlx::query_as(
        "SELECT digest_id, transaction_id::text::bigint, global_position, root, signature FROM log_digests ORDER BY digest_id",
    )
    .fetch_all(&mut *conn)
    .await?;
    // Every digest's heads, for the roots (which cover all accounts).
    let mut stored = stored_heads(&mut *conn, None).await?;

    let mut breaks = Vec::new();
    let mut previous_root = GENESIS_ROOT.to_vec();
    let mut after = LogPosition::START;
    for (index, (digest_id, transaction_id, global_position, stored_root, signature)) in digests.iter().enumerate() {
        let covers = LogPosition { transaction_id: *transaction_id, global_position: *global_position };
        let heads = stored.remove(digest_id).unwrap_or_default();
        let expected_id = index as i64 + 1;
        if *digest_id != expected_id {
            breaks.push(Break::new(BreakKind::Digest, format!("digest {expected_id} is missing")).in_digest(*digest_id));
        }
        if root(&previous_root, *digest_id, covers, &heads).as_slice() != stored_root.as_slice() {
            breaks.push(
                Break::new(BreakKind::Digest, "the digest's root does not match its contents and the previous root")
                    .in_digest(*digest_id),
            );
        }
        if !signature_matches(key, stored_root, signature) {
            breaks.push(
                Break::new(
                    BreakKind::Digest,
                    "the digest's signature does not match (edited, or signed with another master key)",
                )
                .in_digest(*digest_id),
            );
        }
        let signed: Vec<&Head> = heads.iter().filter(|h| account_id.is_none_or(|a| h.tenant_id == a)).collect();
        let now = heads_between(&mut conn, after, covers, account_id).await?;
        breaks.extend(compare_heads(*digest_id, &signed, &now, &mut conn).await?);
        previous_root = stored_root.clone();
        after = covers;
    }
    let events_after_last: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
           AND ($3::text IS NULL OR tenant_id = $3)",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.global_position)
    .bind(account_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(DigestReport { digests: digests.len() as u64, events_after_last: events_after_last as u64, breaks })
}

/// The heads stored with each digest (or with one), in the order its root hashes them.
pub(super) async fn stored_heads(
    executor: impl sqlx::PgExecutor<'_>,
    digest_id: Option<i64>,
) -> Result<BTreeMap<i64, Vec<Head>>, sqlx::Error> {
    let rows: Vec<(i64, String, String, String, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT digest_id, stream_type, stream_id, tenant_id, stream_version, hash FROM log_digest_heads \
         WHERE $1::bigint IS NULL OR digest_id = $1 ORDER BY digest_id, stream_type, stream_id",
    )
    .bind(digest_id)
    .fetch_all(executor)
    .await?;
    let mut stored: BTreeMap<i64, Vec<Head>> = BTreeMap::new();
    for (digest_id, stream_type, stream_id, tenant_id, stream_version, hash) in rows {
        stored.entry(digest_id).or_default().push(Head {
            stream_type,
            stream_id,
            tenant_id,
            stream_version,
            hash,
            global_position: None,
        });
    }
    Ok(stored)
}

/// The differences between the heads a digest signed and the heads the log has now in its range.
async fn compare_heads(
    digest_id: i64,
    signed: &[&Head],
    now: &[Head],
    conn: &mut PgConnection,
) -> Result<Vec<Break>, sqlx::Error> {
    let key = |h: &Head| (h.stream_type.clone(), h.stream_id.clone());
    let now_by_stream: BTreeMap<_, &Head> = now.iter().map(|h| (key(h), h)).collect();
    let signed_streams: std::collections::BTreeSet<_> = signed.iter().map(|h| key(h)).collect();
    let inserted = |head: &Head| {
        let mut finding = Break::new(BreakKind::Inserted, "an event stands in a range the digest signed, which did not list it")
            .in_stream(&head.stream_type, &head.stream_id, head.stream_version)
            .in_digest(digest_id);
        finding.position = head.global_position;
        finding
    };
    let mut breaks = Vec::new();
    for head in signed {
        let found = now_by_stream.get(&key(head));
        if found.is_some_and(|n| n.stream_version == head.stream_version && n.hash == head.hash) {
            continue;
        }
        // The signed event as the log has it now, wherever it stands.
        let signed_event: Option<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT global_position, hash FROM events WHERE stream_type = $1 AND stream_id = $2 AND stream_version = $3",
        )
        .bind(&head.stream_type)
        .bind(&head.stream_id)
        .bind(head.stream_version)
        .fetch_optional(&mut *conn)
        .await?;
        let finding = match (signed_event, found) {
            (None, _) => Break::new(
                BreakKind::Removed,
                format!("version {} was signed as the stream's newest event and is gone", head.stream_version),
            ),
            (Some((p, hash)), _) if hash != head.hash => {
                Break::new(BreakKind::Altered, "the event's hash differs from the one the digest signed").at(p)
            }
            (Some(_), Some(newer)) if newer.stream_version > head.stream_version => {
                breaks.push(inserted(newer));
                continue;
            }
            (Some((p, _)), _) => {
                Break::new(BreakKind::Reordered, "the signed event no longer stands in the range the digest covered").at(p)
            }
        };
        breaks.push(finding.in_stream(&head.stream_type, &head.stream_id, head.stream_version).in_digest(digest_id));
    }
    for (stream, head) in &now_by_stream {
        if !signed_streams.contains(stream) {
            breaks.push(inserted(head));
        }
    }
    Ok(breaks)
}
