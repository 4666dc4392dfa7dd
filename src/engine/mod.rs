//! Session engines: the seam to WhatsApp. The dispatcher hands them messages to send; they report
//! what happens on the network (inbound messages, receipts) back as commands.
//!
//! `sim` ([`sim`]) is the simulated WhatsApp network built into the server; real engines (the
//! in-process WhatsApp Web client, an external engine over HTTP) implement the same trait.

pub mod sim;
pub mod whatsapp;

use domain::ids::{LineId, MessageId};
use domain::message::Content;
use domain::phone::PhoneNumber;
use std::future::Future;
use std::pin::Pin;

/// A message the dispatcher asks an engine to send.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub message_id: MessageId,
    /// Chosen before the engine is called and recorded in the log, so a retry after a crash sends
    /// under the same id and the network can drop the duplicate.
    pub engine_message_id: String,
    pub line_id: LineId,
    pub from: PhoneNumber,
    pub to: PhoneNumber,
    pub content: Content,
    pub quoted_engine_message_id: Option<String>,
    /// The downloaded file of a media message.
    pub media: Option<std::sync::Arc<crate::media::MediaFile>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The network refused the message; sending it again will not help.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The session could not be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

pub type EngineFuture<'a> = Pin<Box<dyn Future<Output = Result<(), EngineError>> + Send + 'a>>;

pub trait SessionEngine: Send + Sync + 'static {
    /// Send one message. Sending the same `engine_message_id` twice must not deliver it twice.
    fn send<'a>(&'a self, message: &'a Outbound) -> EngineFuture<'a>;

    /// Tell the other party that these messages of the chat were read (read receipts).
    fn mark_read<'a>(&'a self, line_id: &'a LineId, chat: &'a PhoneNumber, engine_message_ids: &'a [String]) -> EngineFuture<'a>;

    /// Archive or unarchive the chat on the linked phone.
    fn archive<'a>(&'a self, line_id: &'a LineId, chat: &'a PhoneNumber, archived: bool) -> EngineFuture<'a>;

    /// Unlink the line from WhatsApp for good.
    fn logout<'a>(&'a self, line_id: &'a LineId) -> EngineFuture<'a>;

    /// The QR code a line waiting to be linked shows now.
    fn qr_code(&self, line_id: &LineId) -> QrCode;
}

/// A QR code to scan with WhatsApp (Linked devices), valid until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrCode {
    pub payload: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// A new engine message id in WhatsApp Web's style (`3EB0` and 16 hex digits).
pub fn new_engine_message_id() -> String {
    use rand::Rng;
    format!("3EB0{:016X}", rand::thread_rng().gen::<u64>())
}
