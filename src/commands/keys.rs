//! API-key commands: create, rotate, revoke, what `bridge keys` and the console's API keys page
//! run. Secrets are generated here, returned to the caller once, and only their hashes go any
//! further. Rotating and revoking take an [`OwnedKey`]: the key as a lookup scoped to its account
//! found it.

use super::{execute, load, CommandError};
use crate::api::tenant::Caller;
use crate::queries::owned::OwnedKey;
use crate::store::{EventStore, Metadata};
use domain::account::Account;
use domain::api_key::{ApiKey, ApiKeyCommand, ApiKeyContext, ApiKeyError, ApiKeyEvent, ApiKeySecret, KeyState};
use domain::ids::{AccountId, KeyId};
use domain::Aggregate;

#[derive(Debug, thiserror::Error)]
pub enum KeyCommandError {
    #[error("account not found")]
    AccountNotFound,
    #[error(transparent)]
    Key(#[from] CommandError<ApiKeyError>),
}

impl From<CommandError<domain::account::AccountError>> for KeyCommandError {
    fn from(e: CommandError<domain::account::AccountError>) -> Self {
        match e {
            CommandError::Rejected(_) => KeyCommandError::AccountNotFound,
            CommandError::Store(s) => KeyCommandError::Key(CommandError::Store(s)),
            CommandError::Projection(p) => KeyCommandError::Key(CommandError::Projection(p)),
            CommandError::Db(d) => KeyCommandError::Key(CommandError::Db(d)),
        }
    }
}

fn tenant_of(key: &ApiKey) -> Option<String> {
    key.key.as_ref().map(|k| k.account_id.to_string())
}

/// Decide `command` on the key of `account_id` (a key whose stream names another account is
/// `NotFound`, whatever the caller looked up).
fn decide(
    account_id: &AccountId,
    command: ApiKeyCommand,
) -> impl Fn(&ApiKey) -> Result<Vec<domain::api_key::ApiKeyEvent>, ApiKeyError> + '_ {
    move |state| match &state.key {
        Some(k) if k.account_id != *account_id => Err(ApiKeyError::NotFound),
        _ => state.decide(command.clone(), &ApiKeyContext { now: super::now() }),
    }
}

/// A new key for the caller's account. The secret is in the result and nowhere else.
pub async fn create(
    store: &EventStore,
    caller: &Caller,
    name: Option<String>,
) -> Result<(KeyState, ApiKeySecret), KeyCommandError> {
    let account_id = &caller.account_id;
    let (account, _) = load::<Account>(store, account_id.as_str()).await?;
    if account.opened.is_none() {
        return Err(KeyCommandError::AccountNotFound);
    }
    let secret = ApiKeySecret::generate(&mut rand::rngs::OsRng);
    let key_id = KeyId::new();
    let command = ApiKeyCommand::Create { key_id: key_id.clone(), account_id: account_id.clone(), name, hash: secret.hash() };
    let (state, _) = execute(store, key_id.as_str(), tenant_of, &caller.metadata, decide(account_id, command)).await?;
    Ok((state.key.expect("created"), secret))
}

/// A new secret for the key; the old one ends now or after `grace`. Returns the key, the new secret
/// and when the old secret stops working (`None`: already).
pub async fn rotate(
    store: &EventStore,
    metadata: &Metadata,
    key: &OwnedKey,
    grace: Option<chrono::Duration>,
) -> Result<(KeyState, ApiKeySecret, Option<chrono::DateTime<chrono::Utc>>), CommandError<ApiKeyError>> {
    let secret = ApiKeySecret::generate(&mut rand::rngs::OsRng);
    let command = ApiKeyCommand::Rotate { hash: secret.hash(), grace };
    let (state, stored) = execute(store, key.id().as_str(), tenant_of, metadata, decide(key.account_id(), command)).await?;
    let until = stored.iter().find_map(|e| match e.decode::<ApiKeyEvent>() {
        Ok(ApiKeyEvent::Rotated { previous_valid_until, .. }) => previous_valid_until,
        _ => None,
    });
    Ok((state.key.expect("exists"), secret, until))
}

/// Revoke the key: it stops authenticating at once. Returns whether it was active before.
pub async fn revoke(store: &EventStore, metadata: &Metadata, key: &OwnedKey) -> Result<bool, CommandError<ApiKeyError>> {
    let (_, stored) =
        execute(store, key.id().as_str(), tenant_of, metadata, decide(key.account_id(), ApiKeyCommand::Revoke)).await?;
    Ok(!stored.is_empty())
}
