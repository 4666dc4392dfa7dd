//! What auditors use: tamper evidence over the event log, replay of an account's history, and the
//! state of an account at a past moment.
//!
//! - [`chain`]: every event's hash, chained to the previous event of its stream (computed by the
//!   database as rows are inserted), and the check that recomputes the chains.
//! - [`digest`]: signed digests of the stream heads, recorded periodically, and their check.
//! - [`exported_digest`]: a digest exported to be kept outside the database, and the check that
//!   the log still extends it.
//! - [`replay`]: an account's events in log order, with who acted, and no secret.
//! - [`state`]: an account's lines, keys, webhooks and usage as they were at a given time.

pub mod chain;
pub mod digest;
pub mod exported_digest;
pub mod replay;
pub mod state;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

/// One way the log differs from what was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The event's content no longer hashes to the hash it was stored with (or to the one a
    /// digest signed).
    Altered,
    /// An event is missing: a stream skips a version, or a signed head is gone.
    Removed,
    /// An event that no signed digest knows of stands inside a range a digest covers.
    Inserted,
    /// A stream's events are no longer in the order they were appended in.
    Reordered,
    /// A digest's root or signature does not check out, or a digest is missing or was replaced:
    /// the digests themselves were edited.
    Digest,
    /// The exported digest checked against is not one this master key signed with these
    /// contents: the file was edited or forged.
    NotAuthentic,
}

/// One finding of `bridge audit verify`, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Break {
    pub kind: BreakKind,
    /// The log position of the event concerned (for a removed event: the position of the event
    /// that follows the gap, if any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest_id: Option<i64>,
    pub detail: String,
}

impl Break {
    fn new(kind: BreakKind, detail: impl Into<String>) -> Self {
        Self { kind, position: None, stream: None, version: None, digest_id: None, detail: detail.into() }
    }

    fn at(mut self, position: i64) -> Self {
        self.position = Some(position);
        self
    }

    fn in_stream(mut self, stream_type: &str, stream_id: &str, version: i64) -> Self {
        self.stream = Some(format!("{stream_type}/{stream_id}"));
        self.version = Some(version);
        self
    }

    fn in_digest(mut self, digest_id: i64) -> Self {
        self.digest_id = Some(digest_id);
        self
    }
}

/// What `bridge audit verify` found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    pub events_checked: u64,
    pub streams_checked: u64,
    pub digests_checked: u64,
    /// Events newer than the latest digest: covered by their chains only until the next digest.
    pub events_after_last_digest: u64,
    /// The exported digest the log was also checked against (`--against`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against_digest: Option<i64>,
    pub breaks: Vec<Break>,
}

/// Whether the log has an account of this id (auditors may ask about closed or past accounts, so
/// the log, not the `accounts` read model, is what answers).
pub async fn account_exists(pool: &sqlx::PgPool, account_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE stream_type = 'account' AND stream_id = $1)")
        .bind(account_id)
        .fetch_one(pool)
        .await
}

/// Recompute every chain (of one account's streams, or of all) and check every digest.
pub async fn verify(pool: &sqlx::PgPool, key: &[u8; 32], account_id: Option<&str>) -> Result<VerifyReport, sqlx::Error> {
    verify_against(pool, key, account_id, None).await
}

/// [`verify`], and with `exported`, also check that the log still extends that digest.
pub async fn verify_against(
    pool: &sqlx::PgPool,
    key: &[u8; 32],
    account_id: Option<&str>,
    exported: Option<&exported_digest::ExportedDigest>,
) -> Result<VerifyReport, sqlx::Error> {
    let chains = chain::verify(pool, account_id).await?;
    let digests = digest::verify(pool, key, account_id).await?;
    let mut breaks = chains.breaks;
    breaks.extend(digests.breaks);
    if let Some(exported) = exported {
        breaks.extend(exported.check(pool, key, account_id).await?);
    }
    breaks.sort_by_key(|b| (b.position.unwrap_or(i64::MAX), b.digest_id));
    breaks.dedup();
    Ok(VerifyReport {
        ok: breaks.is_empty(),
        account_id: account_id.map(str::to_owned),
        events_checked: chains.events,
        streams_checked: chains.streams,
        digests_checked: digests.digests,
        events_after_last_digest: digests.events_after_last,
        against_digest: exported.map(|e| e.digest_id),
        breaks,
    })
}

/// An instant: RFC 3339 (`2026-11-25T10:00:00Z`), or a date (`2026-11-25`, midnight UTC).
pub fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{value}` is not a time: use RFC 3339 (2026-11-25T10:00:00Z) or a date (2026-11-25)"))
}
