//! Reads from a streaming replica (`read_database_url`), with read-your-writes: before a read
//! goes to the replica, the replica must have replayed the primary's WAL up to where it was when
//! the read began, which covers the tenant's last commit wherever it was made (any node). The
//! wait is bounded; a replica that is behind, paused or unreachable sends the read to the primary.
//! Writes, and the reads that decide them, always go to the primary.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::{Duration, Instant};

pub struct ReadReplica {
    pool: PgPool,
    max_wait: Duration,
}

impl ReadReplica {
    /// A pool on the replica at `url`. Connections are made when first needed, so a replica that
    /// is down at start only sends reads to the primary.
    pub fn new(url: &str, max_connections: u32, max_wait: Duration) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| anyhow::anyhow!("read_database_url is not a valid PostgreSQL URL (BRIDGE_READ_DATABASE_URL)"))?
            .application_name("wazion-bridge reads");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // A replica that does not answer quickly is not worth waiting for: the primary is.
            .acquire_timeout(max_wait.max(Duration::from_millis(100)))
            .test_before_acquire(false)
            .connect_lazy_with(options);
        Ok(Self { pool, max_wait })
    }

    /// The pool a read should use now: the replica once it has caught up with `primary` as of
    /// this call, else `primary`.
    pub async fn pool_for_read(&self, primary: &PgPool) -> PgPool {
        let served_by = match self.caught_up(primary).await {
            Ok(true) => "replica",
            Ok(false) => "primary_replica_behind",
            Err(e) => {
                tracing::debug!(error = %e, "the read replica could not be used; reading the primary");
                "primary_replica_unavailable"
            }
        };
        crate::metrics::global().replica_read(served_by);
        if served_by == "replica" {
            self.pool.clone()
        } else {
            primary.clone()
        }
    }

    /// Whether the replica replays past the primary's current WAL position within `max_wait`.
    async fn caught_up(&self, primary: &PgPool) -> Result<bool, sqlx::Error> {
        let target: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text").fetch_one(primary).await?;
        let started = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            // Not in recovery: the "replica" is a primary (promoted, or the same server), whose
            // reads are current.
            let replayed: bool =
                sqlx::query_scalar("SELECT COALESCE(pg_last_wal_replay_lsn() >= $1::pg_lsn, NOT pg_is_in_recovery())")
                    .bind(&target)
                    .fetch_one(&self.pool)
                    .await?;
            if replayed {
                return Ok(true);
            }
            if started.elapsed() + pause > self.max_wait {
                return Ok(false);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }
}
