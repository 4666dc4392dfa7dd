//! Typed, prefixed identifiers (`acc_…`, `key_…`, `line_…`, `msg_…`, `wh_…`, `evt_…`, `usr_…`).
//!
//! The body is 26 characters of lowercase Crockford base32 over a UUIDv7, so ids sort by creation
//! time and cannot be guessed. `parse` accepts only well-formed ids of the right kind.

use std::fmt;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const BODY_LEN: usize = 26;

fn encode(value: u128) -> String {
    let mut out = [0u8; BODY_LEN];
    let mut v = value;
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v & 31) as usize];
        v >>= 5;
    }
    String::from_utf8(out.to_vec()).expect("ascii")
}

fn body_is_valid(body: &str) -> bool {
    body.len() == BODY_LEN && body.bytes().all(|b| ALPHABET.contains(&b)) && body.as_bytes()[0] <= b'7'
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind} id (expected `{prefix}` followed by 26 base32 characters)")]
pub struct IdError {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub value: String,
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new, unique, time-ordered id.
            #[allow(clippy::new_without_default)]
            pub fn new() -> Self {
                Self(format!("{}{}", $prefix, encode(uuid::Uuid::now_v7().as_u128())))
            }

            pub fn parse(value: &str) -> Result<Self, IdError> {
                match value.strip_prefix($prefix) {
                    Some(body) if body_is_valid(body) => Ok(Self(value.to_owned())),
                    _ => Err(IdError { kind: $kind, prefix: $prefix, value: value.chars().take(64).collect() }),
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

typed_id!(/// A tenant account.
    AccountId, "acc_", "account");
typed_id!(/// An API key (the id, never the secret).
    KeyId, "key_", "API key");
typed_id!(/// A linked WhatsApp line.
    LineId, "line_", "line");
typed_id!(/// A message, in our numbering.
    MessageId, "msg_", "message");
typed_id!(/// A webhook endpoint.
    WebhookId, "wh_", "webhook");
typed_id!(/// An event of the log.
    EventId, "evt_", "event");
typed_id!(/// One event on its way to one webhook.
    DeliveryId, "dlv_", "delivery");
typed_id!(/// A person who signs in to the console (the web UI) of one account.
    ConsoleUserId, "usr_", "console user");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_ids_round_trip_through_parse() {
        let id = AccountId::new();
        assert!(id.as_str().starts_with("acc_"));
        assert_eq!(id.as_str().len(), 4 + 26);
        assert_eq!(AccountId::parse(id.as_str()).unwrap(), id);
    }

    #[test]
    fn ids_sort_by_creation() {
        let a = MessageId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = MessageId::new();
        assert!(a < b);
    }

    #[test]
    fn parse_rejects_wrong_prefix_length_and_alphabet() {
        let key = KeyId::new();
        assert!(AccountId::parse(key.as_str()).is_err());
        assert!(AccountId::parse("acc_").is_err());
        assert!(AccountId::parse("acc_0123456789abcdefghjkmnpqrst").is_err()); // 27 chars
        assert!(AccountId::parse("acc_0123456789abcdefghjkmnpqru").is_err()); // 'u' is not base32
        assert!(AccountId::parse("acc_0123456789abcdefghjkmnpqrs").is_ok());
        let err = LineId::parse("nope").unwrap_err();
        assert_eq!(err.to_string(), "`nope` is not a valid line id (expected `line_` followed by 26 base32 characters)");
    }
}
