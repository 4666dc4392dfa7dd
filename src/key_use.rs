//! When each API key was last used: `api_keys.last_used_at`, shown in the console's key list.
//!
//! Recording a use must not slow the request that used the key, nor write to the database on every
//! request. So a successful authentication only notes the key in memory; at most once a minute per
//! key (per node) a task spawned off the request writes the time, and the `UPDATE` itself skips
//! rows written less than a minute ago, so several nodes together still write about once a minute.
//! A use is not an event: it is a hint for people, and losing one (a crash between the answer and
//! the write) costs nothing.

use domain::ids::KeyId;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often at most a key's last use is written.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// Keys remembered before those written longer than [`INTERVAL`] ago are forgotten.
const MAX_REMEMBERED: usize = 100_000;

/// Which key was written when, by this node.
#[derive(Default)]
struct Written {
    at: HashMap<KeyId, Instant>,
}

impl Written {
    /// Whether a use of `key_id` at `now` is to be written (and if so, remember that it is).
    fn due(&mut self, key_id: &KeyId, now: Instant) -> bool {
        if self.at.get(key_id).is_some_and(|at| now.saturating_duration_since(*at) < INTERVAL) {
            return false;
        }
        if self.at.len() >= MAX_REMEMBERED {
            self.at.retain(|_, at| now.saturating_duration_since(*at) < INTERVAL);
        }
        self.at.insert(key_id.clone(), now);
        true
    }
}

/// Records API keys' last use (see the module's doc).
pub struct KeyUse {
    pool: PgPool,
    written: Mutex<Written>,
}

impl KeyUse {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, written: Mutex::new(Written::default()) }
    }

    /// Note that `key_id` authenticated a request now. Returns at once; the write, if one is due,
    /// happens in a task of its own.
    pub fn note(&self, key_id: &KeyId) {
        if !self.written.lock().expect("not poisoned").due(key_id, Instant::now()) {
            return;
        }
        let (pool, key_id) = (self.pool.clone(), key_id.clone());
        tokio::spawn(async move {
            if let Err(e) = write(&pool, &key_id).await {
                tracing::warn!(key_id = %key_id, error = %e, "could not record an API key's last use");
            }
        });
    }
}

async fn write(pool: &PgPool, key_id: &KeyId) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_keys SET last_used_at = now() \
          WHERE key_id = $1 AND (last_used_at IS NULL OR last_used_at <= now() - make_interval(secs => $2))",
    )
    .bind(key_id.as_str())
    .bind(INTERVAL.as_secs_f64())
    .execute(pool)
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_written_at_most_once_a_minute() {
        let (a, b) = (KeyId::new(), KeyId::new());
        let mut written = Written::default();
        let start = Instant::now();
        assert!(written.due(&a, start), "the first use is written");
        assert!(!written.due(&a, start + Duration::from_secs(59)), "within the minute: not again");
        assert!(written.due(&b, start + Duration::from_secs(1)), "another key is apart");
        assert!(written.due(&a, start + INTERVAL), "a minute later: again");
        assert!(!written.due(&a, start + INTERVAL + Duration::from_secs(30)));
    }
}
