//! The chat aggregate: one conversation of a line with one phone or group. It records what the tenant does
//! to the chat as a whole: marking it read and archiving it.

use crate::aggregate::Aggregate;
use crate::chat_id::ChatId;
use crate::event::DomainEvent;
use crate::ids::{AccountId, LineId};
use serde::{Deserialize, Serialize};

/// The chat's stream id: the line and the other party.
pub fn stream_id(line_id: &LineId, phone: &ChatId) -> String {
    format!("{line_id}:{}", phone.as_str())
}

#[derive(Debug, Clone)]
pub enum ChatCommand {
    /// Mark the chat's messages read (all of them, or those engine ids).
    Read {
        account_id: AccountId,
        line_id: LineId,
        phone: ChatId,
        engine_message_ids: Vec<String>,
    },
    Archive {
        account_id: AccountId,
        line_id: LineId,
        phone: ChatId,
        archived: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ChatEvent {
    #[serde(rename = "chat.read")]
    Read { account_id: AccountId, line_id: LineId, phone: ChatId, engine_message_ids: Vec<String> },
    #[serde(rename = "chat.archived")]
    Archived { account_id: AccountId, line_id: LineId, phone: ChatId },
    #[serde(rename = "chat.unarchived")]
    Unarchived { account_id: AccountId, line_id: LineId, phone: ChatId },
}

impl DomainEvent for ChatEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChatError {}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chat {
    /// As the tenant last set it (a send's archive policy also moves it, in the read model).
    pub archived: Option<bool>,
}

impl Aggregate for Chat {
    const STREAM_TYPE: &'static str = "chat";
    type Command = ChatCommand;
    type Event = ChatEvent;
    type Error = ChatError;
    type Context<'a> = ();

    fn decide(&self, command: ChatCommand, _: &()) -> Result<Vec<ChatEvent>, ChatError> {
        Ok(match command {
            ChatCommand::Read { account_id, line_id, phone, engine_message_ids } => {
                vec![ChatEvent::Read { account_id, line_id, phone, engine_message_ids }]
            }
            ChatCommand::Archive { account_id, line_id, phone, archived: true } => {
                vec![ChatEvent::Archived { account_id, line_id, phone }]
            }
            ChatCommand::Archive { account_id, line_id, phone, archived: false } => {
                vec![ChatEvent::Unarchived { account_id, line_id, phone }]
            }
        })
    }

    fn apply(&mut self, event: &ChatEvent) {
        match event {
            ChatEvent::Archived { .. } => self.archived = Some(true),
            ChatEvent::Unarchived { .. } => self.archived = Some(false),
            ChatEvent::Read { .. } => {}
        }
    }
}
