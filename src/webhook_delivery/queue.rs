//! The delivery queue in PostgreSQL: claiming due deliveries (`FOR UPDATE SKIP LOCKED`, so any
//! number of workers and nodes share it), charging a first attempt to the quota, and recording
//! what an attempt came to.
//!
//! A claim is a lease: the row says which node holds it until when. A node that dies holding
//! claims loses them when the lease runs out (or at once when it starts again), and the delivery
//! is sent again with the same delivery and event ids. Every write after a claim names the claim
//! (node and attempt number), so a worker whose claim was taken over cannot record over the new one.

use crate::store::{Actor, Append, EventStore, Metadata, StreamAppend};
use chrono::{DateTime, Utc};
use domain::ids::{AccountId, DeliveryId, EventId, WebhookId};
use domain::plan::{Metric, PlanCatalog};
use domain::webhook_delivery::{self as wd, DeliveryEvent};
use sqlx::PgPool;
use std::time::Duration;

/// A delivery claimed for one attempt, with what it takes to send it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub delivery_id: String,
    pub webhook_id: String,
    /// The line the event is about: deliveries of one webhook and line go out in order.
    pub line_key: String,
    pub account_id: String,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
    /// This attempt's number (1 for the first).
    pub attempts: i32,
    pub billable: bool,
    pub charged: bool,
    pub url: String,
    pub secret_sealed: String,
}

const RETURNING: &str =
    "RETURNING d.delivery_id, d.webhook_id, d.line_key, d.account_id, d.event_id, d.event_type, d.body, d.attempts, \
     d.billable, d.charged_cycle IS NOT NULL AS charged, w.url, w.secret_sealed";

/// The SET clause of a claim, with the placeholders of the node and the lease's seconds.
fn claim(node: &str, lease_secs: &str) -> String {
    format!(
        "SET state = 'in_flight', attempts = d.attempts + 1, claimed_by = {node}, \
         lease_until = now() + make_interval(secs => {lease_secs}), updated_at = now()"
    )
}

/// Claim up to `limit` due deliveries of enabled webhooks: pending or held ones whose time has
/// come, and in-flight ones whose claim ran out. A delivery waits while an earlier delivery of the
/// same webhook and line is in flight or not yet tried, so each line's events arrive in the log's
/// order; one waiting for a retry does not hold the others back.
pub async fn claim_due(pool: &PgPool, node: &str, lease: Duration, limit: i64) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(&CLAIM_DUE).bind(limit).bind(node).bind(lease.as_secs_f64()).fetch_all(pool).await
}

/// Claim the next delivery of one webhook and line, if it may go now (see [`claim_due`]): a
/// worker that has just delivered one event of a line goes on with the line's next, without
/// searching the whole queue.
pub async fn claim_next_in_lane(
    pool: &PgPool,
    node: &str,
    lease: Duration,
    webhook_id: &str,
    line_key: &str,
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as(&CLAIM_IN_LANE)
        .bind(1_i64)
        .bind(node)
        .bind(lease.as_secs_f64())
        .bind(webhook_id)
        .bind(line_key)
        .fetch_optional(pool)
        .await
}

static CLAIM_DUE: std::sync::LazyLock<String> = std::sync::LazyLock::new(claim_due_sql);

/// The lane's first unfinished delivery, if it is due: one index probe. Not SKIP LOCKED: a locked
/// head is being claimed by someone else, and skipping it would send the next one out of order.
static CLAIM_IN_LANE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH head AS ( \
             SELECT d.delivery_id FROM webhook_deliveries d \
             WHERE d.webhook_id = $4 AND d.line_key = $5 AND d.state IN ('pending', 'held', 'in_flight') \
             ORDER BY d.seq LIMIT $1 FOR UPDATE) \
         UPDATE webhook_deliveries d {} FROM head, webhooks w \
         WHERE d.delivery_id = head.delivery_id AND w.webhook_id = d.webhook_id AND w.enabled \
           AND d.state IN ('pending', 'held') AND d.next_attempt_at <= now() {RETURNING}",
        claim("$2", "$3")
    )
});

fn claim_due_sql() -> String {
    // `blocking`: per webhook and line, the first delivery that later ones must wait for (one in
    // flight, or one never tried). Deliveries up to it may go (those before it wait for a retry).
    // MATERIALIZED: computed once per claim, never again for each candidate row (which a plan
    // made on stale statistics would otherwise do, quadratically in the queue's length).
    format!(
        "WITH blocking AS MATERIALIZED ( \
             SELECT d.webhook_id, d.line_key, min(d.seq) AS seq FROM webhook_deliveries d \
             WHERE d.state = 'in_flight' OR (d.state IN ('pending', 'held') AND d.attempts = 0) \
             GROUP BY d.webhook_id, d.line_key), \
         due AS ( \
             SELECT d.delivery_id FROM webhook_deliveries d \
             JOIN webhooks w ON w.webhook_id = d.webhook_id \
             LEFT JOIN blocking b ON b.webhook_id = d.webhook_id AND b.line_key = d.line_key \
             WHERE w.enabled \
               AND ((d.state IN ('pending', 'held') AND d.next_attempt_at <= now()) \
                    OR (d.state = 'in_flight' AND d.lease_until < now())) \
               AND (b.seq IS NULL OR d.seq <= b.seq) \
             ORDER BY d.seq LIMIT $1 \
             FOR UPDATE OF d SKIP LOCKED) \
         UPDATE webhook_deliveries d {} FROM due, webhooks w \
         WHERE d.delivery_id = due.delivery_id AND w.webhook_id = d.webhook_id {RETURNING}",
        claim("$2", "$3")
    )
}

/// Why one delivery could not be claimed for a manual retry.
#[derive(Debug, PartialEq, Eq)]
pub enum ClaimRefused {
    NotFound,
    InFlight,
}

/// Claim one delivery of the account's webhook now, whatever its state, unless it is in flight.
pub async fn claim_one(
    pool: &PgPool,
    node: &str,
    lease: Duration,
    account_id: &str,
    webhook_id: &str,
    delivery_id: &str,
) -> Result<Result<Claimed, ClaimRefused>, sqlx::Error> {
    let claimed: Option<Claimed> = sqlx::query_as(&format!(
        "UPDATE webhook_deliveries d {} FROM webhooks w \
         WHERE d.delivery_id = $3 AND d.webhook_id = $4 AND d.account_id = $5 AND w.webhook_id = d.webhook_id \
           AND NOT (d.state = 'in_flight' AND d.lease_until >= now()) {RETURNING}",
        claim("$1", "$2")
    ))
    .bind(node)
    .bind(lease.as_secs_f64())
    .bind(delivery_id)
    .bind(webhook_id)
    .bind(account_id)
    .fetch_optional(pool)
    .await?;
    if let Some(claimed) = claimed {
        return Ok(Ok(claimed));
    }
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE delivery_id = $1 AND webhook_id = $2 AND account_id = $3)",
    )
    .bind(delivery_id)
    .bind(webhook_id)
    .bind(account_id)
    .fetch_one(pool)
    .await?;
    Ok(Err(if exists { ClaimRefused::InFlight } else { ClaimRefused::NotFound }))
}

/// A test event: a delivery created already claimed by this node, never charged nor retried.
pub async fn claim_test(
    pool: &PgPool,
    node: &str,
    lease: Duration,
    account_id: &str,
    webhook_id: &str,
    event_id: &str,
    body: &str,
) -> Result<Option<Claimed>, sqlx::Error> {
    let delivery_id = DeliveryId::new();
    sqlx::query_as(
        "WITH d AS ( \
             INSERT INTO webhook_deliveries (delivery_id, webhook_id, account_id, event_id, event_type, line_key, body, state, \
                 billable, attempts, claimed_by, lease_until, created_at, updated_at) \
             SELECT $4, w.webhook_id, w.account_id, $6, $7, '#test', $8, 'in_flight', false, 1, $2, \
                 now() + make_interval(secs => $3), now(), now() \
             FROM webhooks w WHERE w.webhook_id = $5 AND w.account_id = $1 \
             RETURNING *) \
         SELECT d.delivery_id, d.webhook_id, d.line_key, d.account_id, d.event_id, d.event_type, d.body, d.attempts, d.billable, \
             false AS charged, w.url, w.secret_sealed FROM d JOIN webhooks w ON w.webhook_id = d.webhook_id",
    )
    .bind(account_id)
    .bind(node)
    .bind(lease.as_secs_f64())
    .bind(delivery_id.as_str())
    .bind(webhook_id)
    .bind(event_id)
    .bind(wd::TEST_EVENT)
    .bind(body)
    .fetch_optional(pool)
    .await
}

/// At start: this node's claims belong to a process that is gone; they are due again at once.
pub async fn release_node(pool: &PgPool, node: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = now(), claimed_by = NULL, lease_until = NULL, \
             updated_at = now() \
         WHERE state = 'in_flight' AND claimed_by = $1 AND billable",
    )
    .bind(node)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// The `webhook_events` count that held a delivery back.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaUsed {
    pub used: u64,
    pub limit: u64,
    pub plan: String,
}

/// The account changed (its plan, say): its held deliveries are due again now.
pub async fn release_held(pool: &PgPool, account_id: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("UPDATE webhook_deliveries SET next_attempt_at = now() WHERE state = 'held' AND account_id = $1")
        .bind(account_id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

#[derive(Debug, PartialEq)]
pub enum Charge {
    /// Counted (now or at an earlier attempt): send it.
    Go,
    /// Not sent: the account is over its quota or not active. Checked again later.
    Held { reason: String, quota: Option<QuotaUsed> },
    /// The claim was taken over by another worker.
    Lost,
}

/// Count a delivery's first attempt against the plan's `webhook_events`, exactly: the cycle's
/// counter row is locked before it is compared to the limit, and the charge is an event of the
/// log (the counter is its inline projection), one per delivery at most. Over the limit the
/// delivery is held, not lost, until `recheck` has passed.
pub async fn charge(
    store: &EventStore,
    plans: &PlanCatalog,
    node: &str,
    claimed: &Claimed,
    recheck: Duration,
) -> anyhow::Result<Charge> {
    let mut tx = store.pool().begin().await?;
    let account: Option<(String, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT plan, status, cycle_anchor FROM accounts WHERE account_id = $1")
            .bind(&claimed.account_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((plan, status, anchor)) = account else { anyhow::bail!("the delivery's account does not exist") };
    let cycle = domain::billing::cycle_containing(anchor, Utc::now());
    let limit = plans.get(&plan).map(|(_, l)| l.webhook_events).unwrap_or(0);
    let used = crate::usage::lock_counter(&mut tx, &claimed.account_id, cycle.start, Metric::WebhookEvents).await?;
    let held = if status != "active" {
        Some(("held: the account's subscription is not active".to_owned(), None))
    } else if used >= limit {
        let reason = format!("held: the plan's webhook_events quota is used up ({used} of {limit} this cycle)");
        Some((reason, Some(QuotaUsed { used, limit, plan })))
    } else {
        None
    };
    if let Some((reason, quota)) = held {
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'held', attempts = attempts - 1, claimed_by = NULL, lease_until = NULL, \
                 next_attempt_at = now() + make_interval(secs => $4), last_error = $5, updated_at = now() \
             WHERE delivery_id = $1 AND state = 'in_flight' AND claimed_by = $2 AND attempts = $3",
        )
        .bind(&claimed.delivery_id)
        .bind(node)
        .bind(claimed.attempts)
        .bind(recheck.as_secs_f64())
        .bind(&reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(if updated.rows_affected() == 1 { Charge::Held { reason, quota } } else { Charge::Lost });
    }
    let updated = sqlx::query(
        "UPDATE webhook_deliveries SET charged_cycle = $4 \
         WHERE delivery_id = $1 AND state = 'in_flight' AND claimed_by = $2 AND attempts = $3",
    )
    .bind(&claimed.delivery_id)
    .bind(node)
    .bind(claimed.attempts)
    .bind(cycle.start)
    .execute(&mut *tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(Charge::Lost);
    }
    let event = DeliveryEvent::Charged {
        delivery_id: DeliveryId::parse(&claimed.delivery_id)?,
        webhook_id: WebhookId::parse(&claimed.webhook_id)?,
        account_id: AccountId::parse(&claimed.account_id)?,
        event_id: EventId::parse(&claimed.event_id)?,
        cycle_start: cycle.start,
    };
    let mut metadata = Metadata::new(Actor::System);
    metadata.causation_id = Some(claimed.event_id.clone());
    let append = Append {
        tenant_id: claimed.account_id.clone(),
        metadata,
        streams: vec![StreamAppend::new(wd::STREAM_TYPE, claimed.delivery_id.as_str(), 0, &[event])],
    };
    store.append_in(&mut tx, &append).await?;
    tx.commit().await?;
    store.committed(&append);
    Ok(Charge::Go)
}

/// How an attempt ends for the delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Delivered,
    RetryAt(DateTime<Utc>),
    GiveUp,
}

pub struct Recorded {
    /// False when the claim was taken over meanwhile: nothing was written.
    pub recorded: bool,
    /// Since when the webhook has been failing without a success (None: it is healthy).
    pub failing_since: Option<DateTime<Utc>>,
}

/// Write the attempt, the delivery's new state and the webhook's health, in one statement.
#[allow(clippy::too_many_arguments)]
pub async fn record(
    pool: &PgPool,
    node: &str,
    claimed: &Claimed,
    started_at: DateTime<Utc>,
    attempt: &super::sender::Attempt,
    next: &Next,
    counts_for_health: bool,
) -> Result<Recorded, sqlx::Error> {
    let (state, next_at) = match next {
        Next::Delivered => ("delivered", None),
        Next::RetryAt(at) => ("pending", Some(*at)),
        Next::GiveUp => ("failed", None),
    };
    let success = *next == Next::Delivered;
    let (recorded, failing_since): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "WITH d AS ( \
             UPDATE webhook_deliveries SET state = $4, next_attempt_at = $5, claimed_by = NULL, lease_until = NULL, \
                 last_status_code = $6, last_error = $7, last_duration_ms = $8, updated_at = now(), \
                 delivered_at = CASE WHEN $4 = 'delivered' THEN now() ELSE delivered_at END \
             WHERE delivery_id = $1 AND state = 'in_flight' AND claimed_by = $2 AND attempts = $3 \
             RETURNING delivery_id, webhook_id), \
         a AS ( \
             INSERT INTO webhook_attempts (delivery_id, attempt, started_at, status_code, duration_ms, error) \
             SELECT delivery_id, $3, $9, $6, $8, $7 FROM d), \
         h AS ( \
             INSERT INTO webhook_health AS h (webhook_id, failing_since, last_success_at, last_failure_at) \
             SELECT webhook_id, CASE WHEN $10 THEN NULL ELSE now() END, CASE WHEN $10 THEN now() END, \
                 CASE WHEN $10 THEN NULL ELSE now() END FROM d WHERE $11 \
             ON CONFLICT (webhook_id) DO UPDATE SET \
                 failing_since = CASE WHEN $10 THEN NULL ELSE COALESCE(h.failing_since, now()) END, \
                 last_success_at = CASE WHEN $10 THEN now() ELSE h.last_success_at END, \
                 last_failure_at = CASE WHEN $10 THEN h.last_failure_at ELSE now() END \
             RETURNING failing_since) \
         SELECT (SELECT count(*) FROM d), (SELECT failing_since FROM h)",
    )
    .bind(&claimed.delivery_id)
    .bind(node)
    .bind(claimed.attempts)
    .bind(state)
    .bind(next_at)
    .bind(attempt.status.map(i32::from))
    .bind(&attempt.error)
    .bind(attempt.duration.as_millis().min(i32::MAX as u128) as i32)
    .bind(started_at)
    .bind(success)
    .bind(counts_for_health)
    .fetch_one(pool)
    .await?;
    Ok(Recorded { recorded: recorded == 1, failing_since })
}
