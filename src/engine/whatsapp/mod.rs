//! The `whatsapp` engine: an in-process WhatsApp Web client (`whatsapp-rust`) per line, run by the
//! node that holds the line's lease.
//!
//! - [`seam`]: the narrow trait the sessions talk to (a handful of client calls and an event
//!   stream); the live client implements it over `whatsapp-rust`, tests with a scripted fake.
//! - [`sessions`]: the engine: a supervisor that runs a session per line served here, and what
//!   each session does with what its client reports.
//! - [`fake`]: the scripted client the tests drive.

pub mod fake;
pub mod seam;
pub mod sessions;

use std::sync::Arc;

/// How the server's `whatsapp` lines reach WhatsApp.
pub fn live_connector() -> Arc<dyn seam::WaConnector> {
    Arc::new(Unbuilt)
}

/// Where the server's `whatsapp` sessions keep their state.
pub fn session_stores(_pool: sqlx::PgPool, _master_key: Arc<crate::secrets::MasterKey>) -> Arc<dyn sessions::SessionStores> {
    Arc::new(fake::MemoryStores::default())
}

/// Stand-in until the live client lands: every start fails, so lines wait.
struct Unbuilt;

#[async_trait::async_trait]
impl seam::WaConnector for Unbuilt {
    async fn start(&self, _line_id: &str, _store: seam::SessionStore) -> Result<seam::WaRun, seam::WaError> {
        Err(seam::WaError::Unavailable("the live WhatsApp client is not built into this server yet".into()))
    }
}
