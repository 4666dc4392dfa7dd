//! An account's API keys: the list and one key. Secrets are never here (only their hashes exist,
//! in `api_key_secrets`, which this module does not read).

use super::owned::OwnedKey;
use chrono::{DateTime, Utc};
use domain::ids::{AccountId, KeyId};
use sqlx::PgPool;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyView {
    pub key_id: String,
    pub name: Option<String>,
    /// `active` or `revoked`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// When the key last authenticated a request (to the minute: see [`crate::key_use`]).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl KeyView {
    pub fn is_active(&self) -> bool {
        self.status == "active"
    }
}

const COLUMNS: &str = "key_id, name, status, created_at, rotated_at, revoked_at, last_used_at";

/// Every key of the account, oldest first.
pub async fn list(pool: &PgPool, account_id: &AccountId) -> Result<Vec<KeyView>, sqlx::Error> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_keys WHERE account_id = $1 ORDER BY key_id"))
        .bind(account_id.as_str())
        .fetch_all(pool)
        .await
}

/// The account's key (what the commands on a key take) and how it is now; `None` if the account
/// has no such key (another account's key does not exist for this one).
pub async fn owned(pool: &PgPool, account_id: &AccountId, key_id: &KeyId) -> Result<Option<(OwnedKey, KeyView)>, sqlx::Error> {
    let view: Option<KeyView> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_keys WHERE key_id = $1 AND account_id = $2"))
        .bind(key_id.as_str())
        .bind(account_id.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(view.map(|view| (OwnedKey::vouched(account_id.clone(), key_id.clone()), view)))
}

/// The key as the operator reaches it, in whichever account holds it (the CLI acts for every
/// account); `None` if there is no such key.
pub async fn for_operator(pool: &PgPool, key_id: &KeyId) -> Result<Option<(OwnedKey, KeyView)>, sqlx::Error> {
    let account: Option<String> = sqlx::query_scalar("SELECT account_id FROM api_keys WHERE key_id = $1")
        .bind(key_id.as_str())
        .fetch_optional(pool)
        .await?;
    match account.map(|a| AccountId::parse(&a)) {
        Some(Ok(account_id)) => owned(pool, &account_id, key_id).await,
        Some(Err(e)) => Err(sqlx::Error::Decode(Box::new(e))),
        None => Ok(None),
    }
}
