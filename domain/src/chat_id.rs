//! Who a chat is with: a phone (a direct chat) or a WhatsApp group.
//!
//! The API names a chat by the `phone` (or `to`) field: a phone in international format, its
//! personal jid, or a group's jid (`120363041234567890@g.us`). Stored, a direct chat is its phone
//! (`+34600000000`) and a group its jid, so every event written before groups existed reads as a
//! direct chat.

use crate::phone::{PhoneError, PhoneNumber};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A WhatsApp group's jid: `<digits>@g.us`, or the older `<creator's number>-<timestamp>@g.us`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupJid(String);

impl GroupJid {
    pub fn parse(value: &str) -> Option<Self> {
        let user = value.trim().strip_suffix("@g.us")?;
        let digits = |part: &str, len: std::ops::RangeInclusive<usize>| {
            len.contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit()) && !part.starts_with('0')
        };
        let ok = match user.split_once('-') {
            Some((creator, created)) => digits(creator, 5..=25) && digits(created, 5..=15),
            None => digits(user, 5..=25),
        };
        ok.then(|| Self(format!("{user}@g.us")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for GroupJid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for GroupJid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for GroupJid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).ok_or_else(|| serde::de::Error::custom(format!("`{raw}` is not a group jid")))
    }
}

/// The other party of a chat.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChatId {
    Phone(PhoneNumber),
    Group(GroupJid),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a phone number in international format (e.g. +34600000000) or a WhatsApp jid")]
pub struct ChatIdError(pub String);

impl ChatId {
    /// What the API accepts for a chat: a phone number, a personal jid
    /// (`34600000000@s.whatsapp.net`) or a group's jid (`120363041234567890@g.us`).
    pub fn parse(value: &str) -> Result<Self, ChatIdError> {
        if let Some(group) = GroupJid::parse(value) {
            return Ok(Self::Group(group));
        }
        PhoneNumber::parse_phone_or_jid(value).map(Self::Phone).map_err(|PhoneError(v)| ChatIdError(v))
    }

    /// A chat from its stored form (what [`ChatId::as_str`] gives): a phone or a group's jid.
    pub fn from_stored(stored: &str) -> Result<Self, PhoneError> {
        match GroupJid::parse(stored) {
            Some(g) => Ok(Self::Group(g)),
            None => PhoneNumber::parse(stored).map(Self::Phone),
        }
    }

    /// The stored form, and the chat's `phone` in the API: the phone, or the group's jid.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Phone(p) => p.as_str(),
            Self::Group(g) => g.as_str(),
        }
    }

    pub fn jid(&self) -> String {
        match self {
            Self::Phone(p) => p.jid(),
            Self::Group(g) => g.as_str().to_owned(),
        }
    }

    pub fn phone(&self) -> Option<&PhoneNumber> {
        match self {
            Self::Phone(p) => Some(p),
            Self::Group(_) => None,
        }
    }

    pub fn is_group(&self) -> bool {
        matches!(self, Self::Group(_))
    }
}

impl From<PhoneNumber> for ChatId {
    fn from(p: PhoneNumber) -> Self {
        Self::Phone(p)
    }
}

impl From<GroupJid> for ChatId {
    fn from(g: GroupJid) -> Self {
        Self::Group(g)
    }
}

impl fmt::Display for ChatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ChatId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Reads the stored form (a phone or a group's jid), which is what every event holds.
impl<'de> Deserialize<'de> for ChatId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::from_stored(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_personal_jids_and_group_jids_name_a_chat() {
        assert_eq!(ChatId::parse(" +34 600 000 000").unwrap().as_str(), "+34600000000");
        assert_eq!(ChatId::parse("34600000000@s.whatsapp.net").unwrap().as_str(), "+34600000000");
        let group = ChatId::parse("120363041234567890@g.us").unwrap();
        assert!(group.is_group());
        assert_eq!(
            (group.as_str(), group.jid().as_str(), group.phone()),
            ("120363041234567890@g.us", "120363041234567890@g.us", None)
        );
        assert!(ChatId::parse("34600000000-1577836800@g.us").unwrap().is_group());
    }

    #[test]
    fn anything_else_is_rejected() {
        for bad in [
            "",
            "@g.us",
            "abc@g.us",
            "0123456789@g.us",
            "1234@g.us",
            "12345678-@g.us",
            "123456789@G.US",
            "123456789@g.us.evil",
            "123456789@lid",
        ] {
            assert!(ChatId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_stored_form_round_trips_and_old_events_read_as_direct_chats() {
        for chat in ["+34600000000", "120363041234567890@g.us"] {
            let parsed: ChatId = serde_json::from_value(serde_json::json!(chat)).unwrap();
            assert_eq!(serde_json::to_value(&parsed).unwrap(), serde_json::json!(chat));
        }
        let old: ChatId = serde_json::from_value(serde_json::json!("+34600000000")).unwrap();
        assert_eq!(old, ChatId::Phone(PhoneNumber::parse("+34600000000").unwrap()));
        // The stored form is never a personal jid.
        assert!(serde_json::from_value::<ChatId>(serde_json::json!("34600000000@s.whatsapp.net")).is_err());
    }
}
