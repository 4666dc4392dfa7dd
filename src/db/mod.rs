//! Finding and opening the database.
//!
//! With `database_url` configured, that is used. Otherwise the server (and the test suite) use the
//! PostgreSQL at 127.0.0.1:5432 if one answers there, and failing that an embedded cluster of the
//! installed PostgreSQL binaries under the data directory ([`embedded`]).

pub mod embedded;

use crate::config::Config;
use anyhow::{anyhow, Context};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use std::str::FromStr;
use std::time::Duration;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The name of the database the server uses on a PostgreSQL it found by itself.
pub const DEFAULT_DATABASE: &str = "bridge";

/// An open database, and the embedded cluster behind it if there is one (stopped when dropped).
pub struct Database {
    pub pool: PgPool,
    pub options: PgConnectOptions,
    _embedded: Option<embedded::EmbeddedPostgres>,
}

/// Where PostgreSQL was found, before any database in it is chosen.
pub struct Server {
    /// Options for the `postgres` maintenance database of that server.
    pub admin: PgConnectOptions,
    pub embedded: Option<embedded::EmbeddedPostgres>,
}

/// Find a PostgreSQL server when none is configured: the local one on 5432, else embedded.
pub async fn locate_server(config: &Config) -> anyhow::Result<Server> {
    let local = PgConnectOptions::new().host("127.0.0.1").port(5432).username("postgres").database("postgres");
    let answers = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect("127.0.0.1:5432")).await;
    if matches!(answers, Ok(Ok(_))) {
        return Ok(Server { admin: local, embedded: None });
    }
    tracing::info!("no PostgreSQL answers at 127.0.0.1:5432; starting an embedded cluster");
    let embedded = tokio::task::spawn_blocking({
        let dir = config.data_dir.join("postgres");
        move || embedded::EmbeddedPostgres::start(&dir)
    })
    .await??;
    Ok(Server { admin: embedded.connect_options().database("postgres"), embedded: Some(embedded) })
}

/// Create `name` on the server if it does not exist yet.
pub async fn ensure_database(admin: &PgConnectOptions, name: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(admin).await.context("connecting to the maintenance database `postgres`")?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        let result = sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(&mut conn).await;
        match result {
            Ok(_) => tracing::info!(database = name, "created database"),
            // Someone else created it at the same moment.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context(format!("creating database {name}")),
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// Open the configured database, or find one (see the module docs).
pub async fn open(config: &Config) -> anyhow::Result<Database> {
    let (options, embedded) = match &config.database_url {
        Some(url) => {
            let options = PgConnectOptions::from_str(url.expose())
                .map_err(|e| anyhow!("database_url is not a valid PostgreSQL URL: {}", redact_url_error(e)))?;
            (options, None)
        }
        None => {
            let server = locate_server(config).await?;
            ensure_database(&server.admin, DEFAULT_DATABASE).await.map_err(|e| not_reachable(e, &config.data_dir))?;
            (server.admin.clone().database(DEFAULT_DATABASE), server.embedded)
        }
    };
    let pool = PgPoolOptions::new()
        .max_connections(config.database.max_connections)
        .acquire_timeout(Duration::from_millis(config.database.acquire_timeout_ms))
        // No ping before each use (a round trip on every request): a connection that broke is
        // found by the statement that uses it, which fails, and sqlx drops it from the pool.
        .test_before_acquire(false)
        .connect_with(options.clone())
        .await
        .map_err(|e| anyhow!("cannot connect to PostgreSQL: {e}"))?;
    Ok(Database { pool, options, _embedded: embedded })
}

fn redact_url_error(e: sqlx::Error) -> String {
    // sqlx's URL errors describe the problem without echoing the password; keep only the kind.
    match e {
        sqlx::Error::Configuration(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

fn not_reachable(e: anyhow::Error, data_dir: &std::path::Path) -> anyhow::Error {
    anyhow!(
        "{e:#}\n\nWAzion Bridge needs PostgreSQL 13 or newer. Either set DATABASE_URL, run one on 127.0.0.1:5432 \
         (user `postgres`, trust authentication), or install the server binaries (Debian/Ubuntu: \
         `apt-get install postgresql`) so an embedded cluster can be created under {}.",
        data_dir.display()
    )
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("running database migrations")?;
    Ok(())
}

/// Whether `e` says the database cannot be reached (down, restarting, refusing connections, or
/// the pool waited in vain), as opposed to a statement that failed: the same request can work
/// once it is back.
pub fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => true,
        // Class 08: connection exceptions; 57P01-57P03: shut down by the administrator, crash
        // shutdown, cannot connect now (starting up or shutting down).
        sqlx::Error::Database(e) => {
            e.code().is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03"))
        }
        _ => false,
    }
}
