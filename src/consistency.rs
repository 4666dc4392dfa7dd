//! Read-your-writes for the asynchronous read models: before answering a read, wait (briefly and
//! boundedly) until the projections it reads have applied the tenant's newest event.

use domain::ids::AccountId;
use sqlx::PgPool;
use std::time::Duration;

/// Whether every named projection has applied the tenant's newest event, in one query.
async fn caught_up(pool: &PgPool, account_id: &AccountId, projections: &[&str]) -> Result<bool, sqlx::Error> {
    let names: Vec<String> = projections.iter().map(|p| p.to_string()).collect();
    let done: Option<bool> = sqlx::query_scalar(
        "WITH head AS ( \
             SELECT transaction_id, global_position FROM events WHERE tenant_id = $1 \
             ORDER BY transaction_id DESC, global_position DESC LIMIT 1) \
         SELECT bool_and(COALESCE((c.transaction_id, c.global_position) >= (h.transaction_id, h.global_position), false)) \
           FROM head h CROSS JOIN unnest($2::text[]) AS n(name) \
           LEFT JOIN projection_checkpoints c ON c.name = n.name",
    )
    .bind(account_id.as_str())
    .bind(&names)
    .fetch_one(pool)
    .await?;
    // No events at all: nothing to wait for.
    Ok(done.unwrap_or(true))
}

/// Wait up to `limit` for the projections to reach the tenant's newest event. Returns whether they
/// did; on `false` the caller answers from what is there (stale by at most the projection's lag).
pub async fn await_own_writes(
    pool: &PgPool,
    account_id: &AccountId,
    projections: &[&str],
    limit: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(2);
    loop {
        if caught_up(pool, account_id, projections).await? {
            return Ok(true);
        }
        if tokio::time::Instant::now() + pause > deadline {
            tracing::warn!(account_id = %account_id, ?projections, "read models lag behind the tenant's writes; answering anyway");
            return Ok(false);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
