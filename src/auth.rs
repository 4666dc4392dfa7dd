//! Authentication of API keys from a cached key index.
//!
//! A presented key is hashed (SHA-256) and looked up in `api_key_secrets`; the answer, joined with
//! the account, is cached per hash. Appends to an account's `account` or `api_key` streams are
//! announced over NOTIFY (see `projections::notify`), and every node drops that account's cached
//! entries when it hears of them; if the LISTEN connection ever drops, the whole cache is dropped.
//! Entries also expire on their own after a minute, a backstop that bounds any staleness.

use chrono::{DateTime, Utc};
use domain::account::SubscriptionStatus;
use domain::api_key::{ApiKeySecret, KeyHash};
use domain::ids::{AccountId, KeyId};
use projections::notify::Change;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX_ENTRIES: usize = 100_000;

/// The authenticated caller: the account a key belongs to, as of the lookup.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key_id: KeyId,
    pub account_id: AccountId,
    pub account_name: String,
    pub plan: String,
    pub status: SubscriptionStatus,
    pub cycle_anchor: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    /// Unknown, revoked, or rotated out (past its grace period).
    Invalid,
}

#[derive(Clone)]
struct Cached {
    identity: Option<Arc<Identity>>,
    valid_until: Option<DateTime<Utc>>,
    loaded: Instant,
}

pub struct Authenticator {
    pool: PgPool,
    cache: RwLock<HashMap<KeyHash, Cached>>,
}

impl Authenticator {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, cache: RwLock::new(HashMap::new()) }
    }

    pub async fn authenticate(&self, presented: &str) -> Result<Result<Arc<Identity>, AuthFailure>, sqlx::Error> {
        let Some(secret) = ApiKeySecret::parse(presented) else {
            return Ok(Err(AuthFailure::Malformed));
        };
        let hash = secret.hash();
        let now = Utc::now();
        let cached = self.cache.read().expect("not poisoned").get(&hash).cloned();
        let entry = match cached {
            Some(c) if c.loaded.elapsed() < CACHE_TTL => c,
            _ => {
                let entry = self.lookup(&hash).await?;
                let mut cache = self.cache.write().expect("not poisoned");
                if cache.len() >= CACHE_MAX_ENTRIES {
                    cache.clear();
                }
                // Unknown keys are not cached: a flood of random keys must not evict real ones.
                if entry.identity.is_some() {
                    cache.insert(hash, entry.clone());
                }
                entry
            }
        };
        match (entry.identity, entry.valid_until) {
            (Some(_), Some(until)) if until <= now => Ok(Err(AuthFailure::Invalid)),
            (Some(identity), _) => Ok(Ok(identity)),
            (None, _) => Ok(Err(AuthFailure::Invalid)),
        }
    }

    async fn lookup(&self, hash: &KeyHash) -> Result<Cached, sqlx::Error> {
        type Row = (String, String, Option<DateTime<Utc>>, String, String, String, DateTime<Utc>, DateTime<Utc>);
        let row: Option<Row> = sqlx::query_as(
            "SELECT k.key_id, k.account_id, s.valid_until, a.name, a.plan, a.status, a.cycle_anchor, a.created_at \
               FROM api_key_secrets s \
               JOIN api_keys k ON k.key_id = s.key_id AND k.status = 'active' \
               JOIN accounts a ON a.account_id = k.account_id \
              WHERE s.key_hash = $1",
        )
        .bind(&hash.0)
        .fetch_optional(&self.pool)
        .await?;
        let loaded = Instant::now();
        let Some((key_id, account_id, valid_until, account_name, plan, status, cycle_anchor, created_at)) = row else {
            return Ok(Cached { identity: None, valid_until: None, loaded });
        };
        let identity = Identity {
            key_id: KeyId::parse(&key_id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            account_id: AccountId::parse(&account_id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            account_name,
            plan,
            status: if status == "suspended" { SubscriptionStatus::Suspended } else { SubscriptionStatus::Active },
            cycle_anchor,
            created_at,
        };
        Ok(Cached { identity: Some(Arc::new(identity)), valid_until, loaded })
    }

    /// Forget what may have changed.
    pub fn invalidate(&self, change: &Change) {
        let mut cache = self.cache.write().expect("not poisoned");
        match change {
            Change::Reset => cache.clear(),
            Change::Appended(a) if a.stream_types.iter().any(|t| t == "account" || t == "api_key") => {
                cache.retain(|_, c| c.identity.as_ref().is_some_and(|i| i.account_id.as_str() != a.tenant));
            }
            Change::Appended(_) => {}
        }
    }

    /// Keep the cache in step with the log until `shutdown`.
    pub async fn follow(self: Arc<Self>, mut changes: broadcast::Receiver<Change>, shutdown: CancellationToken) {
        loop {
            let change = tokio::select! {
                _ = shutdown.cancelled() => return,
                change = changes.recv() => change,
            };
            match change {
                Ok(change) => self.invalidate(&change),
                Err(broadcast::error::RecvError::Lagged(_)) => self.invalidate(&Change::Reset),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
