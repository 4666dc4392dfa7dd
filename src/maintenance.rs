//! Periodic housekeeping that any node may run (each statement is idempotent and cheap).

use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Delete what has outlived its purpose: Idempotency-Key records past their 24 hours (they are
/// ignored by sends anyway; this keeps the table small). Returns how many rows went.
pub async fn purge_expired(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let purged = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(hours => $1)")
        .bind(crate::commands::messages::IDEMPOTENCY_WINDOW_HOURS)
        .execute(pool)
        .await?;
    Ok(purged.rows_affected())
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
