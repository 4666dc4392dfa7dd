//! Phone numbers in international (E.164) form, and the WhatsApp jids derived from them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// `+` and 8 to 15 digits, the first not 0. Spaces, dashes, dots and parentheses are ignored on
/// input (`+34 600-000-000` is `+34600000000`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a phone number in international format (e.g. +34600000000)")]
pub struct PhoneError(pub String);

impl PhoneNumber {
    pub fn parse(value: &str) -> Result<Self, PhoneError> {
        let err = || PhoneError(value.chars().take(40).collect());
        let compact: String = value.trim().chars().filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')')).collect();
        let digits = compact.strip_prefix('+').ok_or_else(err)?;
        let ok = (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
        if !ok {
            return Err(err());
        }
        Ok(Self(compact))
    }

    /// Accept a phone number or a personal jid (`34600000000@s.whatsapp.net`).
    pub fn parse_phone_or_jid(value: &str) -> Result<Self, PhoneError> {
        match value.trim().split_once('@') {
            Some((user, "s.whatsapp.net" | "c.us")) => {
                Self::parse(&format!("+{user}")).map_err(|_| PhoneError(value.chars().take(40).collect()))
            }
            Some(_) => Err(PhoneError(value.chars().take(40).collect())),
            None => Self::parse(value),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The personal WhatsApp jid of this number.
    pub fn jid(&self) -> String {
        format!("{}@s.whatsapp.net", &self.0[1..])
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = PhoneError;
    fn try_from(v: String) -> Result<Self, PhoneError> {
        Self::parse(&v)
    }
}

impl From<PhoneNumber> for String {
    fn from(p: PhoneNumber) -> String {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn international_numbers_parse_and_normalise() {
        assert_eq!(PhoneNumber::parse("+34600000000").unwrap().as_str(), "+34600000000");
        assert_eq!(PhoneNumber::parse(" +34 600-000.000 ").unwrap().as_str(), "+34600000000");
        assert_eq!(PhoneNumber::parse("+1 (415) 555-0100").unwrap().as_str(), "+14155550100");
    }

    #[test]
    fn anything_else_is_rejected() {
        for bad in ["", "34600000000", "+", "+0600000000", "+3460000", "+3460000000000000", "+34abc000000", "++34600000000"] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn jids_map_to_and_from_numbers() {
        let p = PhoneNumber::parse_phone_or_jid("34600000000@s.whatsapp.net").unwrap();
        assert_eq!(p.as_str(), "+34600000000");
        assert_eq!(p.jid(), "34600000000@s.whatsapp.net");
        assert!(PhoneNumber::parse_phone_or_jid("123-456@g.us").is_err());
    }
}
