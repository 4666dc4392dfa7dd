//! Session engines: the seam to WhatsApp. The dispatcher hands them messages to send; they report
//! what happens on the network (inbound messages, receipts) back as commands.
//!
//! `sim` ([`sim`]) is the simulated WhatsApp network built into the server; `whatsapp`
//! ([`whatsapp`]) the in-process WhatsApp Web client for real numbers. [`Engines`] routes each call
//! to the engine of the line it is for.

pub mod sim;
pub mod whatsapp;

use crate::dispatch::lease::Keeper;
use domain::chat_id::ChatId;
use domain::ids::{LineId, MessageId};
use domain::line::EngineKind;
use domain::message::Content;
use domain::phone::PhoneNumber;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A message the dispatcher asks an engine to send.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub message_id: MessageId,
    /// Chosen before the engine is called and recorded in the log, so a retry after a crash sends
    /// under the same id and the network can drop the duplicate.
    pub engine_message_id: String,
    pub line_id: LineId,
    pub engine: EngineKind,
    pub from: PhoneNumber,
    /// A phone, or a group's jid.
    pub to: ChatId,
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

pub type EngineFuture<'a, T = ()> = Pin<Box<dyn Future<Output = Result<T, EngineError>> + Send + 'a>>;

/// A line as the engines know it: its id and which engine drives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineLine {
    pub id: LineId,
    pub engine: EngineKind,
}

/// Who holds the lease of a line's session, as the dispatcher needs to know before it serves the
/// line's queue.
pub enum SessionLease {
    /// The engine keeps no session (the sim): the dispatcher takes the line's lease itself.
    NotKept,
    /// This node runs the line's session under this lease: the dispatcher sends under it too.
    Held(Arc<Keeper>),
    /// The session runs on another node (or not at all yet): its queue is served there.
    Elsewhere,
}

pub trait SessionEngine: Send + Sync + 'static {
    /// Send one message. Sending the same `engine_message_id` twice must not deliver it twice.
    /// `Unavailable` means the line's session is down: the message waits and is sent again later.
    fn send<'a>(&'a self, message: &'a Outbound) -> EngineFuture<'a>;

    /// Tell the other party that these messages of the chat were read (read receipts).
    fn mark_read<'a>(&'a self, line: &'a EngineLine, chat: &'a ChatId, engine_message_ids: &'a [String]) -> EngineFuture<'a>;

    /// Archive or unarchive the chat on the linked phone.
    fn archive<'a>(&'a self, line: &'a EngineLine, chat: &'a ChatId, archived: bool) -> EngineFuture<'a>;

    /// Unlink the line from WhatsApp for good and forget its session.
    fn logout<'a>(&'a self, line: &'a EngineLine) -> EngineFuture<'a>;

    /// The QR code a line waiting to be linked shows now; `None` while none is ready yet.
    fn qr_code<'a>(&'a self, line: &'a EngineLine) -> EngineFuture<'a, Option<QrCode>>;

    /// The 8-character code to type on the phone of `phone` ("Link with phone number").
    fn pairing_code<'a>(&'a self, line: &'a EngineLine, phone: &'a PhoneNumber) -> EngineFuture<'a, String>;

    /// The file of a received media message, fetched now; `None`: the engine keeps none for it.
    /// A file larger than `max_bytes` is `Rejected` without being fetched.
    fn download_media<'a>(
        &'a self,
        _line: &'a EngineLine,
        _message_id: &'a MessageId,
        _max_bytes: u64,
    ) -> EngineFuture<'a, Option<crate::media::MediaFile>> {
        Box::pin(async { Ok(None) })
    }

    /// A line was created, or its pairing restarted: start its session now if this node can.
    fn wake_session(&self, _line_id: &LineId) {}

    /// Whether this node holds the lease of the line's session (see [`SessionLease`]).
    fn session_lease(&self, _line: &EngineLine) -> SessionLease {
        SessionLease::NotKept
    }
}

/// Every engine of the server; each call goes to the engine of its line.
pub struct Engines {
    pub sim: Arc<sim::SimNetwork>,
    pub whatsapp: Arc<whatsapp::sessions::WhatsappEngine>,
}

impl Engines {
    fn of(&self, engine: EngineKind) -> &dyn SessionEngine {
        match engine {
            EngineKind::Sim => self.sim.as_ref(),
            EngineKind::Whatsapp => self.whatsapp.as_ref(),
        }
    }
}

impl SessionEngine for Engines {
    fn send<'a>(&'a self, message: &'a Outbound) -> EngineFuture<'a> {
        self.of(message.engine).send(message)
    }

    fn mark_read<'a>(&'a self, line: &'a EngineLine, chat: &'a ChatId, ids: &'a [String]) -> EngineFuture<'a> {
        self.of(line.engine).mark_read(line, chat, ids)
    }

    fn archive<'a>(&'a self, line: &'a EngineLine, chat: &'a ChatId, archived: bool) -> EngineFuture<'a> {
        self.of(line.engine).archive(line, chat, archived)
    }

    fn logout<'a>(&'a self, line: &'a EngineLine) -> EngineFuture<'a> {
        self.of(line.engine).logout(line)
    }

    fn qr_code<'a>(&'a self, line: &'a EngineLine) -> EngineFuture<'a, Option<QrCode>> {
        self.of(line.engine).qr_code(line)
    }

    fn pairing_code<'a>(&'a self, line: &'a EngineLine, phone: &'a PhoneNumber) -> EngineFuture<'a, String> {
        self.of(line.engine).pairing_code(line, phone)
    }

    fn download_media<'a>(
        &'a self,
        line: &'a EngineLine,
        message_id: &'a MessageId,
        max_bytes: u64,
    ) -> EngineFuture<'a, Option<crate::media::MediaFile>> {
        self.of(line.engine).download_media(line, message_id, max_bytes)
    }

    fn wake_session(&self, line_id: &LineId) {
        self.whatsapp.wake_session(line_id)
    }

    fn session_lease(&self, line: &EngineLine) -> SessionLease {
        self.of(line.engine).session_lease(line)
    }
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
