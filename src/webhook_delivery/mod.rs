//! The webhook delivery worker: sends the deliveries the webhook projector creates, signed, with
//! retries on a backoff schedule, the quota applied at the first attempt, and webhooks disabled
//! when their endpoint is gone (410) or has failed for too long.
//!
//! - [`queue`]: claiming and recording in PostgreSQL (shared by every worker of every node);
//! - [`sender`]: one signed HTTP attempt.
//!
//! The HTTP handlers use the same [`Deliverer`] for `POST /v1/webhooks/{id}/test` and for a
//! manual retry, so every attempt goes through one path.

pub mod queue;
pub mod sender;

use crate::commands::webhooks as webhook_commands;
use crate::config::Config;
use crate::queries::owned::OwnedWebhook;
use crate::secrets::MasterKey;
use crate::store::{Actor, EventStore, Metadata};
use chrono::Utc;
use domain::account::Account;
use domain::ids::{AccountId, EventId, WebhookId};
use domain::plan::PlanCatalog;
use domain::webhook::{SealedSecret, WebhookCommand};
use domain::webhook_delivery::{self as wd, Notification, RetrySchedule, Verdict};
use domain::Aggregate;
use projections::notify::Change;
use projections::LogPosition;
use queue::{Charge, ClaimRefused, Claimed, Next};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub struct DeliveryConfig {
    pub node: String,
    pub timeout: Duration,
    pub schedule: RetrySchedule,
    pub disable_after: Duration,
    pub concurrency: usize,
    pub poll: Duration,
    pub held_recheck: Duration,
    pub allow_private: bool,
}

impl DeliveryConfig {
    pub fn from_config(config: &Config, node: &str) -> Self {
        let w = &config.webhooks;
        Self {
            node: node.to_owned(),
            timeout: Duration::from_millis(w.timeout_ms),
            schedule: RetrySchedule {
                delays: w.retry_schedule_ms.iter().map(|ms| Duration::from_millis(*ms)).collect(),
                jitter: w.retry_jitter,
            },
            disable_after: Duration::from_millis(w.disable_after_ms),
            concurrency: w.concurrency,
            poll: Duration::from_millis(w.poll_ms),
            held_recheck: Duration::from_millis(w.held_recheck_ms),
            allow_private: config.allow_private_urls,
        }
    }

    /// How long a claim lasts: longer than an attempt can take (its timeout), with room for
    /// the writes around it.
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(10)
    }
}

/// What an attempt came to, as the test and retry endpoints report it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptReport {
    pub delivery_id: String,
    /// Whether the receiver answered 2xx.
    pub delivered: bool,
    /// The receiver's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// How long the receiver took, in milliseconds.
    pub latency_ms: u64,
    /// What went wrong, if it did.
    pub error: Option<String>,
    /// When it is tried again, if it failed and will be.
    pub next_attempt_at: Option<chrono::DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("delivery not found")]
    NotFound,
    #[error("the delivery is being sent right now")]
    InFlight,
    #[error("{reason}")]
    Held { reason: String, quota: Option<queue::QuotaUsed> },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Sends deliveries. Cheap to clone.
#[derive(Clone)]
pub struct Deliverer {
    store: EventStore,
    plans: Arc<PlanCatalog>,
    master_key: Arc<MasterKey>,
    client: reqwest::Client,
    config: Arc<DeliveryConfig>,
    wake: Arc<Notify>,
}

impl Deliverer {
    pub fn new(store: EventStore, plans: Arc<PlanCatalog>, master_key: Arc<MasterKey>, config: DeliveryConfig) -> Self {
        let client = crate::net::outbound_client(config.allow_private)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .expect("an HTTP client");
        Self { store, plans, master_key, client, config: Arc::new(config), wake: Arc::new(Notify::new()) }
    }

    /// Look for due deliveries now (a webhook was enabled again, say).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The worker: claims due deliveries whenever the webhook projector makes progress, a
    /// delivery finishes, or `poll` passes, and keeps up to `concurrency` in flight.
    pub async fn run(
        self,
        mut projector: watch::Receiver<LogPosition>,
        mut changes: broadcast::Receiver<Change>,
        shutdown: CancellationToken,
    ) {
        let pool = self.store.pool().clone();
        match queue::release_node(&pool, &self.config.node).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(deliveries = n, "took back the webhook deliveries this node had in flight before it restarted")
            }
            Err(e) => tracing::error!(error = %e, "could not release this node's earlier webhook claims"),
        }
        let mut in_flight = JoinSet::new();
        // The earliest retry this node scheduled: waited for exactly, not until the next poll.
        let mut next_due: Option<chrono::DateTime<Utc>> = None;
        let mut look = true;
        loop {
            let free = self.config.concurrency.saturating_sub(in_flight.len());
            let mut full_batch = false;
            if look && free > 0 {
                match queue::claim_due(&pool, &self.config.node, self.config.lease(), free as i64).await {
                    Ok(claimed) => {
                        full_batch = claimed.len() == free;
                        for c in claimed {
                            in_flight.spawn(self.clone().lane(c, shutdown.clone()));
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "could not claim webhook deliveries"),
                }
            }
            if full_batch && in_flight.len() < self.config.concurrency {
                continue;
            }
            let now = Utc::now();
            if next_due.is_some_and(|at| at <= now) {
                next_due = None;
            }
            let wait = next_due.map_or(self.config.poll, |at| (at - now).to_std().unwrap_or_default().min(self.config.poll));
            look = true;
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                changed = projector.changed() => if changed.is_err() { tokio::time::sleep(self.config.poll).await },
                Ok(Change::Appended(a)) = changes.recv() => {
                    // A plan change may make room in the quota: held deliveries are due at once.
                    // Other appends concern the projector, whose progress wakes this loop.
                    look = a.stream_types.iter().any(|t| t == Account::STREAM_TYPE)
                        && queue::release_held(&pool, &a.tenant).await.inspect_err(|e| {
                            tracing::warn!(error = %e, "could not release held webhook deliveries");
                        }).is_ok_and(|n| n > 0);
                }
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Ok(Some(at)) = done {
                        next_due = Some(next_due.map_or(at, |due| due.min(at)));
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // Attempts end within their timeout; let them record what they got.
        while in_flight.join_next().await.is_some() {}
    }

    /// Deliver `claimed`, then, while they succeed, the next deliveries of the same webhook and
    /// line, in order. Returns when the worker should look again: the earliest retry or recheck
    /// this scheduled.
    async fn lane(self, mut claimed: Claimed, shutdown: CancellationToken) -> Option<chrono::DateTime<Utc>> {
        loop {
            let (webhook_id, line_key) = (claimed.webhook_id.clone(), claimed.line_key.clone());
            match self.attempt(claimed, true).await {
                Ok(report) if report.delivered => {}
                Ok(report) => return report.next_attempt_at,
                Err(RetryError::Held { .. }) => return Some(Utc::now() + self.config.held_recheck),
                Err(RetryError::InFlight | RetryError::NotFound) => return None,
                Err(e) => {
                    tracing::error!(error = ?e, "webhook delivery attempt failed");
                    return None;
                }
            }
            if shutdown.is_cancelled() {
                return None;
            }
            let pool = self.store.pool();
            match queue::claim_next_in_lane(pool, &self.config.node, self.config.lease(), &webhook_id, &line_key).await {
                Ok(Some(next)) => claimed = next,
                Ok(None) => return None,
                Err(e) => {
                    tracing::error!(error = %e, "could not claim the next webhook delivery of a line");
                    return None;
                }
            }
        }
    }

    /// One attempt of a claimed delivery: charge it if it was never sent, sign and send it, record
    /// the outcome, and disable the webhook if it is gone or has failed for too long.
    async fn attempt(&self, claimed: Claimed, retry_on_failure: bool) -> Result<AttemptReport, RetryError> {
        if claimed.billable && !claimed.charged {
            match queue::charge(&self.store, &self.plans, &self.config.node, &claimed, self.config.held_recheck).await? {
                Charge::Go => {}
                Charge::Held { reason, quota } => return Err(RetryError::Held { reason, quota }),
                Charge::Lost => return Err(RetryError::InFlight),
            }
        }
        let started_at = Utc::now();
        let attempt = match self.master_key.open(&SealedSecret(claimed.secret_sealed.clone())) {
            Ok(secret) => {
                sender::send(
                    &self.client,
                    self.config.allow_private,
                    self.config.timeout,
                    sender::Request {
                        url: &claimed.url,
                        secret: secret.expose(),
                        event_type: &claimed.event_type,
                        delivery_id: &claimed.delivery_id,
                        body: &claimed.body,
                    },
                )
                .await
            }
            // Sealed under another master key (nodes that do not share one; a node checks its key
            // at start, so this is a database restored under another key). Recorded as a failed
            // attempt, retried like any other, so the delivery and its lane never stay stuck.
            Err(e) => {
                tracing::error!(delivery = %claimed.delivery_id, webhook = %claimed.webhook_id, error = %e,
                    "a webhook's secret does not open with this node's master key");
                sender::Attempt {
                    status: None,
                    retry_after: None,
                    duration: Duration::ZERO,
                    error: Some("not sent: the webhook's signing secret cannot be opened with this node's master key".into()),
                }
            }
        };
        let verdict = wd::verdict(attempt.status, attempt.retry_after.as_deref(), Utc::now());
        let next = match &verdict {
            Verdict::Delivered => Next::Delivered,
            Verdict::Gone => Next::GiveUp,
            Verdict::Retry { .. } if !retry_on_failure => Next::GiveUp,
            Verdict::Retry { not_before } => {
                match self.config.schedule.delay(claimed.attempts.max(0) as u32, rand::random::<f64>()) {
                    Some(wait) => {
                        let wait = not_before.map_or(wait, |n| wait.max(n));
                        Next::RetryAt(Utc::now() + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero()))
                    }
                    None => Next::GiveUp,
                }
            }
        };
        let recorded =
            queue::record(self.store.pool(), &self.config.node, &claimed, started_at, &attempt, &next, claimed.billable)
                .await
                .map_err(anyhow::Error::from)?;
        if !recorded.recorded {
            tracing::warn!(delivery = %claimed.delivery_id, "a webhook delivery's claim was taken over before its outcome was recorded");
        }
        tracing::debug!(delivery = %claimed.delivery_id, webhook = %claimed.webhook_id, status = ?attempt.status,
            attempt = claimed.attempts, ?next, "webhook attempt");

        let disable = match (&verdict, recorded.failing_since) {
            _ if !claimed.billable => None,
            (Verdict::Gone, _) => Some("the endpoint answered 410 Gone".to_owned()),
            (Verdict::Retry { .. }, Some(since))
                if (Utc::now() - since).to_std().unwrap_or_default() >= self.config.disable_after =>
            {
                Some(format!(
                    "failing since {} with no success; last error: {}",
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    attempt.error.as_deref().unwrap_or("unknown")
                ))
            }
            _ => None,
        };
        if let Some(reason) = disable {
            self.disable(&claimed, reason).await?;
        }
        Ok(AttemptReport {
            delivery_id: claimed.delivery_id,
            delivered: next == Next::Delivered,
            status_code: attempt.status,
            latency_ms: attempt.duration.as_millis() as u64,
            error: attempt.error,
            next_attempt_at: match next {
                Next::RetryAt(at) => Some(at),
                _ => None,
            },
        })
    }

    async fn disable(&self, claimed: &Claimed, reason: String) -> anyhow::Result<()> {
        tracing::warn!(webhook = %claimed.webhook_id, %reason, "disabling a webhook");
        let account_id = AccountId::parse(&claimed.account_id)?;
        let webhook_id = WebhookId::parse(&claimed.webhook_id)?;
        let webhook = match crate::queries::webhooks::owned(self.store.pool(), &account_id, &webhook_id).await {
            Ok((webhook, _)) => webhook,
            // Deleted meanwhile: nothing to disable.
            Err(e) if e.code() == crate::api::error::ErrorCode::WebhookNotFound => return Ok(()),
            Err(e) => return Err(anyhow::anyhow!("reading the webhook to disable: {}", e.cause().unwrap_or(e.message()))),
        };
        let metadata = Metadata::new(Actor::System);
        match webhook_commands::handle(&self.store, &metadata, &webhook, WebhookCommand::Disable { reason }).await {
            // Deleted meanwhile: nothing to disable.
            Ok(()) | Err(crate::commands::CommandError::Rejected(_)) => Ok(()),
            Err(e) => Err(anyhow::Error::new(e).context("disabling a webhook")),
        }
    }

    /// Send a signed `webhook.test` event to the webhook now. `None`: no such webhook.
    pub async fn send_test(&self, webhook: &OwnedWebhook, line_id: Option<String>) -> Result<Option<AttemptReport>, RetryError> {
        let (account_id, webhook_id) = (webhook.account_id(), webhook.id());
        let event_id = EventId::new();
        let body = Notification {
            id: event_id.to_string(),
            event: wd::TEST_EVENT.to_owned(),
            line_id,
            created_at: Utc::now(),
            data: serde_json::json!({
                "webhook_id": webhook_id,
                "message": "A test event from WAzion Bridge: your endpoint receives and verifies deliveries.",
            }),
        }
        .to_body();
        let claimed = queue::claim_test(
            self.store.pool(),
            &self.config.node,
            self.config.lease(),
            account_id.as_str(),
            webhook_id.as_str(),
            event_id.as_str(),
            &body,
        )
        .await
        .map_err(anyhow::Error::from)?;
        match claimed {
            Some(claimed) => Ok(Some(self.attempt(claimed, false).await?)),
            None => Ok(None),
        }
    }

    /// Send one delivery again now, whatever its state (a failed one too).
    pub async fn retry_now(&self, webhook: &OwnedWebhook, delivery_id: &str) -> Result<AttemptReport, RetryError> {
        let (account_id, webhook_id) = (webhook.account_id(), webhook.id());
        let claimed = queue::claim_one(
            self.store.pool(),
            &self.config.node,
            self.config.lease(),
            account_id.as_str(),
            webhook_id.as_str(),
            delivery_id,
        )
        .await
        .map_err(anyhow::Error::from)?;
        match claimed {
            Ok(claimed) => {
                let retry_on_failure = claimed.billable;
                self.attempt(claimed, retry_on_failure).await
            }
            Err(ClaimRefused::NotFound) => Err(RetryError::NotFound),
            Err(ClaimRefused::InFlight) => Err(RetryError::InFlight),
        }
    }
}
