//! Line leases: which node owns a line's session. Taking a lease (free, expired, or already ours
//! from an earlier incarnation of this node) increases its epoch, which every session write checks.
//! Taking back "our own" lease at once is safe because no two live processes share a node id
//! ([`crate::node`]). A [`Keeper`] renews a held lease for as long as its worker runs.

use crate::commands::messages::LeaseGuard;
use domain::ids::LineId;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// Keeps a held lease alive from a task of its own for as long as it lives, whatever the worker is
/// doing (a media download and an engine call may each take longer than the lease lasts). It
/// renews every third of the TTL; the lease counts as lost when a renewal finds another owner or
/// epoch, or when no renewal has succeeded for a whole TTL (another node may have taken it since).
pub struct Keeper {
    lease: LeaseGuard,
    lost: CancellationToken,
    task: JoinHandle<()>,
}

impl Keeper {
    pub fn start(pool: PgPool, lease: LeaseGuard, ttl: Duration) -> Self {
        let lost = CancellationToken::new();
        let task = tokio::spawn(heartbeat(pool, lease.clone(), ttl, lost.clone()));
        Self { lease, lost, task }
    }

    pub fn lease(&self) -> &LeaseGuard {
        &self.lease
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Resolves once the lease is lost.
    pub async fn lost(&self) {
        self.lost.cancelled().await
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn heartbeat(pool: PgPool, lease: LeaseGuard, ttl: Duration, lost: CancellationToken) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(ttl / 3).await;
        match renew(&pool, &lease, ttl).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::warn!(line_id = %lease.line_id, epoch = lease.epoch, "dispatcher: another node holds the line's lease now");
                break;
            }
            Err(e) if renewed.elapsed() >= ttl => {
                tracing::warn!(line_id = %lease.line_id, error = %e, "dispatcher: the lease could not be renewed for a whole TTL");
                break;
            }
            Err(e) => tracing::warn!(line_id = %lease.line_id, error = %e, "dispatcher: renewing the lease failed; retrying"),
        }
    }
    lost.cancel();
}
