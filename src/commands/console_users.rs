//! Console-user commands: invite, set a password by a one-time link, record a sign-in, change a
//! role, issue a reset link. One-time tokens are generated here and returned once; only their
//! hashes go further. Passwords arrive already hashed (see `console::password`).

use super::{execute, load, CommandError};
use crate::store::{Actor, EventStore, Metadata};
use domain::account::Account;
use domain::console_user::{
    ConsoleUser, ConsoleUserCommand, ConsoleUserContext, ConsoleUserError, Email, OneTimeToken, PasswordHash, Role, UserState,
};
use domain::ids::{AccountId, ConsoleUserId};
use domain::Aggregate;
use sqlx::PgPool;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleUserCommandError {
    #[error("account not found")]
    AccountNotFound,
    /// One email is one user, in any account (the projection's unique index says so).
    #[error("a console user with this email already exists")]
    EmailTaken,
    #[error(transparent)]
    User(CommandError<ConsoleUserError>),
}

impl From<CommandError<ConsoleUserError>> for ConsoleUserCommandError {
    fn from(e: CommandError<ConsoleUserError>) -> Self {
        match &e {
            CommandError::Store(s) if s.violated_constraint() == Some(projections::console_users::EMAIL_TAKEN) => {
                Self::EmailTaken
            }
            _ => Self::User(e),
        }
    }
}

impl ConsoleUserCommandError {
    /// The domain's refusal, if that is what it is.
    pub fn rejection(&self) -> Option<&ConsoleUserError> {
        match self {
            Self::User(CommandError::Rejected(e)) => Some(e),
            _ => None,
        }
    }
}

fn tenant_of(user: &ConsoleUser) -> Option<String> {
    user.user.as_ref().map(|u| u.account_id.to_string())
}

async fn run(
    store: &EventStore,
    metadata: &Metadata,
    user_id: &ConsoleUserId,
    command: ConsoleUserCommand,
) -> Result<(UserState, bool), ConsoleUserCommandError> {
    let (state, stored) = execute(store, user_id.as_str(), tenant_of, metadata, |state: &ConsoleUser| {
        state.decide(command.clone(), &ConsoleUserContext { now: super::now() })
    })
    .await?;
    let user = state.user.ok_or(CommandError::Rejected(ConsoleUserError::NotFound))?;
    Ok((user, !stored.is_empty()))
}

/// A new user of the account, with a one-time link token (valid 24 hours) to set a password.
pub async fn invite(
    store: &EventStore,
    metadata: &Metadata,
    account_id: &AccountId,
    email: Email,
    role: Role,
) -> Result<(UserState, OneTimeToken), ConsoleUserCommandError> {
    invite_as(store, metadata, ConsoleUserId::new(), account_id, email, role).await
}

/// [`invite`] with the new user's id chosen by the caller (self sign-up names the user as the
/// actor of its own account's opening).
pub async fn invite_as(
    store: &EventStore,
    metadata: &Metadata,
    user_id: ConsoleUserId,
    account_id: &AccountId,
    email: Email,
    role: Role,
) -> Result<(UserState, OneTimeToken), ConsoleUserCommandError> {
    let (account, _) = load::<Account>(store, account_id.as_str()).await.map_err(|_| ConsoleUserCommandError::AccountNotFound)?;
    if account.opened.is_none() {
        return Err(ConsoleUserCommandError::AccountNotFound);
    }
    let token = OneTimeToken::generate(&mut rand::rngs::OsRng);
    let command =
        ConsoleUserCommand::Invite { user_id: user_id.clone(), account_id: account_id.clone(), email, role, token: token.hash() };
    let (user, _) = run(store, metadata, &user_id, command).await?;
    Ok((user, token))
}

/// The user a one-time link (invitation or reset) belongs to, if it may still be used.
pub async fn link_holder(pool: &PgPool, token: &OneTimeToken) -> Result<Option<ConsoleUserId>, sqlx::Error> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT user_id FROM console_users WHERE link_token_hash = $1 AND link_expires_at > now() AND removed_at IS NULL",
    )
    .bind(token.hash().0)
    .fetch_optional(pool)
    .await?;
    Ok(id.and_then(|id| ConsoleUserId::parse(&id).ok()))
}

/// Set the password of the user the link belongs to, consuming the link. The user is the actor.
pub async fn set_password(
    store: &EventStore,
    user_id: &ConsoleUserId,
    token: &OneTimeToken,
    password_hash: PasswordHash,
    request_id: Option<String>,
) -> Result<UserState, ConsoleUserCommandError> {
    let metadata = Metadata::new(Actor::ConsoleUser { user_id: user_id.to_string() }).with_request_id(request_id);
    let command = ConsoleUserCommand::SetPassword { token: token.hash(), password_hash };
    run(store, &metadata, user_id, command).await.map(|(user, _)| user)
}

/// Record a successful sign-in.
pub async fn record_sign_in(
    store: &EventStore,
    metadata: &Metadata,
    user_id: &ConsoleUserId,
) -> Result<(), ConsoleUserCommandError> {
    run(store, metadata, user_id, ConsoleUserCommand::RecordSignIn).await.map(|_| ())
}

/// Change the role of a user of `account_id` (another account's user is not found). Whether the
/// role changed.
pub async fn change_role(
    store: &EventStore,
    metadata: &Metadata,
    account_id: &AccountId,
    user_id: &ConsoleUserId,
    role: Role,
) -> Result<(UserState, bool), ConsoleUserCommandError> {
    let (state, _) = load::<ConsoleUser>(store, user_id.as_str()).await?;
    if state.user.as_ref().is_none_or(|u| &u.account_id != account_id) {
        return Err(CommandError::Rejected(ConsoleUserError::NotFound).into());
    }
    run(store, metadata, user_id, ConsoleUserCommand::ChangeRole { role }).await
}

/// A new one-time link for the user with this email to set a new password (the previous link,
/// if any, stops working).
pub async fn issue_reset_link(
    store: &EventStore,
    pool: &PgPool,
    metadata: &Metadata,
    email: &Email,
) -> Result<(UserState, OneTimeToken), ConsoleUserCommandError> {
    let id: Option<String> = sqlx::query_scalar("SELECT user_id FROM console_users WHERE lower(email) = lower($1)")
        .bind(email.as_str())
        .fetch_optional(pool)
        .await
        .map_err(CommandError::Db)?;
    let user_id = id.and_then(|id| ConsoleUserId::parse(&id).ok()).ok_or(CommandError::Rejected(ConsoleUserError::NotFound))?;
    let token = OneTimeToken::generate(&mut rand::rngs::OsRng);
    let (user, _) = run(store, metadata, &user_id, ConsoleUserCommand::IssueResetLink { token: token.hash() }).await?;
    Ok((user, token))
}
