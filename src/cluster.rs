//! The nodes sharing one database, as they see each other: each node keeps its row in `nodes`
//! fresh (a heartbeat every third of the lease TTL), says when it begins to drain, and removes
//! its row when it stops cleanly. A node whose heartbeat is older than the lease TTL is dead to
//! the others (a killed node's row simply goes stale); dispatch nodes share the lines among the
//! live ones ([`crate::dispatch::ownership`]).

use crate::config::Roles;
use serde::Serialize;
use sqlx::PgPool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// This node's membership: its heartbeat runs until [`Membership::leave`] (or the process dies).
#[derive(Clone)]
pub struct Membership {
    pool: PgPool,
    id: String,
    roles: Vec<&'static str>,
    ttl: Duration,
    /// When the last heartbeat was written (`None`: none yet since the database was lost).
    last_beat: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
}

impl Membership {
    /// Write this node's row and start its heartbeat, which stops with `shutdown` (a stopping
    /// node is draining: the others no longer count on it).
    pub async fn join(
        pool: PgPool,
        id: &str,
        roles: Roles,
        ttl: Duration,
        shutdown: CancellationToken,
    ) -> Result<Self, sqlx::Error> {
        sqlx::query(
            "INSERT INTO nodes (node_id, roles, version, started_at, heartbeat_at) VALUES ($1, $2, $3, now(), now()) \
             ON CONFLICT (node_id) DO UPDATE SET roles = EXCLUDED.roles, version = EXCLUDED.version, \
                 started_at = now(), heartbeat_at = now(), draining = false",
        )
        .bind(id)
        .bind(roles.names())
        .bind(env!("CARGO_PKG_VERSION"))
        .execute(&pool)
        .await?;
        let membership = Self {
            pool,
            id: id.to_owned(),
            roles: roles.names(),
            ttl,
            last_beat: Arc::new(Mutex::new(Some(Instant::now()))),
            stop: shutdown.child_token(),
        };
        tokio::spawn(membership.clone().beat());
        Ok(membership)
    }

    async fn beat(self) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(self.ttl / 3) => {}
            }
            // A row removed meanwhile (a clean stop of an earlier incarnation racing this one)
            // is written again: a live node is always listed.
            let beat = sqlx::query(
                "INSERT INTO nodes (node_id, roles, version, started_at, heartbeat_at) \
                 VALUES ($1, $2, $3, now(), now()) \
                 ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()",
            )
            .bind(&self.id)
            .bind(&self.roles)
            .bind(env!("CARGO_PKG_VERSION"))
            .execute(&self.pool)
            .await;
            match beat {
                Ok(_) => *self.last_beat.lock().expect("heartbeat lock") = Some(Instant::now()),
                Err(e) => tracing::warn!(node = %self.id, error = %e, "cluster: the heartbeat failed; retrying"),
            }
        }
    }

    /// Whether the heartbeat has been written within the lease TTL: past that, other nodes count
    /// this one as dead and take its lines.
    pub fn fresh(&self) -> bool {
        self.last_beat.lock().expect("heartbeat lock").is_some_and(|at| at.elapsed() < self.ttl)
    }

    /// Tell the other nodes this one is stopping: they stop counting it among the live nodes, so
    /// its lines go to them as it hands each back.
    pub async fn drain(&self) {
        if let Err(e) =
            sqlx::query("UPDATE nodes SET draining = true WHERE node_id = $1").bind(&self.id).execute(&self.pool).await
        {
            tracing::warn!(node = %self.id, error = %e, "cluster: could not mark this node as draining");
        }
    }

    /// Stop the heartbeat and remove this node's row (a clean stop).
    pub async fn leave(self) {
        self.stop.cancel();
        if let Err(e) = sqlx::query("DELETE FROM nodes WHERE node_id = $1").bind(&self.id).execute(&self.pool).await {
            tracing::warn!(node = %self.id, error = %e, "cluster: could not remove this node's row; it will go stale");
        }
    }
}

/// The live dispatch nodes (fresh heartbeat, not draining), in id order.
pub async fn live_dispatchers(pool: &PgPool, ttl: Duration) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT node_id FROM nodes \
          WHERE 'dispatch' = ANY(roles) AND NOT draining AND heartbeat_at > now() - make_interval(secs => $1) \
          ORDER BY node_id",
    )
    .bind(ttl.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// One node as `bridge nodes list` shows it.
#[derive(Debug, Serialize)]
pub struct NodeRow {
    pub node_id: String,
    pub roles: Vec<String>,
    pub version: String,
    /// `live`, `draining`, or `stale` (no heartbeat for a lease TTL: dead, or cut off).
    pub status: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub heartbeat_at: chrono::DateTime<chrono::Utc>,
    pub heartbeat_age_ms: i64,
    /// Lines whose unexpired lease the node holds.
    pub lines_owned: i64,
}

/// Every node with a row, and the lines each holds (one query).
pub async fn list(pool: &PgPool, ttl: Duration) -> Result<Vec<NodeRow>, sqlx::Error> {
    type Row = (String, Vec<String>, String, bool, bool, chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT n.node_id, n.roles, n.version, n.draining, n.heartbeat_at > now() - make_interval(secs => $1), \
                n.started_at, n.heartbeat_at, (extract(epoch FROM now() - n.heartbeat_at) * 1000)::bigint, \
                (SELECT count(*) FROM line_leases l WHERE l.owner = n.node_id AND l.expires_at > now()) \
           FROM nodes n ORDER BY n.node_id",
    )
    .bind(ttl.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(node_id, roles, version, draining, fresh, started_at, heartbeat_at, heartbeat_age_ms, lines_owned)| NodeRow {
            node_id,
            roles,
            version,
            status: match (fresh, draining) {
                (false, _) => "stale",
                (true, true) => "draining",
                (true, false) => "live",
            }
            .into(),
            started_at,
            heartbeat_at,
            heartbeat_age_ms,
            lines_owned,
        })
        .collect())
}
