//! This process's identity among the nodes that share one database.
//!
//! A node's id names it in line leases and webhook claims. Two live processes must never share
//! one: a restarted node takes back at once whatever its id holds (its earlier incarnation is dead),
//! so a live twin with the same id would take over lines and webhook deliveries mid-send. The id
//! is therefore claimed at start with a PostgreSQL advisory lock held on a connection of its own
//! for the process's whole life: the lock is released the moment that process (and so its
//! connection) dies, which tells a crashed predecessor from a live twin exactly. A process whose
//! configured id is held refuses to start. Without a configured id each process gets a unique one
//! (the host name and a random suffix).

use rand::Rng;
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The advisory-lock class of node ids (the second key is the id's hash); the other classes are
/// the projection runner's (1), the digest's (2) and the rebuild's (3).
const NODE_LOCK_CLASS: i32 = 0x5742_0004;

/// How long a starting process waits for its id's lock: enough for the connection of a process
/// that was just killed to be closed by PostgreSQL, far less than any live twin would give up.
const CLAIM_WAIT: Duration = Duration::from_secs(5);

/// How often the lock's connection is checked.
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The id this process runs under: the configured one, else the host name and a random suffix.
pub fn resolve_id(configured: &str) -> String {
    if !configured.is_empty() {
        return configured.to_owned();
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{host}-{:08x}", rand::thread_rng().gen::<u32>())
}

/// A claimed node id. Dropping it (or the process ending) releases the id.
pub struct NodeIdentity {
    id: String,
    watch: JoinHandle<()>,
}

impl NodeIdentity {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Claim `id`, or fail if a live process holds it. Once claimed, the lock's connection is
    /// watched: if it is lost and the id cannot be claimed again, `shutdown` is cancelled, since
    /// this process can no longer prove it is the only one with its id.
    pub async fn claim(pool: &PgPool, id: String, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let conn = lock(pool, &id).await.map_err(|e| match e {
            ClaimError::Taken(_) => anyhow::Error::new(e),
            ClaimError::Db(_) => anyhow::Error::new(e).context("claiming the node id"),
        })?;
        let watch = tokio::spawn(watch(pool.clone(), id.clone(), conn, shutdown));
        Ok(Self { id, watch })
    }
}

impl Drop for NodeIdentity {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

#[derive(Debug, thiserror::Error)]
enum ClaimError {
    #[error(
        "node_id `{0}` is in use by another live process on this database; every process needs its own \
         node_id (BRIDGE_NODE_ID), or leave node_id empty for a unique one"
    )]
    Taken(String),
    #[error("taking the node id's lock")]
    Db(#[from] sqlx::Error),
}

async fn lock(pool: &PgPool, id: &str) -> Result<PgConnection, ClaimError> {
    let options = (*pool.connect_options()).clone().application_name("wazion-bridge node lock");
    let mut conn = options.connect().await?;
    sqlx::query(&format!("SET lock_timeout = '{}ms'", CLAIM_WAIT.as_millis())).execute(&mut conn).await?;
    let taken = sqlx::query("SELECT pg_advisory_lock($1, hashtext($2))").bind(NODE_LOCK_CLASS).bind(id).execute(&mut conn).await;
    match taken {
        Ok(_) => {}
        // 55P03: lock_not_available, the lock timeout ran out.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => return Err(ClaimError::Taken(id.to_owned())),
        Err(e) => return Err(e.into()),
    }
    sqlx::query("SET lock_timeout = 0").execute(&mut conn).await?;
    Ok(conn)
}

/// Runs until the identity is dropped (which drops the connection, and so the lock).
async fn watch(pool: PgPool, id: String, mut conn: PgConnection, shutdown: CancellationToken) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        if shutdown.is_cancelled() || conn.ping().await.is_ok() {
            continue;
        }
        // The connection, and with it the lock, is gone: take the id again (waiting out a
        // database outage). Leases and claims are fenced by epoch and attempt, so nothing written
        // meanwhile can be wrong; but a process whose id another process took must stop.
        tracing::warn!(node = %id, "lost the node id's lock connection; claiming the id again");
        loop {
            match lock(&pool, &id).await {
                Ok(again) => {
                    conn = again;
                    break;
                }
                Err(e @ ClaimError::Taken(_)) => {
                    tracing::error!(node = %id, error = %e, "another process took this node id; shutting down");
                    shutdown.cancel();
                    return;
                }
                Err(e) => tracing::warn!(node = %id, error = %e, "claiming the node id again failed; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(CHECK_EVERY) => {}
            }
        }
    }
}
