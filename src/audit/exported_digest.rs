//! A signed digest exported for an auditor to keep outside the database, and the check that the
//! log still extends it.
//!
//! The digests in the database stop someone with write access from rewriting what they cover,
//! but not from deleting the newest digests and then rewriting the events those covered,
//! recomputing the hash chains: what is left still verifies. A copy of a digest kept elsewhere
//! closes that gap. `bridge audit digest --latest --json` prints the newest digest with all that
//! checking it on its own needs (the previous root and the heads it signed, which hash to its
//! root); `bridge audit verify --against FILE` then checks, besides everything plain verify does:
//!
//! - that the file is authentic: its contents hash to its root, and the root's signature verifies
//!   under this master key;
//! - that the database still holds that digest, with the same root and signature. Its root binds
//!   every digest before it (each root hashes the previous one), and plain verify checks that the
//!   digests after it chain from it and that the heads of all of them are still in the log;
//! - if the digest is gone or was replaced, that every head it signed is still in the log with
//!   the same hash, and still its stream's newest event up to the position the digest covers.

use super::digest::{self, Head};
use super::{Break, BreakKind};
use chrono::{DateTime, Utc};
use projections::LogPosition;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

/// What the file says it is, so that another JSON file is refused rather than misread.
pub const FORMAT: &str = "wazion-bridge/audit-digest/v1";

/// A digest as `bridge audit digest --latest --json` prints it. `recorded_at` is for people; it
/// is not signed. Everything else is bound by the root, and the root by the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedDigest {
    pub format: String,
    pub digest_id: i64,
    /// The log position the digest covers: every event at or before it in log order.
    pub covers: LogPosition,
    pub recorded_at: DateTime<Utc>,
    /// The root of the digest before it (32 zero bytes for the first).
    #[serde(with = "hex_bytes")]
    pub previous_root: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub root: Vec<u8>,
    /// HMAC-SHA256 of the root under the audit key derived from the master key.
    #[serde(with = "hex_bytes")]
    pub signature: Vec<u8>,
    /// The newest event of each stream that changed since the digest before, in the order the
    /// root hashes them.
    pub heads: Vec<Head>,
}

impl ExportedDigest {
    /// The newest digest recorded, or `None` if there is none yet.
    pub async fn latest(pool: &PgPool) -> Result<Option<Self>, sqlx::Error> {
        let newest: Option<NewestDigest> = sqlx::query_as(
            "SELECT d.digest_id, d.transaction_id::text::bigint AS transaction_id, d.global_position, d.created_at, \
                    d.root, d.signature, CASE WHEN d.digest_id = 1 THEN $1 ELSE p.root END AS previous_root \
             FROM log_digests d LEFT JOIN log_digests p ON p.digest_id = d.digest_id - 1 \
             ORDER BY d.digest_id DESC LIMIT 1",
        )
        .bind(digest::GENESIS_ROOT.as_slice())
        .fetch_optional(pool)
        .await?;
        let Some(d) = newest else { return Ok(None) };
        let heads = digest::stored_heads(pool, Some(d.digest_id)).await?.remove(&d.digest_id).unwrap_or_default();
        Ok(Some(Self {
            format: FORMAT.to_owned(),
            digest_id: d.digest_id,
            covers: LogPosition { transaction_id: d.transaction_id, global_position: d.global_position },
            recorded_at: d.created_at,
            // A missing predecessor leaves it empty, and the digest then fails `authenticate`.
            previous_root: d.previous_root.unwrap_or_default(),
            root: d.root,
            signature: d.signature,
            heads,
        }))
    }

    /// Read an exported digest (the text of the file).
    pub fn parse(text: &str) -> Result<Self, String> {
        let exported: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if exported.format != FORMAT {
            return Err(format!("its format is `{}`, not `{FORMAT}`", exported.format));
        }
        Ok(exported)
    }

    /// Whether the digest is one this master key signed, with exactly these contents.
    pub fn authenticate(&self, key: &[u8; 32]) -> Result<(), &'static str> {
        let root = digest::root(&self.previous_root, self.digest_id, self.covers, &self.heads);
        if root.as_slice() != self.root.as_slice() {
            return Err("its previous root, position and heads do not hash to its root (it was edited)");
        }
        if !digest::signature_matches(key, &self.root, &self.signature) {
            return Err("its signature does not match its root (edited, forged, or signed under another master key)");
        }
        Ok(())
    }

    /// What contradicts this digest in the database and the log (the heads: of one account, or
    /// all). Plain verify's findings are not repeated here.
    pub async fn check(&self, pool: &PgPool, key: &[u8; 32], account_id: Option<&str>) -> Result<Vec<Break>, sqlx::Error> {
        let id = self.digest_id;
        if let Err(why) = self.authenticate(key) {
            // Nothing in the file can be trusted, so nothing is compared with it.
            return Ok(vec![
                Break::new(BreakKind::NotAuthentic, format!("the exported digest {id} is not authentic: {why}")).in_digest(id)
            ]);
        }
        let stored: Option<(Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT root, signature FROM log_digests WHERE digest_id = $1").bind(id).fetch_optional(pool).await?;
        let finding = match stored {
            // The same digest: plain verify checks its heads and the digests chained from it.
            Some((root, signature)) if root == self.root && signature == self.signature => return Ok(Vec::new()),
            Some(_) => format!("digest {id} in the database is not the one exported: it was replaced"),
            None => {
                let last: Option<i64> = sqlx::query_scalar("SELECT max(digest_id) FROM log_digests").fetch_one(pool).await?;
                let left = last.map_or("the database has no digest left".to_owned(), |l| format!("its digests end at {l}"));
                format!("digest {id}, the one exported, is gone from the database ({left})")
            }
        };
        let mut breaks = vec![Break::new(BreakKind::Digest, finding).in_digest(id)];
        let signed: Vec<&Head> = self.heads.iter().filter(|h| account_id.is_none_or(|a| h.tenant_id == a)).collect();
        breaks.extend(self.compare_heads(pool, &signed).await?);
        Ok(breaks)
    }

    /// Each signed head must still be in the log with the same hash, and still be its stream's
    /// newest event up to the position the digest covers.
    async fn compare_heads(&self, pool: &PgPool, signed: &[&Head]) -> Result<Vec<Break>, sqlx::Error> {
        let column = |f: fn(&Head) -> String| signed.iter().map(|h| f(h)).collect::<Vec<_>>();
        // For each head in order: the signed event as the log has it now (position, hash), and
        // the first later event of its stream within the covered range (version, position).
        let now: Vec<HeadNow> = sqlx::query_as(
            "SELECT e.global_position AS position, e.hash, later.stream_version AS later_version, \
                    later.global_position AS later_position \
             FROM UNNEST($1::text[], $2::text[], $3::bigint[]) WITH ORDINALITY AS h (stream_type, stream_id, stream_version, n) \
             LEFT JOIN events e \
               ON e.stream_type = h.stream_type AND e.stream_id = h.stream_id AND e.stream_version = h.stream_version \
             LEFT JOIN LATERAL ( \
                 SELECT x.stream_version, x.global_position FROM events x \
                 WHERE x.stream_type = h.stream_type AND x.stream_id = h.stream_id AND x.stream_version > h.stream_version \
                   AND (x.transaction_id, x.global_position) <= ($4::text::xid8, $5) \
                 ORDER BY x.stream_version LIMIT 1) later ON true \
             ORDER BY h.n",
        )
        .bind(column(|h| h.stream_type.clone()))
        .bind(column(|h| h.stream_id.clone()))
        .bind(signed.iter().map(|h| h.stream_version).collect::<Vec<_>>())
        .bind(self.covers.transaction_id.to_string())
        .bind(self.covers.global_position)
        .fetch_all(pool)
        .await?;
        let mut breaks = Vec::new();
        for (head, now) in signed.iter().zip(now) {
            let (stream_type, stream_id, version) = (&head.stream_type, &head.stream_id, head.stream_version);
            let finding = match now {
                HeadNow { position: None, .. } => {
                    Break::new(BreakKind::Removed, format!("version {version} was signed by the exported digest and is gone"))
                        .in_stream(stream_type, stream_id, version)
                }
                HeadNow { position: Some(p), hash, .. } if hash.as_ref() != Some(&head.hash) => Break::new(
                    BreakKind::Altered,
                    "the event's hash differs from the one the exported digest signed: it, or an event before it in its \
                     stream, was rewritten",
                )
                .at(p)
                .in_stream(stream_type, stream_id, version),
                HeadNow { later_version: Some(later), later_position: Some(p), .. } => Break::new(
                    BreakKind::Inserted,
                    format!("an event stands after version {version}, which the exported digest signed as the stream's newest"),
                )
                .at(p)
                .in_stream(stream_type, stream_id, later),
                _ => continue,
            };
            breaks.push(finding.in_digest(self.digest_id));
        }
        Ok(breaks)
    }
}

#[derive(sqlx::FromRow)]
struct NewestDigest {
    digest_id: i64,
    transaction_id: i64,
    global_position: i64,
    created_at: DateTime<Utc>,
    root: Vec<u8>,
    signature: Vec<u8>,
    previous_root: Option<Vec<u8>>,
}

/// A signed head as the log has it now.
#[derive(sqlx::FromRow)]
struct HeadNow {
    /// The signed event (the same stream and version), if it is still there.
    position: Option<i64>,
    hash: Option<Vec<u8>>,
    /// The first later event of its stream inside the range the digest covered.
    later_version: Option<i64>,
    later_position: Option<i64>,
}

/// Bytes as lowercase hex in JSON.
pub(super) mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        hex::decode(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}
