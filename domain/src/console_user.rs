//! The console-user aggregate: a person who signs in to one account's console (the web UI), with a
//! role, a password and one-time links.
//!
//! A user is invited with a one-time link (its token's SHA-256 hash and an expiry are in the
//! event; the token itself is shown once to whoever invited). Following the link sets the password,
//! which consumes the token. A reset link is another one-time token. The password is stored only
//! as an argon2id PHC string, made by the server: this crate never sees a password in clear after
//! [`NewPassword::parse`] has checked its length.

use crate::aggregate::Aggregate;
use crate::event::DomainEvent;
use crate::ids::{AccountId, ConsoleUserId};
use chrono::{DateTime, Duration, Utc};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// How long an invitation or a reset link can be used.
pub const LINK_VALIDITY: Duration = Duration::hours(24);

/// The shortest password accepted (the forms say so).
pub const MIN_PASSWORD_CHARS: usize = 10;
/// The longest: hashing is deliberately slow, and its cost grows with the input.
pub const MAX_PASSWORD_CHARS: usize = 256;

/// An email address as the console's sign-in name: trimmed, lowercased, one `@` with something on
/// both sides and a dot in the domain, at most 254 characters, no spaces or control characters.
/// It is an identifier here, not a mailbox: nothing is ever sent to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    pub fn parse(value: &str) -> Result<Self, ConsoleUserError> {
        let email = value.trim().to_lowercase();
        let valid = email.chars().count() <= 254
            && !email.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | ','))
            && matches!(email.split_once('@'), Some((local, domain))
                if !local.is_empty() && !domain.contains('@') && domain.contains('.')
                    && !domain.starts_with('.') && !domain.ends_with('.'));
        if valid {
            Ok(Self(email))
        } else {
            Err(ConsoleUserError::InvalidEmail)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = ConsoleUserError;
    fn try_from(v: String) -> Result<Self, ConsoleUserError> {
        Self::parse(&v)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

/// What a console user may do: owners also manage users and API keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Developer,
}

impl Role {
    pub fn parse(value: &str) -> Result<Self, ConsoleUserError> {
        match value.trim() {
            "owner" => Ok(Role::Owner),
            "developer" => Ok(Role::Developer),
            _ => Err(ConsoleUserError::InvalidRole),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Developer => "developer",
        }
    }
}

/// A one-time token in clear (an invitation or reset link, or a session cookie): 32 bytes from a
/// CSPRNG, as 64 hex characters. Only its hash is ever stored. It never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct OneTimeToken(String);

impl OneTimeToken {
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(hex::encode(bytes))
    }

    /// Accept a presented token only if it has our shape (anything else is refused without a lookup).
    pub fn parse(presented: &str) -> Option<Self> {
        let ok = presented.len() == 64 && presented.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Self(presented.to_owned()))
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(hex::encode(Sha256::digest(self.0.as_bytes())))
    }

    /// The token itself, to put in the link or cookie given to its holder.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for OneTimeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[token redacted]")
    }
}

/// The hex SHA-256 of a [`OneTimeToken`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenHash(pub String);

/// An argon2id PHC string (`$argon2id$v=19$…`). It does not print.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PasswordHash(pub String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[password hash]")
    }
}

/// A password someone chose, checked for length before it is hashed. It does not print.
pub struct NewPassword(String);

impl NewPassword {
    pub fn parse(value: String) -> Result<Self, ConsoleUserError> {
        match value.chars().count() {
            n if n < MIN_PASSWORD_CHARS => Err(ConsoleUserError::PasswordTooShort),
            n if n > MAX_PASSWORD_CHARS => Err(ConsoleUserError::PasswordTooLong),
            _ => Ok(Self(value)),
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[password]")
    }
}

#[derive(Debug, Clone)]
pub enum ConsoleUserCommand {
    Invite {
        user_id: ConsoleUserId,
        account_id: AccountId,
        email: Email,
        role: Role,
        token: TokenHash,
    },
    /// Set the password by following a one-time link, which it consumes.
    SetPassword {
        token: TokenHash,
        password_hash: PasswordHash,
    },
    ChangeRole {
        role: Role,
    },
    /// A successful sign-in (failures are not events).
    RecordSignIn,
    IssueResetLink {
        token: TokenHash,
    },
    Remove,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ConsoleUserEvent {
    #[serde(rename = "console_user.invited")]
    Invited {
        user_id: ConsoleUserId,
        account_id: AccountId,
        email: Email,
        role: Role,
        token_hash: TokenHash,
        token_expires_at: DateTime<Utc>,
    },
    #[serde(rename = "console_user.password_set")]
    PasswordSet { password_hash: PasswordHash },
    #[serde(rename = "console_user.role_changed")]
    RoleChanged { from: Role, to: Role },
    #[serde(rename = "console_user.signed_in")]
    SignedIn {},
    #[serde(rename = "console_user.reset_link_issued")]
    ResetLinkIssued { token_hash: TokenHash, token_expires_at: DateTime<Utc> },
    #[serde(rename = "console_user.removed")]
    Removed {},
}

impl DomainEvent for ConsoleUserEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConsoleUserError {
    #[error("console user already exists")]
    AlreadyExists,
    #[error("console user not found")]
    NotFound,
    #[error("this user has been removed")]
    Removed,
    #[error("this link is invalid, already used or expired")]
    InvalidLink,
    #[error("this user has not set a password yet")]
    NoPassword,
    #[error("enter an email address like name@example.com")]
    InvalidEmail,
    #[error("the role must be owner or developer")]
    InvalidRole,
    #[error("the password must be at least 10 characters")]
    PasswordTooShort,
    #[error("the password must be at most 256 characters")]
    PasswordTooLong,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsoleUser {
    pub user: Option<UserState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserState {
    pub user_id: ConsoleUserId,
    pub account_id: AccountId,
    pub email: Email,
    pub role: Role,
    pub has_password: bool,
    /// The one-time link that may still be used, and until when.
    pub pending_link: Option<(TokenHash, DateTime<Utc>)>,
    pub removed: bool,
}

pub struct ConsoleUserContext {
    pub now: DateTime<Utc>,
}

impl Aggregate for ConsoleUser {
    const STREAM_TYPE: &'static str = "console_user";
    type Command = ConsoleUserCommand;
    type Event = ConsoleUserEvent;
    type Error = ConsoleUserError;
    type Context<'a> = ConsoleUserContext;

    fn decide(&self, command: ConsoleUserCommand, ctx: &ConsoleUserContext) -> Result<Vec<ConsoleUserEvent>, ConsoleUserError> {
        let user = match (command, &self.user) {
            (ConsoleUserCommand::Invite { user_id, account_id, email, role, token }, None) => {
                return Ok(vec![ConsoleUserEvent::Invited {
                    user_id,
                    account_id,
                    email,
                    role,
                    token_hash: token,
                    token_expires_at: ctx.now + LINK_VALIDITY,
                }]);
            }
            (ConsoleUserCommand::Invite { .. }, Some(_)) => return Err(ConsoleUserError::AlreadyExists),
            (_, None) => return Err(ConsoleUserError::NotFound),
            (ConsoleUserCommand::Remove, Some(u)) if u.removed => return Ok(vec![]),
            (_, Some(u)) if u.removed => return Err(ConsoleUserError::Removed),
            (command, Some(u)) => (command, u),
        };
        match user {
            (ConsoleUserCommand::SetPassword { token, password_hash }, u) => match &u.pending_link {
                Some((pending, until)) if *pending == token && ctx.now < *until => {
                    Ok(vec![ConsoleUserEvent::PasswordSet { password_hash }])
                }
                _ => Err(ConsoleUserError::InvalidLink),
            },
            (ConsoleUserCommand::ChangeRole { role }, u) if u.role == role => Ok(vec![]),
            (ConsoleUserCommand::ChangeRole { role }, u) => Ok(vec![ConsoleUserEvent::RoleChanged { from: u.role, to: role }]),
            (ConsoleUserCommand::RecordSignIn, u) if !u.has_password => Err(ConsoleUserError::NoPassword),
            (ConsoleUserCommand::RecordSignIn, _) => Ok(vec![ConsoleUserEvent::SignedIn {}]),
            (ConsoleUserCommand::IssueResetLink { token }, _) => {
                Ok(vec![ConsoleUserEvent::ResetLinkIssued { token_hash: token, token_expires_at: ctx.now + LINK_VALIDITY }])
            }
            (ConsoleUserCommand::Remove, _) => Ok(vec![ConsoleUserEvent::Removed {}]),
            (ConsoleUserCommand::Invite { .. }, _) => unreachable!("handled above"),
        }
    }

    fn apply(&mut self, event: &ConsoleUserEvent) {
        match (event, &mut self.user) {
            (ConsoleUserEvent::Invited { user_id, account_id, email, role, token_hash, token_expires_at }, _) => {
                self.user = Some(UserState {
                    user_id: user_id.clone(),
                    account_id: account_id.clone(),
                    email: email.clone(),
                    role: *role,
                    has_password: false,
                    pending_link: Some((token_hash.clone(), *token_expires_at)),
                    removed: false,
                })
            }
            (ConsoleUserEvent::PasswordSet { .. }, Some(u)) => {
                u.has_password = true;
                u.pending_link = None;
            }
            (ConsoleUserEvent::RoleChanged { to, .. }, Some(u)) => u.role = *to,
            (ConsoleUserEvent::SignedIn {}, Some(_)) => {}
            (ConsoleUserEvent::ResetLinkIssued { token_hash, token_expires_at }, Some(u)) => {
                u.pending_link = Some((token_hash.clone(), *token_expires_at))
            }
            (ConsoleUserEvent::Removed {}, Some(u)) => {
                u.removed = true;
                u.pending_link = None;
            }
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

    fn at(now: DateTime<Utc>) -> ConsoleUserContext {
        ConsoleUserContext { now }
    }

    fn invited() -> ConsoleUserEvent {
        ConsoleUserEvent::Invited {
            user_id: ConsoleUserId::parse("usr_0000000000000000000000000a").unwrap(),
            account_id: AccountId::parse("acc_0000000000000000000000000a").unwrap(),
            email: Email::parse("Ana@Example.com").unwrap(),
            role: Role::Developer,
            token_hash: TokenHash("invite".into()),
            token_expires_at: now() + LINK_VALIDITY,
        }
    }

    fn set_password(token: &str) -> ConsoleUserCommand {
        ConsoleUserCommand::SetPassword { token: TokenHash(token.into()), password_hash: PasswordHash("$argon2id$x".into()) }
    }

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(Email::parse("  Ana@Example.COM ").unwrap().as_str(), "ana@example.com");
        for bad in ["", "ana", "@example.com", "ana@", "ana@example", "ana@@example.com", "a na@example.com", "ana@example.com."]
        {
            assert_eq!(Email::parse(bad), Err(ConsoleUserError::InvalidEmail), "{bad}");
        }
    }

    #[test]
    fn passwords_need_ten_characters_and_never_print() {
        assert_eq!(NewPassword::parse("123456789".into()).unwrap_err(), ConsoleUserError::PasswordTooShort);
        let ok = NewPassword::parse("correct horse".into()).unwrap();
        assert_eq!(format!("{ok:?}"), "[password]");
        assert_eq!(format!("{:?}", PasswordHash("$argon2id$secret".into())), "[password hash]");
        assert!(NewPassword::parse("x".repeat(257)).is_err());
    }

    #[test]
    fn tokens_have_one_shape_and_never_print() {
        let token = OneTimeToken::generate(&mut rand::rngs::OsRng);
        assert_eq!(OneTimeToken::parse(token.expose()), Some(token.clone()));
        assert_eq!(format!("{token:?}"), "[token redacted]");
        assert_eq!(token.hash().0.len(), 64);
        assert!(OneTimeToken::parse("short").is_none());
        assert!(OneTimeToken::parse(&"G".repeat(64)).is_none());
    }

    #[test]
    fn an_invitation_sets_the_password_once_within_a_day() {
        let events = given::<ConsoleUser>(&[invited()]).when(set_password("invite"), &at(now())).unwrap();
        assert!(matches!(events[..], [ConsoleUserEvent::PasswordSet { .. }]));
        let used = [invited(), events[0].clone()];
        assert_eq!(given::<ConsoleUser>(&used).when(set_password("invite"), &at(now())), Err(ConsoleUserError::InvalidLink));
        assert_eq!(
            given::<ConsoleUser>(&[invited()]).when(set_password("other"), &at(now())),
            Err(ConsoleUserError::InvalidLink)
        );
        let late = now() + LINK_VALIDITY;
        assert_eq!(
            given::<ConsoleUser>(&[invited()]).when(set_password("invite"), &at(late)),
            Err(ConsoleUserError::InvalidLink)
        );
    }

    #[test]
    fn a_reset_link_replaces_the_pending_one() {
        let reset = given::<ConsoleUser>(&[invited()])
            .when(ConsoleUserCommand::IssueResetLink { token: TokenHash("reset".into()) }, &at(now()))
            .unwrap();
        let history = [invited(), reset[0].clone()];
        assert_eq!(given::<ConsoleUser>(&history).when(set_password("invite"), &at(now())), Err(ConsoleUserError::InvalidLink));
        assert!(given::<ConsoleUser>(&history).when(set_password("reset"), &at(now())).is_ok());
    }

    #[test]
    fn sign_in_needs_a_password_and_role_changes_say_from_and_to() {
        assert_eq!(
            given::<ConsoleUser>(&[invited()]).when(ConsoleUserCommand::RecordSignIn, &at(now())),
            Err(ConsoleUserError::NoPassword)
        );
        let with_password = [invited(), ConsoleUserEvent::PasswordSet { password_hash: PasswordHash("h".into()) }];
        assert_eq!(
            given::<ConsoleUser>(&with_password).when(ConsoleUserCommand::RecordSignIn, &at(now())),
            Ok(vec![ConsoleUserEvent::SignedIn {}])
        );
        assert_eq!(
            given::<ConsoleUser>(&[invited()]).when(ConsoleUserCommand::ChangeRole { role: Role::Owner }, &at(now())),
            Ok(vec![ConsoleUserEvent::RoleChanged { from: Role::Developer, to: Role::Owner }])
        );
        assert_eq!(
            given::<ConsoleUser>(&[invited()]).when(ConsoleUserCommand::ChangeRole { role: Role::Developer }, &at(now())),
            Ok(vec![])
        );
    }

    #[test]
    fn a_removed_user_can_do_nothing_more() {
        let removed = [invited(), ConsoleUserEvent::Removed {}];
        assert_eq!(given::<ConsoleUser>(&removed).when(set_password("invite"), &at(now())), Err(ConsoleUserError::Removed));
        assert_eq!(given::<ConsoleUser>(&removed).when(ConsoleUserCommand::Remove, &at(now())), Ok(vec![]));
        assert_eq!(given::<ConsoleUser>(&[]).when(ConsoleUserCommand::Remove, &at(now())), Err(ConsoleUserError::NotFound));
    }
}
