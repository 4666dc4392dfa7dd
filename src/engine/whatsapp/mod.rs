//! The `whatsapp` engine: an in-process WhatsApp Web client (`whatsapp-rust`) per line, run by the
//! node that holds the line's lease.
//!
//! - [`seam`]: the narrow trait the sessions talk to (a handful of client calls and an event
//!   stream); the live client implements it over `whatsapp-rust`, tests with a scripted fake.
//! - [`sessions`]: the engine: a supervisor that runs a session per line served here, and what
//!   each session does with what its client reports.
//! - [`live`]: that live implementation: a `whatsapp-rust` client per run, its events and inbound
//!   messages translated onto the seam, inbound messages acknowledged to WhatsApp after our commit.
//! - [`http`]: the HTTP client the library uses (app version, media upload and download), over our
//!   `reqwest` and refusing every host but WhatsApp's.
//! - [`store`]: the session state a client keeps (Signal keys, app state, device record) in
//!   PostgreSQL, per line, fenced by the line's lease and sealed with the master key.
//! - [`fake`]: the scripted client the tests drive.

pub mod fake;
pub mod http;
pub mod live;
pub mod seam;
pub mod sessions;
pub mod store;

use std::sync::Arc;

/// How the server's `whatsapp` lines reach WhatsApp: the live client.
pub fn live_connector() -> anyhow::Result<Arc<dyn seam::WaConnector>> {
    Ok(Arc::new(live::LiveConnector::new()?))
}

/// Where the server's `whatsapp` sessions keep their state: PostgreSQL.
pub fn session_stores(pool: sqlx::PgPool, master_key: Arc<crate::secrets::MasterKey>) -> Arc<dyn sessions::SessionStores> {
    Arc::new(PgStores { pool, master_key })
}

/// Opens each session's [`store::PgSessionStore`] under its lease; forgets a line's state at logout.
struct PgStores {
    pool: sqlx::PgPool,
    master_key: Arc<crate::secrets::MasterKey>,
}

#[async_trait::async_trait]
impl sessions::SessionStores for PgStores {
    fn open(&self, lease: crate::commands::messages::LeaseGuard) -> seam::SessionStore {
        Arc::new(store::PgSessionStore::new(self.pool.clone(), lease, self.master_key.clone()))
    }

    async fn forget(&self, line_id: &domain::ids::LineId) -> anyhow::Result<()> {
        store::PgSessionStore::delete_line(&self.pool, line_id).await?;
        Ok(())
    }
}
