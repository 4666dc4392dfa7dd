//! Line leases: which node owns a line's session. Taking a lease (free, expired, or already ours
//! from an earlier incarnation of this node) increases its epoch, which every session write checks.

use crate::commands::messages::LeaseGuard;
use domain::ids::LineId;
use sqlx::PgPool;
use std::time::Duration;

/// Take the line's lease if it is free, expired, or this node's. `None`: another node holds it.
pub async fn acquire(pool: &PgPool, line_id: &LineId, owner: &str, ttl: Duration) -> Result<Option<LeaseGuard>, sqlx::Error> {
    let epoch: Option<i64> = sqlx::query_scalar(
        "INSERT INTO line_leases (line_id, owner, epoch, expires_at) VALUES ($1, $2, 1, now() + make_interval(secs => $3)) \
         ON CONFLICT (line_id) DO UPDATE SET owner = EXCLUDED.owner, epoch = line_leases.epoch + 1, expires_at = EXCLUDED.expires_at \
             WHERE line_leases.expires_at < now() OR line_leases.owner = EXCLUDED.owner \
         RETURNING epoch",
    )
    .bind(line_id.as_str())
    .bind(owner)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    Ok(epoch.map(|epoch| LeaseGuard { line_id: line_id.clone(), owner: owner.to_owned(), epoch }))
}

/// Extend the lease; `false` if it is no longer ours.
pub async fn renew(pool: &PgPool, lease: &LeaseGuard, ttl: Duration) -> Result<bool, sqlx::Error> {
    let renewed = sqlx::query(
        "UPDATE line_leases SET expires_at = now() + make_interval(secs => $4) WHERE line_id = $1 AND owner = $2 AND epoch = $3",
    )
    .bind(lease.line_id.as_str())
    .bind(&lease.owner)
    .bind(lease.epoch)
    .bind(ttl.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(renewed.rows_affected() == 1)
}

/// Give the lease up so another node may take the line at once.
pub async fn release(pool: &PgPool, lease: &LeaseGuard) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE line_leases SET expires_at = now() - interval '1 second' WHERE line_id = $1 AND owner = $2 AND epoch = $3",
    )
    .bind(lease.line_id.as_str())
    .bind(&lease.owner)
    .bind(lease.epoch)
    .execute(pool)
    .await?;
    Ok(())
}
