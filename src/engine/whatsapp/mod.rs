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
//! - [`fake`]: the scripted client the tests drive.

pub mod fake;
pub mod http;
pub mod live;
pub mod seam;
pub mod sessions;

use std::sync::Arc;

/// How the server's `whatsapp` lines reach WhatsApp: the live client.
pub fn live_connector() -> anyhow::Result<Arc<dyn seam::WaConnector>> {
    Ok(Arc::new(live::LiveConnector::new()?))
}

/// Where the server's `whatsapp` sessions keep their state.
pub fn session_stores(_pool: sqlx::PgPool, _master_key: Arc<crate::secrets::MasterKey>) -> Arc<dyn sessions::SessionStores> {
    Arc::new(fake::MemoryStores::default())
}
