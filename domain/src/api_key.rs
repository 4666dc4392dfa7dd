//! The API-key aggregate, and the secrets themselves.
//!
//! A key's secret is `wzb_live_` followed by 40 base62 characters from a CSPRNG. Only its SHA-256
//! hash is stored, in the events and in the key index; the secret is shown once and then forgotten.

use crate::aggregate::Aggregate;
use crate::event::DomainEvent;
use crate::ids::{AccountId, KeyId};
use chrono::{DateTime, Duration, Utc};
use rand::{CryptoRng, Rng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

pub const KEY_PREFIX: &str = "wzb_live_";
const SECRET_LEN: usize = 40;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A key's secret in clear. It never prints: `Debug` and `Display` show only the prefix.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let body: String = (0..SECRET_LEN).map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char).collect();
        Self(format!("{KEY_PREFIX}{body}"))
    }

    /// Accept a presented key only if it has the shape of one of ours; anything else is rejected
    /// without a database lookup.
    pub fn parse(presented: &str) -> Option<Self> {
        let body = presented.strip_prefix(KEY_PREFIX)?;
        let ok = (32..=128).contains(&body.len()) && body.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then(|| Self(presented.to_owned()))
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash(hex::encode(Sha256::digest(self.0.as_bytes())))
    }

    /// The secret itself, to show once to whoever created it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}[redacted]")
    }
}

/// The hex SHA-256 of a key's secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyHash(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Revoked,
}

#[derive(Debug, Clone)]
pub enum ApiKeyCommand {
    Create {
        key_id: KeyId,
        account_id: AccountId,
        name: Option<String>,
        hash: KeyHash,
    },
    /// Replace the secret; the old one keeps working for `grace`. Without grace, every earlier
    /// secret stops at once, including one still in the grace of an earlier rotation.
    Rotate {
        hash: KeyHash,
        grace: Option<Duration>,
    },
    Revoke,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ApiKeyEvent {
    #[serde(rename = "api_key.created")]
    Created { key_id: KeyId, account_id: AccountId, name: Option<String>, key_hash: KeyHash },
    #[serde(rename = "api_key.rotated")]
    Rotated {
        key_hash: KeyHash,
        previous_hash: KeyHash,
        previous_valid_until: Option<DateTime<Utc>>,
        /// Every earlier secret of the key ends now, not only `previous_hash`: a rotation without
        /// grace also ends a secret still in the grace of an earlier rotation. Absent (false) in
        /// events written before this existed, which ended `previous_hash` only.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ends_every_earlier_secret: bool,
    },
    #[serde(rename = "api_key.revoked")]
    Revoked {},
}

impl DomainEvent for ApiKeyEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("API key already exists")]
    AlreadyExists,
    #[error("API key not found")]
    NotFound,
    #[error("API key is revoked")]
    Revoked,
    #[error("key name must be at most 100 characters with no control characters")]
    InvalidName,
    #[error("grace period must be between 0 and 30 days")]
    InvalidGrace,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ApiKey {
    pub key: Option<KeyState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KeyState {
    pub key_id: KeyId,
    pub account_id: AccountId,
    pub status: KeyStatus,
    pub hash: KeyHash,
}

pub struct ApiKeyContext {
    pub now: DateTime<Utc>,
}

impl Aggregate for ApiKey {
    const STREAM_TYPE: &'static str = "api_key";
    type Command = ApiKeyCommand;
    type Event = ApiKeyEvent;
    type Error = ApiKeyError;
    type Context<'a> = ApiKeyContext;

    fn decide(&self, command: ApiKeyCommand, ctx: &ApiKeyContext) -> Result<Vec<ApiKeyEvent>, ApiKeyError> {
        let key = match (command, &self.key) {
            (ApiKeyCommand::Create { key_id, account_id, name, hash }, None) => {
                let name = name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
                if name.as_ref().is_some_and(|n| n.chars().count() > 100 || n.chars().any(char::is_control)) {
                    return Err(ApiKeyError::InvalidName);
                }
                return Ok(vec![ApiKeyEvent::Created { key_id, account_id, name, key_hash: hash }]);
            }
            (ApiKeyCommand::Create { .. }, Some(_)) => return Err(ApiKeyError::AlreadyExists),
            (_, None) => return Err(ApiKeyError::NotFound),
            (command, Some(key)) => (command, key),
        };
        match key {
            (ApiKeyCommand::Revoke, k) if k.status == KeyStatus::Revoked => Ok(vec![]),
            (_, k) if k.status == KeyStatus::Revoked => Err(ApiKeyError::Revoked),
            (ApiKeyCommand::Revoke, _) => Ok(vec![ApiKeyEvent::Revoked {}]),
            (ApiKeyCommand::Rotate { hash, grace }, k) => {
                let grace = grace.filter(|g| !g.is_zero());
                if grace.is_some_and(|g| g < Duration::zero() || g > Duration::days(30)) {
                    return Err(ApiKeyError::InvalidGrace);
                }
                Ok(vec![ApiKeyEvent::Rotated {
                    key_hash: hash,
                    previous_hash: k.hash.clone(),
                    previous_valid_until: grace.map(|g| ctx.now + g),
                    ends_every_earlier_secret: grace.is_none(),
                }])
            }
            (ApiKeyCommand::Create { .. }, _) => unreachable!("handled above"),
        }
    }

    fn apply(&mut self, event: &ApiKeyEvent) {
        match (event, &mut self.key) {
            (ApiKeyEvent::Created { key_id, account_id, key_hash, .. }, _) => {
                self.key = Some(KeyState {
                    key_id: key_id.clone(),
                    account_id: account_id.clone(),
                    status: KeyStatus::Active,
                    hash: key_hash.clone(),
                })
            }
            (ApiKeyEvent::Rotated { key_hash, .. }, Some(k)) => k.hash = key_hash.clone(),
            (ApiKeyEvent::Revoked {}, Some(k)) => k.status = KeyStatus::Revoked,
            (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;

    fn now() -> DateTime<Utc> {
        "2026-11-25T10:00:00Z".parse().unwrap()
    }

    fn context() -> ApiKeyContext {
        ApiKeyContext { now: now() }
    }

    fn created() -> ApiKeyEvent {
        ApiKeyEvent::Created {
            key_id: KeyId::parse("key_0000000000000000000000000a").unwrap(),
            account_id: AccountId::parse("acc_0000000000000000000000000a").unwrap(),
            name: Some("ci".into()),
            key_hash: KeyHash("old".into()),
        }
    }

    #[test]
    fn secrets_have_the_published_shape_and_never_print() {
        let secret = ApiKeySecret::generate(&mut rand::rngs::OsRng);
        assert!(secret.expose().starts_with("wzb_live_"));
        assert_eq!(secret.expose().len(), 9 + 40);
        assert_eq!(ApiKeySecret::parse(secret.expose()), Some(secret.clone()));
        assert_eq!(format!("{secret:?}"), "wzb_live_[redacted]");
        assert_eq!(secret.hash().0.len(), 64);
        assert_ne!(ApiKeySecret::generate(&mut rand::rngs::OsRng), secret);
    }

    #[test]
    fn malformed_presented_keys_are_rejected() {
        for bad in [
            "",
            "wzb_live_",
            "wzb_live_short",
            "Bearer wzb_live_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "wzb_test_0123456789abcdef0123456789abcdef",
        ] {
            assert!(ApiKeySecret::parse(bad).is_none(), "{bad}");
        }
        assert!(ApiKeySecret::parse("wzb_live_0123456789abcdef0123456789abcdef!").is_none());
    }

    #[test]
    fn rotation_without_grace_ends_the_old_secret_at_once() {
        let events = given::<ApiKey>(&[created()])
            .when(ApiKeyCommand::Rotate { hash: KeyHash("new".into()), grace: None }, &context())
            .unwrap();
        assert_eq!(
            events,
            vec![ApiKeyEvent::Rotated {
                key_hash: KeyHash("new".into()),
                previous_hash: KeyHash("old".into()),
                previous_valid_until: None,
                ends_every_earlier_secret: true,
            }]
        );
    }

    #[test]
    fn rotation_without_grace_also_ends_a_secret_still_in_an_earlier_grace() {
        let graced = given::<ApiKey>(&[created()])
            .when(ApiKeyCommand::Rotate { hash: KeyHash("second".into()), grace: Some(Duration::hours(24)) }, &context())
            .unwrap();
        let ApiKeyEvent::Rotated { ends_every_earlier_secret, .. } = &graced[0] else { panic!() };
        assert!(!ends_every_earlier_secret, "a rotation with grace leaves earlier graces alone");

        let history = [created(), graced[0].clone()];
        let events = given::<ApiKey>(&history)
            .when(ApiKeyCommand::Rotate { hash: KeyHash("third".into()), grace: None }, &context())
            .unwrap();
        assert_eq!(
            events,
            vec![ApiKeyEvent::Rotated {
                key_hash: KeyHash("third".into()),
                previous_hash: KeyHash("second".into()),
                previous_valid_until: None,
                ends_every_earlier_secret: true,
            }]
        );
    }

    #[test]
    fn rotations_recorded_before_every_earlier_secret_could_end_still_read_as_they_were() {
        let old = serde_json::json!({"key_hash": "b", "previous_hash": "a", "previous_valid_until": null});
        let event = ApiKeyEvent::from_stored("api_key.rotated", 1, old.clone()).unwrap();
        let ApiKeyEvent::Rotated { ends_every_earlier_secret, .. } = &event else { panic!() };
        assert!(!ends_every_earlier_secret);
        assert_eq!(event.to_stored().1, old, "a rotation that ends no earlier secret keeps its shape");
    }

    #[test]
    fn rotation_with_grace_keeps_the_old_secret_until_then() {
        let events = given::<ApiKey>(&[created()])
            .when(ApiKeyCommand::Rotate { hash: KeyHash("new".into()), grace: Some(Duration::hours(1)) }, &context())
            .unwrap();
        let ApiKeyEvent::Rotated { previous_valid_until, .. } = &events[0] else { panic!() };
        assert_eq!(*previous_valid_until, Some(now() + Duration::hours(1)));
        assert_eq!(
            given::<ApiKey>(&[created()])
                .when(ApiKeyCommand::Rotate { hash: KeyHash("n".into()), grace: Some(Duration::days(31)) }, &context()),
            Err(ApiKeyError::InvalidGrace)
        );
    }

    #[test]
    fn a_revoked_key_cannot_be_rotated_and_revoking_twice_is_a_no_op() {
        let revoked = [created(), ApiKeyEvent::Revoked {}];
        assert_eq!(
            given::<ApiKey>(&revoked).when(ApiKeyCommand::Rotate { hash: KeyHash("n".into()), grace: None }, &context()),
            Err(ApiKeyError::Revoked)
        );
        assert_eq!(given::<ApiKey>(&revoked).when(ApiKeyCommand::Revoke, &context()), Ok(vec![]));
        assert_eq!(given::<ApiKey>(&[created()]).when(ApiKeyCommand::Revoke, &context()), Ok(vec![ApiKeyEvent::Revoked {}]));
        assert_eq!(given::<ApiKey>(&[]).when(ApiKeyCommand::Revoke, &context()), Err(ApiKeyError::NotFound));
    }
}
