//! The message aggregate: an outbound message from queueing to its last receipt, or an inbound one.
//!
//! Statuses only move forward (`queued` → `sent` → `delivered` → `read`, or `failed`): a receipt
//! that arrives late or out of order changes nothing.

use crate::aggregate::Aggregate;
use crate::chat_id::{ChatId, GroupJid};
use crate::event::DomainEvent;
use crate::ids::{AccountId, LineId, MessageId};
use crate::phone::PhoneNumber;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest text (or caption) accepted, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Outbound,
    Inbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchivePolicy {
    /// Leave the chat where it is (unarchived by the new message, as WhatsApp does).
    #[default]
    Never,
    /// Archive the chat after sending.
    Always,
    /// Re-archive the chat after sending if it was archived before.
    PreserveIfPreviouslyArchived,
}

impl ArchivePolicy {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "never" => Some(Self::Never),
            "always" => Some(Self::Always),
            "preserve_if_previously_archived" => Some(Self::PreserveIfPreviouslyArchived),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaType {
    Image,
    Video,
    Audio,
    Document,
}

impl MediaType {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "image" => Some(Self::Image),
            "video" => Some(Self::Video),
            "audio" => Some(Self::Audio),
            "document" => Some(Self::Document),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Video => "video",
            Self::Audio => "audio",
            Self::Document => "document",
        }
    }
}

/// Non-empty text of at most [`MAX_TEXT_CHARS`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MessageText(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_TEXT_CHARS} characters (got {0})")]
    TooLong(usize),
}

impl MessageText {
    pub fn parse(value: &str) -> Result<Self, TextError> {
        if value.trim().is_empty() {
            return Err(TextError::Empty);
        }
        let n = value.chars().count();
        if n > MAX_TEXT_CHARS {
            return Err(TextError::TooLong(n));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MessageText {
    type Error = TextError;
    fn try_from(v: String) -> Result<Self, TextError> {
        Self::parse(&v)
    }
}

impl From<MessageText> for String {
    fn from(t: MessageText) -> String {
        t.0
    }
}

/// What a message carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Content {
    Text {
        text: MessageText,
    },
    Media {
        media_url: String,
        media_type: MediaType,
        caption: Option<MessageText>,
    },
    /// A reaction to another message of the chat; an empty emoji removes the reaction. The
    /// target's WhatsApp id is absent while the target is still queued on the same line: the
    /// reaction waits behind it in the line's queue and the dispatcher fills the id in.
    Reaction {
        target_message_id: Option<MessageId>,
        #[serde(default)]
        target_engine_message_id: Option<String>,
        emoji: Emoji,
    },
}

impl Content {
    pub fn kind(&self) -> &'static str {
        match self {
            Content::Text { .. } => "text",
            Content::Media { media_type, .. } => media_type.as_str(),
            Content::Reaction { .. } => "reaction",
        }
    }
}

/// One emoji (a single grapheme such as 👍, ❤️ or 👨‍👩‍👧), or empty to remove a reaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Emoji(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a single emoji")]
pub struct EmojiError(pub String);

impl Emoji {
    pub fn parse(value: &str) -> Result<Self, EmojiError> {
        let err = || EmojiError(value.chars().take(20).collect());
        if value.is_empty() {
            return Ok(Self(String::new()));
        }
        let chars: Vec<char> = value.chars().collect();
        // Keycaps (#️⃣, 1️⃣) are the only emoji that contain ASCII.
        let keycap = chars.len() <= 3 && chars.last() == Some(&'\u{20E3}') && matches!(chars[0], '#' | '*' | '0'..='9');
        let pictographic = chars.len() <= 16
            && chars.iter().all(|c| !c.is_ascii() && !c.is_whitespace() && !c.is_control())
            && chars.iter().any(|c| u32::from(*c) >= 0x00A9);
        if keycap || pictographic {
            Ok(Self(value.to_owned()))
        } else {
            Err(err())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this removes a reaction.
    pub fn is_removal(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<String> for Emoji {
    type Error = EmojiError;
    fn try_from(v: String) -> Result<Self, EmojiError> {
        Self::parse(&v)
    }
}

impl From<Emoji> for String {
    fn from(e: Emoji) -> String {
        e.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }
}

/// The idempotency key a send was made with, and a hash of its request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

#[derive(Debug, Clone)]
pub enum MessageCommand {
    Queue(Box<Queued>),
    StartDispatch {
        engine_message_id: String,
    },
    MarkSent {
        engine_message_id: String,
    },
    MarkFailed {
        reason: String,
    },
    /// A receipt from the recipient's phone: `Delivered` or `Read`.
    Receipt {
        status: MessageStatus,
    },
    Receive(Box<Received>),
}

/// A message accepted for sending.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub message_id: MessageId,
    pub line_id: LineId,
    pub account_id: AccountId,
    /// A phone, or a group's jid.
    pub to: ChatId,
    pub content: Content,
    #[serde(default)]
    pub quoted_message_id: Option<MessageId>,
    #[serde(default)]
    pub archive_policy: ArchivePolicy,
    /// The billing cycle it counts against.
    pub cycle_start: DateTime<Utc>,
    #[serde(default)]
    pub idempotency: Option<Idempotency>,
}

/// A message that arrived on a line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Received {
    pub message_id: MessageId,
    pub line_id: LineId,
    pub account_id: AccountId,
    /// Who sent it.
    pub from: PhoneNumber,
    /// The group it was sent in; `None` in a direct chat (the chat is then `from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupJid>,
    pub engine_message_id: String,
    pub content: Content,
    #[serde(default)]
    pub quoted_engine_message_id: Option<String>,
}

impl Received {
    /// The chat it arrived in: the group, or the sender's direct chat.
    pub fn chat(&self) -> ChatId {
        match &self.group {
            Some(group) => ChatId::Group(group.clone()),
            None => ChatId::Phone(self.from.clone()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MessageEvent {
    #[serde(rename = "message.queued")]
    Queued(Queued),
    /// Recorded before the engine is called, with the id the engine will send under.
    #[serde(rename = "message.dispatch_started")]
    DispatchStarted { attempt: u32, engine_message_id: String },
    #[serde(rename = "message.sent")]
    Sent { engine_message_id: String },
    #[serde(rename = "message.failed")]
    Failed { reason: String },
    #[serde(rename = "message.delivered")]
    Delivered {},
    #[serde(rename = "message.read")]
    Read {},
    #[serde(rename = "message.received")]
    Received(Received),
}

impl DomainEvent for MessageEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    #[error("message already exists")]
    AlreadyExists,
    #[error("message not found")]
    NotFound,
    #[error("the message is not waiting to be sent")]
    NotDispatchable,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub state: Option<MessageState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MessageState {
    pub message_id: MessageId,
    pub line_id: LineId,
    pub direction: Direction,
    pub status: MessageStatus,
    pub attempts: u32,
    pub engine_message_id: Option<String>,
}

impl Aggregate for Message {
    const STREAM_TYPE: &'static str = "message";
    type Command = MessageCommand;
    type Event = MessageEvent;
    type Error = MessageError;
    type Context<'a> = ();

    fn decide(&self, command: MessageCommand, _: &()) -> Result<Vec<MessageEvent>, MessageError> {
        use MessageStatus::*;
        let state = match (command, &self.state) {
            (MessageCommand::Queue(q), None) => return Ok(vec![MessageEvent::Queued(*q)]),
            (MessageCommand::Receive(r), None) => return Ok(vec![MessageEvent::Received(*r)]),
            (MessageCommand::Queue(_) | MessageCommand::Receive(_), Some(_)) => return Err(MessageError::AlreadyExists),
            (_, None) => return Err(MessageError::NotFound),
            (command, Some(state)) => (command, state),
        };
        match state {
            (MessageCommand::StartDispatch { engine_message_id }, s) if s.status == Queued => {
                // A retry after a crash keeps the id the first attempt announced.
                let engine_message_id = s.engine_message_id.clone().unwrap_or(engine_message_id);
                Ok(vec![MessageEvent::DispatchStarted { attempt: s.attempts + 1, engine_message_id }])
            }
            (MessageCommand::MarkSent { engine_message_id }, s) if s.status == Queued => {
                Ok(vec![MessageEvent::Sent { engine_message_id }])
            }
            // A receipt recorded the send first (see `Receipt` below): nothing left to record.
            (MessageCommand::MarkSent { .. } | MessageCommand::MarkFailed { .. }, s)
                if matches!(s.status, Sent | Delivered | Read) =>
            {
                Ok(vec![])
            }
            (MessageCommand::MarkFailed { reason }, s) if s.status == Queued => Ok(vec![MessageEvent::Failed { reason }]),
            (MessageCommand::StartDispatch { .. } | MessageCommand::MarkSent { .. } | MessageCommand::MarkFailed { .. }, _) => {
                Err(MessageError::NotDispatchable)
            }
            (MessageCommand::Receipt { status }, s) => {
                // Receipts never move a status backwards, and a failed message stays failed.
                if s.status == Failed || status <= s.status || !matches!(status, Delivered | Read) {
                    return Ok(vec![]);
                }
                let mut events = Vec::with_capacity(2);
                if s.status == Queued {
                    // The recipient acknowledged a message whose send the dispatcher has not
                    // recorded yet (the receipt won the race with that record): it was sent, under
                    // the id its dispatch announced. Without this the message would be delivered
                    // but still queued, and its line's queue stuck behind it.
                    let Some(engine_message_id) = s.engine_message_id.clone() else { return Ok(vec![]) };
                    events.push(MessageEvent::Sent { engine_message_id });
                }
                events.push(if status == Delivered { MessageEvent::Delivered {} } else { MessageEvent::Read {} });
                Ok(events)
            }
            (MessageCommand::Queue(_) | MessageCommand::Receive(_), _) => unreachable!("handled above"),
        }
    }

    fn apply(&mut self, event: &MessageEvent) {
        match (event, &mut self.state) {
            (MessageEvent::Queued(q), _) => {
                self.state = Some(MessageState {
                    message_id: q.message_id.clone(),
                    line_id: q.line_id.clone(),
                    direction: Direction::Outbound,
                    status: MessageStatus::Queued,
                    attempts: 0,
                    engine_message_id: None,
                })
            }
            (MessageEvent::Received(r), _) => {
                self.state = Some(MessageState {
                    message_id: r.message_id.clone(),
                    line_id: r.line_id.clone(),
                    direction: Direction::Inbound,
                    status: MessageStatus::Delivered,
                    attempts: 0,
                    engine_message_id: Some(r.engine_message_id.clone()),
                })
            }
            (MessageEvent::DispatchStarted { attempt, engine_message_id }, Some(s)) => {
                s.attempts = *attempt;
                s.engine_message_id = Some(engine_message_id.clone());
            }
            (MessageEvent::Sent { engine_message_id }, Some(s)) => {
                s.status = MessageStatus::Sent;
                s.engine_message_id = Some(engine_message_id.clone());
            }
            (MessageEvent::Failed { .. }, Some(s)) => s.status = MessageStatus::Failed,
            (MessageEvent::Delivered {}, Some(s)) => s.status = MessageStatus::Delivered,
            (MessageEvent::Read {}, Some(s)) => s.status = MessageStatus::Read,
            (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;

    fn queued() -> MessageEvent {
        MessageEvent::Queued(Queued {
            message_id: MessageId::parse("msg_0000000000000000000000000a").unwrap(),
            line_id: LineId::parse("line_0000000000000000000000000a").unwrap(),
            account_id: AccountId::parse("acc_0000000000000000000000000a").unwrap(),
            to: ChatId::parse("+34600000001").unwrap(),
            content: Content::Text { text: MessageText::parse("hola").unwrap() },
            quoted_message_id: None,
            archive_policy: ArchivePolicy::Never,
            cycle_start: "2026-11-01T00:00:00Z".parse().unwrap(),
            idempotency: None,
        })
    }

    #[test]
    fn emoji_are_single_pictographs_or_empty() {
        for ok in ["👍", "❤️", "👨‍👩‍👧", "🇪🇸", "1️⃣", ""] {
            assert!(Emoji::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["a", ":+1:", "👍 ", "ok👍", "1", "\n"] {
            assert!(Emoji::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn text_is_bounded() {
        assert_eq!(MessageText::parse("  "), Err(TextError::Empty));
        assert!(MessageText::parse(&"a".repeat(MAX_TEXT_CHARS)).is_ok());
        assert_eq!(MessageText::parse(&"é".repeat(MAX_TEXT_CHARS + 1)), Err(TextError::TooLong(MAX_TEXT_CHARS + 1)));
    }

    #[test]
    fn a_retried_dispatch_keeps_the_first_engine_id() {
        let first =
            given::<Message>(&[queued()]).when(MessageCommand::StartDispatch { engine_message_id: "A".into() }, &()).unwrap();
        assert_eq!(first, vec![MessageEvent::DispatchStarted { attempt: 1, engine_message_id: "A".into() }]);
        let history = [queued(), first[0].clone()];
        let retry =
            given::<Message>(&history).when(MessageCommand::StartDispatch { engine_message_id: "B".into() }, &()).unwrap();
        assert_eq!(retry, vec![MessageEvent::DispatchStarted { attempt: 2, engine_message_id: "A".into() }]);
    }

    #[test]
    fn a_sent_message_is_not_dispatched_again() {
        let history = [queued(), MessageEvent::Sent { engine_message_id: "A".into() }];
        assert_eq!(
            given::<Message>(&history).when(MessageCommand::StartDispatch { engine_message_id: "B".into() }, &()),
            Err(MessageError::NotDispatchable)
        );
    }

    #[test]
    fn receipts_never_move_the_status_backwards() {
        let sent = [queued(), MessageEvent::Sent { engine_message_id: "A".into() }];
        assert_eq!(
            given::<Message>(&sent).when(MessageCommand::Receipt { status: MessageStatus::Read }, &()),
            Ok(vec![MessageEvent::Read {}])
        );
        let read = [sent[0].clone(), sent[1].clone(), MessageEvent::Read {}];
        assert_eq!(given::<Message>(&read).when(MessageCommand::Receipt { status: MessageStatus::Delivered }, &()), Ok(vec![]));
        let failed = [queued(), MessageEvent::Failed { reason: "x".into() }];
        assert_eq!(given::<Message>(&failed).when(MessageCommand::Receipt { status: MessageStatus::Delivered }, &()), Ok(vec![]));
    }

    #[test]
    fn a_receipt_that_beats_the_dispatchers_record_records_the_send_and_the_record_is_then_a_no_op() {
        let started = [queued(), MessageEvent::DispatchStarted { attempt: 1, engine_message_id: "A".into() }];
        assert_eq!(
            given::<Message>(&started).when(MessageCommand::Receipt { status: MessageStatus::Delivered }, &()),
            Ok(vec![MessageEvent::Sent { engine_message_id: "A".into() }, MessageEvent::Delivered {}])
        );
        let delivered = [
            started[0].clone(),
            started[1].clone(),
            MessageEvent::Sent { engine_message_id: "A".into() },
            MessageEvent::Delivered {},
        ];
        assert_eq!(
            given::<Message>(&delivered).when(MessageCommand::MarkSent { engine_message_id: "A".into() }, &()),
            Ok(vec![])
        );
        assert_eq!(given::<Message>(&delivered).when(MessageCommand::MarkFailed { reason: "timeout".into() }, &()), Ok(vec![]));
        // Never dispatched: the network cannot have it.
        assert_eq!(
            given::<Message>(&[queued()]).when(MessageCommand::Receipt { status: MessageStatus::Delivered }, &()),
            Ok(vec![])
        );
    }
}
