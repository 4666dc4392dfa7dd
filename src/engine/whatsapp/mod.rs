//! The `whatsapp` engine: an in-process WhatsApp Web client (`whatsapp-rust`) per line, run by the
//! node that holds the line's lease.
//!
//! - [`seam`]: the narrow trait the sessions talk to (a handful of client calls and an event
//!   stream); the live client implements it over `whatsapp-rust`, tests with a scripted fake.
//! - [`live`]: that live implementation: a `whatsapp-rust` client per run, its events and inbound
//!   messages translated onto the seam, inbound messages acknowledged to WhatsApp after our commit.
//! - [`http`]: the HTTP client the library uses (app version, media upload and download), over our
//!   `reqwest` and refusing every host but WhatsApp's.

pub mod http;
pub mod live;
pub mod seam;
