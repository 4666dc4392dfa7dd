//! The seam between a line's session and a WhatsApp Web client.
//!
//! A session ([`super::session`]) only ever sees these types: it asks a [`WaConnector`] for a
//! client, calls the handful of [`WaClient`] methods, and reacts to the [`WaEvent`]s the client
//! reports. The live implementation translates them to and from `whatsapp-rust`; the tests drive a
//! scripted fake through the very same seam, so everything above it (statuses, events, webhooks,
//! the dispatcher) is tested without a WhatsApp network.
//!
//! Jids are WhatsApp's addresses as strings: `34600000001@s.whatsapp.net` for a phone,
//! `1203630…@g.us` for a group.

use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The session state of one line, as the client library stores it (the PostgreSQL backend, fenced
/// by the line's lease epoch).
pub type SessionStore = Arc<dyn wacore::store::traits::Backend>;

/// Starts a client for a line: one call per run of a session. The client connects (or starts
/// pairing, when the store holds no linked device) in the background and reports on `events`.
#[async_trait]
pub trait WaConnector: Send + Sync + 'static {
    async fn start(&self, line_id: &str, store: SessionStore) -> Result<WaRun, WaError>;
}

/// A started client and its event stream. The stream ends when the client has stopped.
pub struct WaRun {
    pub client: Arc<dyn WaClient>,
    pub events: mpsc::Receiver<WaEvent>,
}

/// The calls a session makes on a running client.
#[async_trait]
pub trait WaClient: Send + Sync + 'static {
    /// Send one message under `message.id` (our pre-assigned engine id: sending the same id twice
    /// is the same message to WhatsApp). `Ok` once the server has accepted it.
    async fn send(&self, message: &WaOutbound) -> Result<(), WaError>;
    /// Read receipts for these messages of `chat` (sent by `sender`; the chat itself in a direct chat).
    async fn mark_read(&self, chat: &str, sender: &str, message_ids: &[String]) -> Result<(), WaError>;
    /// Archive or unarchive a chat on the linked phone (an app-state mutation).
    async fn archive(&self, chat: &str, archived: bool) -> Result<(), WaError>;
    /// The 8-character code for "Link with phone number" on the phone of `phone` (digits with
    /// country code, no `+`).
    async fn pairing_code(&self, phone: &str) -> Result<String, WaError>;
    /// Download an inbound message's media.
    async fn download(&self, media: &WaMediaRef) -> Result<Vec<u8>, WaError>;
    /// Unlink this device from the phone for good.
    async fn logout(&self) -> Result<(), WaError>;
    /// Close the connection cleanly (shutdown, lease lost); the link stays valid.
    async fn disconnect(&self);
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaError {
    /// WhatsApp refused this request; sending it again will not help (not on WhatsApp, a media
    /// type it refuses, a server error code …).
    #[error("{0}")]
    Rejected(String),
    /// The connection is down or timed out: try again once the line is back.
    #[error("{0}")]
    Unavailable(String),
}

/// What a running client reports.
#[derive(Debug)]
pub enum WaEvent {
    /// A QR code to show, valid for `valid_for` (the library rotates them).
    Qr { code: String, valid_for: Duration },
    /// Every QR code of this pairing run went unscanned.
    QrExhausted,
    /// The phone linked this device: its jid (`<digits>:<device>@s.whatsapp.net`) and number.
    Paired { jid: String, phone: String },
    /// Connected and logged in (after pairing, or reconnecting a linked device).
    Connected,
    /// The connection dropped; the link is still valid.
    Disconnected { reason: String },
    /// Another client took this session over (WhatsApp Web opened elsewhere with these keys).
    StreamReplaced,
    /// Unlinked from the phone, banned, or otherwise logged out for good.
    LoggedOut { reason: String },
    /// Inbound messages. `ack` must be answered once they are committed (`Ok`) or could not be
    /// (`Err`): only then does the client acknowledge them to WhatsApp, so nothing received is
    /// lost in a crash.
    Inbound { messages: Vec<WaInbound>, ack: oneshot::Sender<Result<(), String>> },
    /// Delivery or read receipts for messages this line sent.
    Receipt { chat: String, message_ids: Vec<String>, kind: WaReceipt },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaReceipt {
    Delivered,
    Read,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct WaOutbound {
    pub id: String,
    /// The recipient's jid (a phone's or a group's).
    pub to: String,
    pub body: WaBody,
    pub quoted: Option<WaQuoted>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WaBody {
    Text(String),
    Media {
        kind: WaMediaKind,
        bytes: Arc<Vec<u8>>,
        mime_type: String,
        file_name: Option<String>,
        caption: Option<String>,
    },
    /// A reaction to `target`; an empty emoji removes it.
    Reaction {
        target: WaMessageKey,
        emoji: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaMediaKind {
    Image,
    Video,
    Audio,
    Document,
}

/// Which message: WhatsApp identifies one by chat, id, and whether we sent it (and its sender in
/// a group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaMessageKey {
    pub chat: String,
    pub id: String,
    pub from_me: bool,
    /// The author's jid in a group; `None` in a direct chat.
    pub participant: Option<String>,
}

/// The message a reply quotes: its key, author and content (WhatsApp shows them in the bubble).
#[derive(Debug, Clone, PartialEq)]
pub struct WaQuoted {
    pub key: WaMessageKey,
    /// The author's jid.
    pub sender: String,
    /// The quoted text (or a media message's caption), if any.
    pub text: Option<String>,
}

/// An inbound message.
#[derive(Debug, Clone, PartialEq)]
pub struct WaInbound {
    pub id: String,
    /// The chat: the sender's jid in a direct chat, the group's jid in a group.
    pub chat: String,
    /// The author's jid.
    pub sender: String,
    /// The author's phone number (digits with country code), when WhatsApp tells it.
    pub sender_phone: Option<String>,
    pub timestamp: chrono::DateTime<chrono::Utc>,
    pub body: WaInboundBody,
    /// The id of the message this one quotes, if it is a reply.
    pub quoted_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WaInboundBody {
    Text(String),
    Media {
        kind: WaMediaKind,
        mime_type: String,
        caption: Option<String>,
        media: WaMediaRef,
    },
    Reaction {
        target_id: String,
        emoji: String,
    },
    /// A message kind the gateway does not carry (a poll, a sticker, a location …).
    Unsupported {
        kind: String,
    },
}

/// What is needed to download an inbound file later (kept in our read model).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WaMediaRef {
    pub direct_path: String,
    pub media_key: Vec<u8>,
    pub file_sha256: Vec<u8>,
    pub file_enc_sha256: Vec<u8>,
    pub file_length: u64,
    pub kind_label: String,
}
