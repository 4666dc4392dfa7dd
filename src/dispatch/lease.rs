//! Line leases: which node owns a line's session. Taking a lease (free, expired, or already ours
//! from an earlier incarnation of this node) increases its epoch, which every session write checks.
//! Taking back "our own" lease at once is safe because no two live processes share a node id
//! ([`crate::node`]). A node's [`Renewer`] keeps the leases it holds alive, all in one statement.

use crate::commands::messages::LeaseGuard;
use domain::ids::LineId;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

/// Keeps this node's leases alive: every third of the TTL, one statement renews all the leases it
/// holds, however many lines that is (a task and a statement per line would cost ten thousand
/// lines two thousand commits a second on a 15-second TTL). Renewal goes on whatever the workers
/// are doing (a media download and an engine call may each take longer than a lease lasts). A
/// lease counts as lost when a renewal finds another owner or epoch, or when no renewal has
/// succeeded for a whole TTL (another node may have taken it since).
#[derive(Clone)]
pub struct Renewer {
    shared: Arc<Shared>,
}

struct Shared {
    ttl: Duration,
    held: Mutex<HashMap<LineId, Held>>,
}

struct Held {
    lease: LeaseGuard,
    lost: CancellationToken,
    renewed: Instant,
}

impl Renewer {
    /// Start renewing; the task ends once the renewer and every lease it keeps are dropped.
    pub fn start(pool: PgPool, ttl: Duration) -> Self {
        let shared = Arc::new(Shared { ttl, held: Mutex::new(HashMap::new()) });
        tokio::spawn(renew_all(pool, Arc::downgrade(&shared)));
        Self { shared }
    }

    /// Keep `lease` alive until the returned keeper is dropped.
    pub fn keep(&self, lease: LeaseGuard) -> Keeper {
        let lost = CancellationToken::new();
        let held = Held { lease: lease.clone(), lost: lost.clone(), renewed: Instant::now() };
        // A lease of the line at an earlier epoch is over: whoever keeps it must stop.
        if let Some(earlier) = self.shared.held.lock().expect("leases lock").insert(lease.line_id.clone(), held) {
            earlier.lost.cancel();
        }
        Keeper { lease, lost, shared: self.shared.clone() }
    }
}

/// A lease kept alive by a [`Renewer`] for as long as this lives.
pub struct Keeper {
    lease: LeaseGuard,
    lost: CancellationToken,
    shared: Arc<Shared>,
}

impl Keeper {
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

    /// Resolves once this node can no longer be sure the lease is its own: it is lost, or no
    /// renewal has succeeded for the TTL less a margin. That is before the database lets another
    /// node take it (a renewal's expiry counts from its commit, later than it was sent), whatever
    /// the renewals are doing meanwhile (a node cut off from the database waits on them forever).
    pub async fn expired(&self) {
        let margin = self.shared.ttl / 10;
        loop {
            let renewed = {
                let held = self.shared.held.lock().expect("leases lock");
                match held.get(&self.lease.line_id) {
                    Some(h) if h.lease.epoch == self.lease.epoch => h.renewed,
                    _ => return,
                }
            };
            let deadline = renewed + self.shared.ttl - margin;
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                _ = self.lost.cancelled() => return,
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        let mut held = self.shared.held.lock().expect("leases lock");
        // A later lease of the same line (taken again at a new epoch) is not this one's to drop.
        if held.get(&self.lease.line_id).is_some_and(|h| h.lease.epoch == self.lease.epoch) {
            held.remove(&self.lease.line_id);
        }
    }
}

async fn renew_all(pool: PgPool, weak: std::sync::Weak<Shared>) {
    loop {
        let Some(ttl) = weak.upgrade().map(|s| s.ttl) else { return };
        tokio::time::sleep(ttl / 3).await;
        let Some(shared) = weak.upgrade() else { return };
        let (mut lines, mut owners, mut epochs) = (Vec::new(), Vec::new(), Vec::new());
        for held in shared.held.lock().expect("leases lock").values() {
            lines.push(held.lease.line_id.to_string());
            owners.push(held.lease.owner.clone());
            epochs.push(held.lease.epoch);
        }
        if lines.is_empty() {
            continue;
        }
        // A renewal counts from when it was sent: the new expiry is at least that late.
        let sent = Instant::now();
        let renewed: Result<Vec<(String, i64)>, sqlx::Error> = sqlx::query_as(
            "UPDATE line_leases l SET expires_at = now() + make_interval(secs => $4) \
               FROM UNNEST($1::text[], $2::text[], $3::bigint[]) AS h(line_id, owner, epoch) \
              WHERE l.line_id = h.line_id AND l.owner = h.owner AND l.epoch = h.epoch \
             RETURNING l.line_id, l.epoch",
        )
        .bind(&lines)
        .bind(&owners)
        .bind(&epochs)
        .bind(ttl.as_secs_f64())
        .fetch_all(&pool)
        .await;
        let mut held = shared.held.lock().expect("leases lock");
        match renewed {
            Ok(renewed) => {
                let renewed: HashSet<(String, i64)> = renewed.into_iter().collect();
                // Leases kept since the statement was sent were not in it: they stay as they are.
                let asked: HashSet<(&str, i64)> = lines.iter().map(String::as_str).zip(epochs.iter().copied()).collect();
                held.retain(|line_id, h| {
                    let key = (line_id.to_string(), h.lease.epoch);
                    if renewed.contains(&key) {
                        h.renewed = sent;
                        true
                    } else if asked.contains(&(key.0.as_str(), key.1)) {
                        tracing::warn!(%line_id, epoch = h.lease.epoch, "dispatcher: another node holds the line's lease now");
                        h.lost.cancel();
                        false
                    } else {
                        true
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, leases = lines.len(), "dispatcher: renewing the leases failed; retrying");
                held.retain(|line_id, h| {
                    if h.renewed.elapsed() < ttl {
                        return true;
                    }
                    tracing::warn!(%line_id, "dispatcher: the lease could not be renewed for a whole TTL");
                    h.lost.cancel();
                    false
                });
            }
        }
    }
}
