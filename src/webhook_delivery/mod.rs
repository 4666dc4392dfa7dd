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
use projections::webhook_deliveries::LaneHints;
use projections::LogPosition;
use queue::{Charge, ClaimRefused, Claimed, Next};
use serde::Serialize;
use std::collections::{HashMap, HashSet, VecDeque};
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
    pub window: usize,
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
            window: w.window,
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
    lanes: LaneHints,
}

/// A webhook and a line: deliveries of one lane go out in the log's order.
type Lane = (String, String);

/// How a lane's task ended: when the worker should look again (the earliest retry or recheck it
/// scheduled), and whether it put deliveries back that are due now.
struct LaneEnd {
    lane: Lane,
    due: Option<chrono::DateTime<Utc>>,
    put_back: bool,
}

/// One attempt as sent, before it is recorded.
struct Sent {
    started_at: chrono::DateTime<Utc>,
    attempt: sender::Attempt,
    /// The receiver answered 410 Gone.
    gone: bool,
    next: Next,
}

/// The worker's view of lanes: those being sent by a task of this node, and those the projector
/// told of that wait for a free task.
#[derive(Default)]
struct Lanes {
    /// Lanes with a task, and whether the projector told of new deliveries while it ran (the task
    /// may have claimed its last window before they were committed: look again when it ends).
    running: HashMap<Lane, (usize, bool)>,
    waiting: VecDeque<Lane>,
    waiting_set: HashSet<Lane>,
}

impl Lanes {
    fn told(&mut self, lane: Lane) {
        match self.running.get_mut(&lane) {
            Some((_, again)) => *again = true,
            None => {
                if self.waiting_set.insert(lane.clone()) {
                    self.waiting.push_back(lane);
                }
            }
        }
    }

    fn next_waiting(&mut self) -> Option<Lane> {
        let lane = self.waiting.pop_front()?;
        self.waiting_set.remove(&lane);
        Some(lane)
    }

    fn started(&mut self, lane: &Lane) {
        self.running.entry(lane.clone()).or_insert((0, false)).0 += 1;
    }

    fn finished(&mut self, lane: Lane) {
        let Some((tasks, again)) = self.running.get_mut(&lane) else { return };
        *tasks -= 1;
        if *tasks == 0 {
            let again = *again;
            self.running.remove(&lane);
            if again {
                self.told(lane);
            }
        }
    }
}

impl Deliverer {
    pub fn new(store: EventStore, plans: Arc<PlanCatalog>, master_key: Arc<MasterKey>, config: DeliveryConfig) -> Self {
        let client = crate::net::outbound_client(config.allow_private)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .expect("an HTTP client");
        let wake = Arc::new(Notify::new());
        Self { store, plans, master_key, client, config: Arc::new(config), wake, lanes: LaneHints::default() }
    }

    /// Look for due deliveries now (a webhook was enabled again, say).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The lanes the webhook projector of this process tells of as it creates deliveries.
    pub fn lane_hints(&self) -> LaneHints {
        self.lanes.clone()
    }

    /// The worker. Up to `concurrency` lanes (a webhook and a line) are sent at once, each by a
    /// task that sends its lane's deliveries in order, a window at a time, until none is due.
    /// Lanes start when the projector of this process says they got deliveries (no search of the
    /// queue), and from a search of the whole queue at start, every `poll`, when woken, and when a
    /// retry this node scheduled comes due: that search finds what other nodes' projectors made,
    /// retries, and deliveries whose claim ran out.
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
        let mut lanes = Lanes::default();
        let mut in_flight = JoinSet::new();
        // The earliest retry this node scheduled: waited for exactly, not until the next poll.
        let mut next_due: Option<chrono::DateTime<Utc>> = None;
        let mut search = true;
        loop {
            // Lanes the projector told of first: they are what just happened.
            while in_flight.len() < self.config.concurrency {
                let Some(lane) = lanes.next_waiting() else { break };
                match self.claim_lane(&lane, 0).await {
                    Ok(window) if !window.is_empty() => {
                        lanes.started(&lane);
                        in_flight.spawn(self.clone().lane(lane, window, shutdown.clone()));
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "could not claim the webhook deliveries of a lane"),
                }
            }
            let free = self.config.concurrency.saturating_sub(in_flight.len());
            let mut full = false;
            if search && free > 0 {
                match queue::claim_due(&pool, &self.config.node, self.config.lease(), free as i64).await {
                    Ok(claimed) => {
                        full = claimed.len() == free;
                        for c in claimed {
                            let lane = (c.webhook_id.clone(), c.line_key.clone());
                            lanes.started(&lane);
                            in_flight.spawn(self.clone().lane(lane, vec![c], shutdown.clone()));
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "could not claim webhook deliveries"),
                }
            }
            search = false;
            if full && in_flight.len() < self.config.concurrency {
                search = true;
                continue;
            }
            let now = Utc::now();
            if next_due.is_some_and(|at| at <= now) {
                next_due = None;
            }
            let wait = next_due.map_or(self.config.poll, |at| (at - now).to_std().unwrap_or_default().min(self.config.poll));
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => search = true,
                changed = projector.changed() => match changed {
                    Ok(()) => {
                        let committed = *projector.borrow_and_update();
                        for lane in self.lanes.take_committed(committed) {
                            lanes.told(lane);
                        }
                    }
                    Err(_) => tokio::time::sleep(self.config.poll).await,
                },
                Ok(Change::Appended(a)) = changes.recv() => {
                    // A plan change may make room in the quota: held deliveries are due at once.
                    search = a.stream_types.iter().any(|t| t == Account::STREAM_TYPE)
                        && queue::release_held(&pool, &a.tenant).await.inspect_err(|e| {
                            tracing::warn!(error = %e, "could not release held webhook deliveries");
                        }).is_ok_and(|n| n > 0);
                }
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Ok(LaneEnd { lane, due, put_back }) = done {
                        lanes.finished(lane.clone());
                        // What a failure put back is due now, behind the delivery awaiting its retry.
                        if put_back {
                            lanes.told(lane);
                        }
                        if let Some(at) = due {
                            next_due = Some(next_due.map_or(at, |d| d.min(at)));
                        }
                    }
                }
                _ = tokio::time::sleep(wait) => search = true,
            }
        }
        // Attempts end within their timeout; let them record what they got.
        while in_flight.join_next().await.is_some() {}
    }

    async fn claim_lane(&self, (webhook_id, line_key): &Lane, after: i64) -> Result<Vec<Claimed>, sqlx::Error> {
        let window = self.config.window as i64;
        queue::claim_window(self.store.pool(), &self.config.node, self.config.lease(), webhook_id, line_key, after, window).await
    }

    /// Send a lane, a window at a time, from `window` (claimed, in order) on. While a window is
    /// posted the next one is claimed; when it has all gone, its outcomes are recorded while the
    /// next is charged. The lane stops at the first failure (its retry, and everything after it
    /// put back, follow the usual rules), at a quota hold, at shutdown, or when nothing is due.
    async fn lane(self, lane: Lane, mut window: Vec<Claimed>, shutdown: CancellationToken) -> LaneEnd {
        let end = |lane, due, put_back| LaneEnd { lane, due, put_back };
        let mut charge = self.charge(&window).await;
        loop {
            let (go, held) = match charge {
                Ok(Charge::Go { go, held }) => (go, held),
                Ok(Charge::Lost) => {
                    // Taken over after its claim ran out: what is still this lane's goes back.
                    tracing::warn!(webhook = %lane.0, "a webhook delivery's claim was taken over before it was charged");
                    self.put_back(&window).await;
                    return end(lane, None, false);
                }
                Err(e) => {
                    tracing::error!(error = ?e, "could not charge webhook deliveries");
                    self.put_back(&window).await;
                    return end(lane, None, false);
                }
            };
            let whole = go == window.len();
            let after = window.last().map_or(0, |c| c.seq);
            let (sent, next) = tokio::join!(self.post(&window[..go], &shutdown), async {
                if whole {
                    self.claim_lane(&lane, after).await
                } else {
                    Ok(Vec::new())
                }
            });
            let next = next.unwrap_or_else(|e| {
                tracing::error!(error = %e, "could not claim the next webhook deliveries of a lane");
                Vec::new()
            });
            let all_sent = sent.len() == go && sent.last().is_none_or(|s| s.next == Next::Delivered);
            let mut unsent: Vec<Claimed> = window[sent.len()..go].to_vec();
            if !all_sent || shutdown.is_cancelled() || next.is_empty() || held.is_some() {
                unsent.extend(next);
                let due = self.record_lane(&window, &sent, &unsent).await;
                let due = match held {
                    Some(_) => Some(Utc::now() + self.config.held_recheck),
                    None => due,
                };
                return end(lane, due, !unsent.is_empty() && !shutdown.is_cancelled());
            }
            let (_, charged) = tokio::join!(self.record_lane(&window, &sent, &[]), self.charge(&next));
            window = next;
            charge = charged;
        }
    }

    async fn charge(&self, window: &[Claimed]) -> anyhow::Result<Charge> {
        queue::charge_window(&self.store, &self.plans, &self.config.node, window, self.config.held_recheck).await
    }

    /// Claims handed back unattempted after an error: due again at once.
    async fn put_back(&self, claims: &[Claimed]) {
        if let Err(e) = queue::release(self.store.pool(), &self.config.node, claims).await {
            tracing::error!(error = %e, "could not put back webhook deliveries; their claims run out instead");
        }
    }

    /// POST `window`'s deliveries back to back, stopping after the first that fails, at shutdown,
    /// and before one whose claim could run out while it is sent.
    async fn post(&self, window: &[Claimed], shutdown: &CancellationToken) -> Vec<Sent> {
        let mut sent = Vec::with_capacity(window.len());
        let timeout = chrono::Duration::from_std(self.config.timeout).unwrap_or(chrono::Duration::MAX);
        for claimed in window {
            if shutdown.is_cancelled() || Utc::now() + timeout >= claimed.lease_until {
                break;
            }
            let one = self.send_one(claimed, true).await;
            let failed = one.next != Next::Delivered;
            sent.push(one);
            if failed {
                break;
            }
        }
        sent
    }

    /// Sign and send one claimed delivery, and decide what follows.
    async fn send_one(&self, claimed: &Claimed, retry_on_failure: bool) -> Sent {
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
        tracing::debug!(delivery = %claimed.delivery_id, webhook = %claimed.webhook_id, status = ?attempt.status,
            attempt = claimed.attempts, ?next, "webhook attempt");
        Sent { started_at, attempt, gone: verdict == Verdict::Gone, next }
    }

    /// Record what was sent of `window` (its first `sent.len()`), put back `unsent`, and disable the
    /// webhook if the last attempt says it is gone or it has failed for too long. Returns the retry
    /// this scheduled, if any.
    async fn record(
        &self,
        window: &[Claimed],
        sent: &[Sent],
        unsent: &[Claimed],
    ) -> anyhow::Result<Option<chrono::DateTime<Utc>>> {
        let outcomes: Vec<queue::Outcome> = window
            .iter()
            .zip(sent)
            .map(|(claimed, s)| queue::Outcome { claimed, started_at: s.started_at, attempt: &s.attempt, next: s.next.clone() })
            .collect();
        let billable = window.first().is_some_and(|c| c.billable);
        for s in sent {
            let outcome = match s.next {
                Next::Delivered => "delivered",
                Next::RetryAt(_) => "retrying",
                Next::GiveUp => "failed",
            };
            crate::metrics::global().webhook_delivery(outcome, s.attempt.duration);
        }
        let recorded = queue::record_window(self.store.pool(), &self.config.node, &outcomes, unsent, billable).await?;
        if recorded.recorded < outcomes.len() {
            tracing::warn!(
                recorded = recorded.recorded,
                sent = outcomes.len(),
                "webhook claims were taken over before their outcomes were recorded"
            );
        }
        let Some(last) = sent.last() else { return Ok(None) };
        let claimed = &window[sent.len() - 1];
        let disable = match (last.gone, recorded.failing_since) {
            _ if !billable || last.next == Next::Delivered => None,
            (true, _) => Some("the endpoint answered 410 Gone".to_owned()),
            (false, Some(since)) if (Utc::now() - since).to_std().unwrap_or_default() >= self.config.disable_after => {
                Some(format!(
                    "failing since {} with no success; last error: {}",
                    since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    last.attempt.error.as_deref().unwrap_or("unknown")
                ))
            }
            _ => None,
        };
        if let Some(reason) = disable {
            self.disable(claimed, reason).await?;
        }
        Ok(match last.next {
            Next::RetryAt(at) => Some(at),
            _ => None,
        })
    }

    /// [`Self::record`] for a lane: an error is logged, and the claims run out and the deliveries
    /// go again, with the same ids.
    async fn record_lane(&self, window: &[Claimed], sent: &[Sent], unsent: &[Claimed]) -> Option<chrono::DateTime<Utc>> {
        self.record(window, sent, unsent).await.unwrap_or_else(|e| {
            tracing::error!(error = ?e, "could not record webhook attempts");
            None
        })
    }

    /// One attempt of one claimed delivery, for the test and retry endpoints: the lane's steps
    /// with a window of one.
    async fn attempt(&self, claimed: Claimed, retry_on_failure: bool) -> Result<AttemptReport, RetryError> {
        let window = [claimed];
        match self.charge(&window).await? {
            Charge::Go { go: 1, .. } => {}
            Charge::Go { held: Some(held), .. } => return Err(RetryError::Held { reason: held.reason, quota: held.quota }),
            Charge::Go { .. } | Charge::Lost => return Err(RetryError::InFlight),
        }
        let sent = self.send_one(&window[0], retry_on_failure).await;
        let next_attempt_at = self.record(&window, std::slice::from_ref(&sent), &[]).await?;
        let [claimed] = window;
        Ok(AttemptReport {
            delivery_id: claimed.delivery_id,
            delivered: sent.next == Next::Delivered,
            status_code: sent.attempt.status,
            latency_ms: sent.attempt.duration.as_millis() as u64,
            error: sent.attempt.error,
            next_attempt_at,
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
