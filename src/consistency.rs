//! Read-your-writes for the asynchronous read models: before answering a read, wait (briefly and
//! boundedly) until the projections it reads have applied the tenant's newest event.

use domain::ids::AccountId;
use projections::LogPosition;
use sqlx::PgPool;
use std::time::Duration;

/// The tenant's newest event, and whether every named projection has applied it, in one query.
async fn newest_and_reached(
    pool: &PgPool,
    account_id: &AccountId,
    projections: &[String],
) -> Result<Option<(LogPosition, bool)>, sqlx::Error> {
    let row: Option<(i64, i64, Option<bool>)> = sqlx::query_as(
        "WITH head AS ( \
             SELECT transaction_id, global_position FROM events WHERE tenant_id = $1 \
             ORDER BY transaction_id DESC, global_position DESC LIMIT 1) \
         SELECT h.transaction_id::text::bigint, h.global_position, \
                bool_and(COALESCE((c.transaction_id, c.global_position) >= (h.transaction_id, h.global_position), false)) \
           FROM head h CROSS JOIN unnest($2::text[]) AS n(name) \
           LEFT JOIN projection_checkpoints c ON c.name = n.name \
          GROUP BY h.transaction_id, h.global_position",
    )
    .bind(account_id.as_str())
    .bind(projections)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(transaction_id, global_position, reached)| {
        (LogPosition { transaction_id, global_position }, reached.unwrap_or(true))
    }))
}

/// Whether every named projection has applied the log up to `position`.
async fn reached(pool: &PgPool, projections: &[String], position: LogPosition) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT bool_and(COALESCE((c.transaction_id, c.global_position) >= ($2::text::xid8, $3), false)) \
           FROM unnest($1::text[]) AS n(name) LEFT JOIN projection_checkpoints c ON c.name = n.name",
    )
    .bind(projections)
    .bind(position.transaction_id.to_string())
    .bind(position.global_position)
    .fetch_one(pool)
    .await
    .map(|r: Option<bool>| r.unwrap_or(true))
}

/// Wait up to `limit` for the projections to reach the tenant's newest event as of the call (not
/// the ones written while it waits: under a steady stream of writes that would be a moving
/// target). Returns whether they did; on `false` the caller answers from what is there (stale by
/// at most the projection's lag).
pub async fn await_own_writes(
    pool: &PgPool,
    account_id: &AccountId,
    projections: &[&str],
    limit: Duration,
) -> Result<bool, sqlx::Error> {
    let names: Vec<String> = projections.iter().map(|p| p.to_string()).collect();
    // No events at all: nothing to wait for.
    let Some((newest, done)) = newest_and_reached(pool, account_id, &names).await? else { return Ok(true) };
    if done {
        return Ok(true);
    }
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    loop {
        if tokio::time::Instant::now() + pause > deadline {
            tracing::warn!(account_id = %account_id, ?projections, "read models lag behind the tenant's writes; answering anyway");
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
        if reached(pool, &names, newest).await? {
            return Ok(true);
        }
    }
}
