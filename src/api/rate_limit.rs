//! Request rates (`[rate_limits]`): per API key on every authenticated REST and MCP request (the
//! tenant extractor checks it), per webhook on `POST /v1/webhooks/{id}/test` (each one makes the
//! server call the webhook's URL) and per line on sandbox inbound. Over a limit the answer is 429
//! `rate_limited` with `Retry-After`; nothing is done. Limits are per node.
//!
//! Keys are only ever ids that exist (an authenticated key, a webhook or line of the caller's
//! account), and limiters forget the ones that have been quiet long enough to be back to a full
//! burst every [`SWEEP_EVERY`].

use super::error::ApiError;
use crate::config::{RateLimit, RateLimitsConfig};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use domain::ids::{KeyId, LineId, WebhookId};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The node's limiters; the router puts them in every request's extensions.
#[derive(Clone)]
pub struct RateLimits(Arc<Limiters>);

struct Limiters {
    api_key: Limiter<KeyId>,
    webhook_test: Limiter<WebhookId>,
    sandbox_inbound: Limiter<LineId>,
}

impl RateLimits {
    pub fn new(config: &RateLimitsConfig) -> Self {
        Self(Arc::new(Limiters {
            api_key: Limiter::new(config.api_key, "this API key"),
            webhook_test: Limiter::new(config.webhook_test, "tests of this webhook"),
            sandbox_inbound: Limiter::new(config.sandbox_inbound, "inbound messages on this sandbox line"),
        }))
    }

    pub fn api_key(&self, key: &KeyId) -> Result<(), ApiError> {
        self.0.api_key.check(key)
    }

    pub fn webhook_test(&self, webhook: &WebhookId) -> Result<(), ApiError> {
        self.0.webhook_test.check(webhook)
    }

    pub fn sandbox_inbound(&self, line: &LineId) -> Result<(), ApiError> {
        self.0.sandbox_inbound.check(line)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RateLimits {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<RateLimits>().cloned().ok_or_else(|| ApiError::server(anyhow::anyhow!("no rate limiters")))
    }
}

/// One keyed limit (the console's sign-in limits use it too).
pub(crate) struct Limiter<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    config: RateLimit,
    /// What is limited, for the message: "Too many requests for {what}".
    what: &'static str,
    last_sweep: Mutex<Instant>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub(crate) fn new(config: RateLimit, what: &'static str) -> Self {
        // Validated at start: per_second at least one a day, burst at least 1.
        let period = Duration::from_secs_f64(1.0 / config.per_second);
        let burst = NonZeroU32::new(config.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX)).allow_burst(burst);
        Self { limiter: DefaultKeyedRateLimiter::keyed(quota), config, what, last_sweep: Mutex::new(Instant::now()) }
    }

    fn check(&self, key: &K) -> Result<(), ApiError> {
        self.wait_before(key).map_err(|wait| {
            let RateLimit { per_second, burst } = self.config;
            ApiError::rate_limited(
                format!("Too many requests for {}: at most {per_second} a second, {burst} at once.", self.what),
                wait,
            )
        })
    }

    /// Count one request for `key`; over the limit, how long until the next one is allowed.
    pub(crate) fn wait_before(&self, key: &K) -> Result<(), Duration> {
        self.sweep_now_and_then();
        self.limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Forget keys whose state is back to a full burst; one caller at a time, the others go on.
    fn sweep_now_and_then(&self) {
        let Ok(mut last) = self.last_sweep.try_lock() else { return };
        if last.elapsed() >= SWEEP_EVERY {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
            *last = Instant::now();
        }
    }
}
