//! Periodic housekeeping that any node may run (each statement is idempotent and cheap).

use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How many expired records one purge statement deletes: each is a short transaction of its own,
/// so a large backlog never holds locks or the read horizon for long.
const PURGE_CHUNK: i64 = 1000;

/// Delete what has outlived its purpose: Idempotency-Key records past their 24 hours (they are
/// ignored by sends anyway; this keeps the table small), [`PURGE_CHUNK`] at a time. Returns how
/// many rows went.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut purged = 0;
    loop {
        let chunk = sqlx::query(
            "DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY( \
                 SELECT ctid FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1) LIMIT $2))",
        )
        .bind(crate::commands::messages::IDEMPOTENCY_WINDOW_HOURS)
        .bind(PURGE_CHUNK)
        .execute(pool)
        .await?
        .rows_affected();
        purged += chunk;
        if chunk < PURGE_CHUNK as u64 {
            return Ok(purged);
        }
    }
}

/// Run [`purge_expired`] every `every` until `shutdown`.
pub async fn run(pool: PgPool, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match purge_expired(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency records purged"),
            Err(e) => tracing::warn!(error = %e, "purging expired idempotency records failed"),
        }
    }
}
