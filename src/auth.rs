//! Authentication of API keys from a cached key index.
//!
//! A presented key is hashed (SHA-256) and looked up in `api_key_secrets`; the answer, joined with
//! the account, is cached per hash. Appends to an account's `account` or `api_key` streams are
//! announced over NOTIFY (see `projections::notify`), and every node drops that account's cached
//! entries when it hears of them; if the LISTEN connection ever drops, the whole cache is dropped
//! once it listens again. Entries also expire on their own after a minute, a backstop that bounds
//! any staleness.
//!
//! Unknown keys are remembered too, for a few seconds (`unknown_key_cache_ms`) and apart from the
//! known ones (a flood of random keys must not evict real entries), so a flood of one bad key does
//! not reach the database; any change to any key forgets them, so a key created just after a failed
//! attempt works as soon as the node hears of it.
//!
//! An answer from the database is cached only if no invalidation came while it was being read:
//! a lookup that read a key just before its revocation committed must not put it back afterwards.
//!
//! A key that authenticates is noted as used ([`crate::key_use`]), off the request's path.

use crate::key_use::KeyUse;
use chrono::{DateTime, Utc};
use domain::account::SubscriptionStatus;
use domain::api_key::{ApiKeySecret, KeyHash};
use domain::ids::{AccountId, KeyId};
use projections::notify::Change;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const CACHE_TTL: Duration = Duration::from_secs(60);
const CACHE_MAX_ENTRIES: usize = 100_000;
const UNKNOWN_MAX_ENTRIES: usize = 10_000;

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

/// What the key index says about a key hash.
#[derive(Debug, Clone)]
enum Answer {
    Known { identity: Arc<Identity>, valid_until: Option<DateTime<Utc>> },
    Unknown,
}

/// Where the cache stood when a database lookup began (see [`KeyCache::insert`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Generation(u64);

/// A known key as read from the database at `loaded`.
struct KnownKey {
    loaded: Instant,
    identity: Arc<Identity>,
    valid_until: Option<DateTime<Utc>>,
}

/// Known keys, recently unknown keys, and a generation bumped by every invalidation.
struct KeyCache {
    unknown_ttl: Duration,
    generation: u64,
    known: HashMap<KeyHash, KnownKey>,
    /// When each was found unknown.
    unknown: HashMap<KeyHash, Instant>,
}

impl KeyCache {
    fn new(unknown_ttl: Duration) -> Self {
        Self { unknown_ttl, generation: 0, known: HashMap::new(), unknown: HashMap::new() }
    }

    /// The remembered answer, or the generation a lookup in the database starts from.
    fn get(&self, hash: &KeyHash, now: Instant) -> Result<Answer, Generation> {
        if let Some(known) = self.known.get(hash).filter(|k| now.duration_since(k.loaded) < CACHE_TTL) {
            return Ok(Answer::Known { identity: known.identity.clone(), valid_until: known.valid_until });
        }
        match self.unknown.get(hash) {
            Some(loaded) if now.duration_since(*loaded) < self.unknown_ttl => Ok(Answer::Unknown),
            _ => Err(Generation(self.generation)),
        }
    }

    /// Remember what a lookup that began at `since` found, unless an invalidation came in the
    /// meantime: the answer may then predate the revocation, suspension or creation announced.
    fn insert(&mut self, since: Generation, hash: KeyHash, answer: &Answer, now: Instant) {
        if since != Generation(self.generation) {
            return;
        }
        match answer {
            Answer::Known { identity, valid_until } => {
                if self.known.len() >= CACHE_MAX_ENTRIES {
                    self.known.clear();
                }
                self.known.insert(hash, KnownKey { loaded: now, identity: identity.clone(), valid_until: *valid_until });
            }
            Answer::Unknown => {
                if self.unknown.len() >= UNKNOWN_MAX_ENTRIES {
                    self.unknown.clear();
                }
                self.unknown.insert(hash, now);
            }
        }
    }

    /// Forget what `change` may have changed.
    fn invalidate(&mut self, change: &Change) {
        match change {
            Change::Reset => {
                self.known.clear();
                self.unknown.clear();
            }
            Change::Appended(a) if a.stream_types.iter().any(|t| t == "account" || t == "api_key") => {
                self.known.retain(|_, k| k.identity.account_id.as_str() != a.tenant);
                // Which unknown key a new or rotated key is, only its hash would say.
                if a.stream_types.iter().any(|t| t == "api_key") {
                    self.unknown.clear();
                }
            }
            Change::Appended(_) => return,
        }
        self.generation += 1;
    }
}

pub struct Authenticator {
    pool: PgPool,
    cache: RwLock<KeyCache>,
    lookups: AtomicU64,
    /// Each key's last use, for the console (written off the request's path).
    last_use: KeyUse,
}

impl Authenticator {
    /// `unknown_ttl`: how long a key found unknown is refused without asking the database again.
    pub fn new(pool: PgPool, unknown_ttl: Duration) -> Self {
        let last_use = KeyUse::new(pool.clone());
        Self { pool, cache: RwLock::new(KeyCache::new(unknown_ttl)), lookups: AtomicU64::new(0), last_use }
    }

    pub async fn authenticate(&self, presented: &str) -> Result<Result<Arc<Identity>, AuthFailure>, sqlx::Error> {
        let Some(secret) = ApiKeySecret::parse(presented) else {
            return Ok(Err(AuthFailure::Malformed));
        };
        let hash = secret.hash();
        let cached = self.cache.read().expect("not poisoned").get(&hash, Instant::now());
        let answer = match cached {
            Ok(answer) => answer,
            Err(since) => {
                let answer = self.lookup(&hash).await?;
                self.cache.write().expect("not poisoned").insert(since, hash, &answer, Instant::now());
                answer
            }
        };
        match answer {
            Answer::Known { valid_until: Some(until), .. } if until <= Utc::now() => Ok(Err(AuthFailure::Invalid)),
            Answer::Known { identity, .. } => {
                self.last_use.note(&identity.key_id);
                Ok(Ok(identity))
            }
            Answer::Unknown => Ok(Err(AuthFailure::Invalid)),
        }
    }

    /// How many times keys were looked up in the database rather than answered from memory.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    async fn lookup(&self, hash: &KeyHash) -> Result<Answer, sqlx::Error> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
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
        let Some((key_id, account_id, valid_until, account_name, plan, status, cycle_anchor, created_at)) = row else {
            return Ok(Answer::Unknown);
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
        Ok(Answer::Known { identity: Arc::new(identity), valid_until })
    }

    /// Forget what may have changed.
    pub fn invalidate(&self, change: &Change) {
        self.cache.write().expect("not poisoned").invalidate(change);
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

#[cfg(test)]
mod tests {
    use super::*;
    use projections::notify::Announcement;

    fn hash(n: usize) -> KeyHash {
        KeyHash(format!("{n:064x}"))
    }

    fn known(account: &str) -> Answer {
        let identity = Identity {
            key_id: KeyId::parse("key_0000000000000000000000000a").unwrap(),
            account_id: AccountId::parse(account).unwrap(),
            account_name: "Acme".into(),
            plan: "pro".into(),
            status: SubscriptionStatus::Active,
            cycle_anchor: Utc::now(),
            created_at: Utc::now(),
        };
        Answer::Known { identity: Arc::new(identity), valid_until: None }
    }

    fn appended(tenant: &str, stream_type: &str) -> Change {
        Change::Appended(Announcement { tenant: tenant.into(), stream_types: vec![stream_type.into()], origin: None })
    }

    const TTL: Duration = Duration::from_secs(5);
    const ACME: &str = "acc_0000000000000000000000000a";
    const OTHER: &str = "acc_0000000000000000000000000b";

    #[test]
    fn an_answer_read_before_an_invalidation_is_not_cached_after_it() {
        let now = Instant::now();
        for (answer, change) in [
            (known(ACME), appended(ACME, "api_key")),      // revoked while it was being read
            (known(ACME), appended(ACME, "account")),      // suspended while it was being read
            (known(ACME), Change::Reset),                  // notifications missed while it was being read
            (Answer::Unknown, appended(OTHER, "api_key")), // created while it was being read
        ] {
            let mut cache = KeyCache::new(TTL);
            let since = cache.get(&hash(1), now).unwrap_err();
            cache.invalidate(&change);
            cache.insert(since, hash(1), &answer, now);
            assert!(cache.get(&hash(1), now).is_err(), "{change:?}: the next request must read the database again");
        }
        // With no invalidation in between, the answer is remembered.
        let mut cache = KeyCache::new(TTL);
        let since = cache.get(&hash(1), now).unwrap_err();
        cache.invalidate(&appended(ACME, "message"));
        cache.insert(since, hash(1), &known(ACME), now);
        assert!(matches!(cache.get(&hash(1), now), Ok(Answer::Known { .. })));
    }

    #[test]
    fn unknown_keys_are_remembered_briefly_apart_from_known_ones_until_any_key_changes() {
        let now = Instant::now();
        let mut cache = KeyCache::new(TTL);
        cache.insert(cache.get(&hash(0), now).unwrap_err(), hash(0), &known(ACME), now);
        for n in 1..=UNKNOWN_MAX_ENTRIES * 2 {
            cache.insert(cache.get(&hash(n), now).unwrap_err(), hash(n), &Answer::Unknown, now);
        }
        assert!(matches!(cache.get(&hash(0), now), Ok(Answer::Known { .. })), "a flood of unknown keys evicts no known one");
        let last = hash(UNKNOWN_MAX_ENTRIES * 2);
        assert!(matches!(cache.get(&last, now), Ok(Answer::Unknown)));
        assert!(cache.get(&last, now + TTL).is_err(), "only for a few seconds");

        // Another account's key changes: any unknown key may be the one created.
        cache.invalidate(&appended(OTHER, "api_key"));
        assert!(cache.get(&last, now).is_err());
        assert!(matches!(cache.get(&hash(0), now), Ok(Answer::Known { .. })), "known keys of other accounts stay");
    }
}
