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
    /// The delivery's place in its lane.
    pub seq: i64,
    /// Until when the claim holds: no attempt starts that could outlast it.
    pub lease_until: DateTime<Utc>,
}

const RETURNING: &str =
    "RETURNING d.delivery_id, d.webhook_id, d.line_key, d.account_id, d.event_id, d.event_type, d.body, d.attempts, \
     d.billable, d.charged_cycle IS NOT NULL AS charged, w.url, w.secret_sealed, d.seq, d.lease_until";

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

/// Claim a window of one lane's (webhook and line's) next deliveries, in order: up to `limit` of
/// those after `after` (the `seq` of the last one this lane already holds; 0 for none), stopping
/// at the first that must be waited for (one in flight elsewhere, or one never tried that is not
/// due). One waiting for its retry is passed over, as [`claim_due`] does. A worker that has just
/// been told of new deliveries on a lane, or is sending a window, goes on with the lane's next
/// without searching the whole queue.
pub async fn claim_window(
    pool: &PgPool,
    node: &str,
    lease: Duration,
    webhook_id: &str,
    line_key: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let mut window: Vec<Claimed> = sqlx::query_as(&CLAIM_WINDOW)
        .bind(limit)
        .bind(node)
        .bind(lease.as_secs_f64())
        .bind(webhook_id)
        .bind(line_key)
        .bind(after)
        .fetch_all(pool)
        .await?;
    window.sort_by_key(|c| c.seq);
    Ok(window)
}

static CLAIM_DUE: std::sync::LazyLock<String> = std::sync::LazyLock::new(claim_due_sql);

/// The lane's first unfinished deliveries, locked in order (not SKIP LOCKED: a locked one is being
/// claimed by someone else, and skipping it would send the next ones out of order; once its
/// claim commits it is re-read, in flight, and stops the window there).
static CLAIM_WINDOW: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH head AS ( \
             SELECT d.delivery_id, d.seq, \
                 (d.state IN ('pending', 'held') AND d.next_attempt_at <= now()) \
                     OR (d.state = 'in_flight' AND d.lease_until < now()) AS due, \
                 d.state IN ('pending', 'held') AND d.attempts > 0 AND d.next_attempt_at > now() AS awaits_retry \
             FROM webhook_deliveries d \
             WHERE d.webhook_id = $4 AND d.line_key = $5 AND d.seq > $6 AND d.state IN ('pending', 'held', 'in_flight') \
             ORDER BY d.seq LIMIT $1 FOR UPDATE), \
         win AS ( \
             SELECT delivery_id FROM ( \
                 SELECT delivery_id, due, bool_or(NOT due AND NOT awaits_retry) OVER (ORDER BY seq) AS stopped FROM head) h \
             WHERE due AND NOT stopped) \
         UPDATE webhook_deliveries d {} FROM win, webhooks w \
         WHERE d.delivery_id = win.delivery_id AND w.webhook_id = d.webhook_id AND w.enabled {RETURNING}",
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
             false AS charged, w.url, w.secret_sealed, d.seq, d.lease_until \
         FROM d JOIN webhooks w ON w.webhook_id = d.webhook_id",
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

/// At start: this node's claims belong to a process that is gone; they run out now. They stay in
/// flight, so each lane's first one still holds the lane's later ones back, and the lane is taken
/// up again from there, in order (a window's unsent claims are not mistaken for retries).
pub async fn release_node(pool: &PgPool, node: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET lease_until = now() - interval '1 second', updated_at = now() \
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

/// What charging a window came to.
#[derive(Debug, PartialEq)]
pub enum Charge {
    /// The first `go` deliveries of the window may be sent: each is counted (now or at an earlier
    /// attempt). The rest were put back: the first of them `held` (the account is over its quota
    /// or not active; checked again later), the others pending behind it.
    Go { go: usize, held: Option<Held> },
    /// A claim of the window was taken over by another worker: nothing was charged or sent.
    Lost,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub reason: String,
    pub quota: Option<QuotaUsed>,
}

/// Count a window's first attempts against the plan's `webhook_events`, exactly, in one
/// transaction: the cycle's counter row is locked before it is compared to the limit, the counter
/// goes up by what fits (`LEAST(k, room)`), and each charge is an event of the log (the counter is
/// its inline projection), one per delivery at most. Past the limit, the window stops: the first
/// delivery that does not fit is held, not lost, until `recheck` has passed.
pub async fn charge_window(
    store: &EventStore,
    plans: &PlanCatalog,
    node: &str,
    window: &[Claimed],
    recheck: Duration,
) -> anyhow::Result<Charge> {
    if window.iter().all(|c| !c.billable || c.charged) {
        return Ok(Charge::Go { go: window.len(), held: None });
    }
    let account_id = &window[0].account_id;
    let mut tx = store.pool().begin().await?;
    let account: Option<(String, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT plan, status, cycle_anchor FROM accounts WHERE account_id = $1")
            .bind(account_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((plan, status, anchor)) = account else { anyhow::bail!("the delivery's account does not exist") };
    let cycle = domain::billing::cycle_containing(anchor, Utc::now());
    let limit = plans.get(&plan).map(|(_, l)| l.webhook_events).unwrap_or(0);
    let used = crate::usage::lock_counter(&mut tx, account_id, cycle.start, Metric::WebhookEvents).await?;
    let room = if status == "active" { limit.saturating_sub(used) } else { 0 };

    // The window in order: what may go, and what of it is charged now.
    let mut go = 0;
    let mut charging: Vec<&Claimed> = Vec::new();
    for c in window {
        if c.billable && !c.charged {
            if charging.len() as u64 >= room {
                break;
            }
            charging.push(c);
        }
        go += 1;
    }
    if !charging.is_empty() {
        let ids: Vec<&str> = charging.iter().map(|c| c.delivery_id.as_str()).collect();
        let attempts: Vec<i32> = charging.iter().map(|c| c.attempts).collect();
        let updated = sqlx::query(
            "UPDATE webhook_deliveries d SET charged_cycle = $4 FROM UNNEST($1::text[], $2::int[]) AS c(delivery_id, attempts) \
             WHERE d.delivery_id = c.delivery_id AND d.state = 'in_flight' AND d.claimed_by = $3 AND d.attempts = c.attempts",
        )
        .bind(&ids)
        .bind(&attempts)
        .bind(node)
        .bind(cycle.start)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != charging.len() as u64 {
            return Ok(Charge::Lost);
        }
    }
    let held = (go < window.len()).then(|| {
        if status != "active" {
            Held { reason: "held: the account's subscription is not active".to_owned(), quota: None }
        } else {
            let reason = format!("held: the plan's webhook_events quota is used up ({used} of {limit} this cycle)");
            Held { reason, quota: Some(QuotaUsed { used, limit, plan }) }
        }
    });
    if let Some(held) = &held {
        let (first, rest) = window[go..].split_first().expect("a held delivery");
        let updated = sqlx::query(
            "UPDATE webhook_deliveries SET state = 'held', attempts = attempts - 1, claimed_by = NULL, lease_until = NULL, \
                 next_attempt_at = now() + make_interval(secs => $4), last_error = $5, updated_at = now() \
             WHERE delivery_id = $1 AND state = 'in_flight' AND claimed_by = $2 AND attempts = $3",
        )
        .bind(&first.delivery_id)
        .bind(node)
        .bind(first.attempts)
        .bind(recheck.as_secs_f64())
        .bind(&held.reason)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() != 1 {
            return Ok(Charge::Lost);
        }
        release_in(&mut tx, node, rest).await?;
    }
    let append = (!charging.is_empty()).then(|| charges(&charging, cycle.start)).transpose()?;
    if let Some(append) = &append {
        store.append_in(&mut tx, append).await?;
    }
    tx.commit().await?;
    if let Some(append) = &append {
        store.committed(append);
    }
    Ok(Charge::Go { go, held })
}

/// The charge events of a window: one per delivery, each the first event of the delivery's stream.
fn charges(charging: &[&Claimed], cycle_start: DateTime<Utc>) -> anyhow::Result<Append> {
    let mut streams = Vec::with_capacity(charging.len());
    for c in charging {
        let event = DeliveryEvent::Charged {
            delivery_id: DeliveryId::parse(&c.delivery_id)?,
            webhook_id: WebhookId::parse(&c.webhook_id)?,
            account_id: AccountId::parse(&c.account_id)?,
            event_id: EventId::parse(&c.event_id)?,
            cycle_start,
        };
        streams.push(StreamAppend::new(wd::STREAM_TYPE, c.delivery_id.as_str(), 0, &[event]));
    }
    let mut metadata = Metadata::new(Actor::System);
    // A charge is caused by the event delivered; a window's charges have several causes, so only
    // a window of one names its cause.
    metadata.causation_id = (charging.len() == 1).then(|| charging[0].event_id.clone());
    Ok(Append { tenant_id: charging[0].account_id.clone(), metadata, streams })
}

/// Put claims back unattempted (a window cut short): due again now, with the attempt not counted.
async fn release_in(conn: &mut sqlx::PgConnection, node: &str, claims: &[Claimed]) -> Result<(), sqlx::Error> {
    if claims.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = claims.iter().map(|c| c.delivery_id.as_str()).collect();
    let attempts: Vec<i32> = claims.iter().map(|c| c.attempts).collect();
    sqlx::query(RELEASE).bind(&ids).bind(&attempts).bind(node).execute(conn).await?;
    Ok(())
}

const RELEASE: &str = "UPDATE webhook_deliveries d SET state = 'pending', attempts = d.attempts - 1, next_attempt_at = now(), \
         claimed_by = NULL, lease_until = NULL, updated_at = now() \
     FROM UNNEST($1::text[], $2::int[]) AS r(delivery_id, attempts) \
     WHERE d.delivery_id = r.delivery_id AND d.state = 'in_flight' AND d.claimed_by = $3 AND d.attempts = r.attempts";

/// Put claims back unattempted, outside any transaction.
pub async fn release(pool: &PgPool, node: &str, claims: &[Claimed]) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    release_in(&mut conn, node, claims).await
}

/// How an attempt ends for the delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Delivered,
    RetryAt(DateTime<Utc>),
    GiveUp,
}

pub struct Recorded {
    /// How many of the outcomes were written: fewer when a claim was taken over meanwhile.
    pub recorded: usize,
    /// Since when the webhook has been failing without a success (None: it is healthy).
    pub failing_since: Option<DateTime<Utc>>,
}

/// What one attempt of a window came to.
pub struct Outcome<'a> {
    pub claimed: &'a Claimed,
    pub started_at: DateTime<Utc>,
    pub attempt: &'a super::sender::Attempt,
    pub next: Next,
}

/// Write a window's attempts (in order; only the last may have failed), the deliveries' new
/// states, the webhook's health, and put back `unsent` claims unattempted: one statement.
pub async fn record_window(
    pool: &PgPool,
    node: &str,
    outcomes: &[Outcome<'_>],
    unsent: &[Claimed],
    counts_for_health: bool,
) -> Result<Recorded, sqlx::Error> {
    let n = outcomes.len();
    let mut ids = Vec::with_capacity(n);
    let (mut attempts, mut states, mut next_at, mut status) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut errors, mut durations, mut started) = (Vec::new(), Vec::new(), Vec::new());
    for o in outcomes {
        let (state, at) = match o.next {
            Next::Delivered => ("delivered", None),
            Next::RetryAt(at) => ("pending", Some(at)),
            Next::GiveUp => ("failed", None),
        };
        ids.push(o.claimed.delivery_id.as_str());
        attempts.push(o.claimed.attempts);
        states.push(state);
        next_at.push(at);
        status.push(o.attempt.status.map(i32::from));
        errors.push(o.attempt.error.as_deref());
        durations.push(o.attempt.duration.as_millis().min(i32::MAX as u128) as i32);
        started.push(o.started_at);
    }
    let any_success = outcomes.iter().any(|o| o.next == Next::Delivered);
    let last_failed = outcomes.last().is_some_and(|o| o.next != Next::Delivered);
    let unsent_ids: Vec<&str> = unsent.iter().map(|c| c.delivery_id.as_str()).collect();
    let unsent_attempts: Vec<i32> = unsent.iter().map(|c| c.attempts).collect();
    let (recorded, failing_since): (i64, Option<DateTime<Utc>>) = sqlx::query_as(&RECORD_WINDOW)
        .bind(&ids)
        .bind(&attempts)
        .bind(&states)
        .bind(&next_at)
        .bind(&status)
        .bind(&errors)
        .bind(&durations)
        .bind(&started)
        .bind(node)
        .bind(any_success)
        .bind(last_failed)
        .bind(counts_for_health)
        .bind(&unsent_ids)
        .bind(&unsent_attempts)
        .fetch_one(pool)
        .await?;
    Ok(Recorded { recorded: recorded as usize, failing_since })
}

/// `failing_since` is cleared by a window that ends in success, and set (kept if already set) by
/// one that ends in failure; a window with successes before its failure starts a new stretch.
static RECORD_WINDOW: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH o AS ( \
             SELECT * FROM UNNEST($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::int[], $6::text[], $7::int[], \
                 $8::timestamptz[]) AS o(delivery_id, attempt, state, next_at, status_code, error, duration_ms, started_at)), \
         d AS ( \
             UPDATE webhook_deliveries d SET state = o.state, next_attempt_at = o.next_at, claimed_by = NULL, \
                 lease_until = NULL, last_status_code = o.status_code, last_error = o.error, \
                 last_duration_ms = o.duration_ms, updated_at = now(), \
                 delivered_at = CASE WHEN o.state = 'delivered' THEN now() ELSE d.delivered_at END \
             FROM o WHERE d.delivery_id = o.delivery_id AND d.state = 'in_flight' AND d.claimed_by = $9 \
                 AND d.attempts = o.attempt \
             RETURNING d.delivery_id, d.webhook_id, o.attempt, o.started_at, o.status_code, o.duration_ms, o.error), \
         a AS ( \
             INSERT INTO webhook_attempts (delivery_id, attempt, started_at, status_code, duration_ms, error) \
             SELECT delivery_id, attempt, started_at, status_code, duration_ms, error FROM d), \
         r AS ({}), \
         h AS ( \
             INSERT INTO webhook_health AS h (webhook_id, failing_since, last_success_at, last_failure_at) \
             SELECT (SELECT webhook_id FROM d LIMIT 1), CASE WHEN $11 THEN now() END, CASE WHEN $10 THEN now() END, \
                 CASE WHEN $11 THEN now() END \
             WHERE $12 AND EXISTS (SELECT 1 FROM d) \
             ON CONFLICT (webhook_id) DO UPDATE SET \
                 failing_since = CASE WHEN NOT $11 THEN NULL WHEN $10 THEN now() ELSE COALESCE(h.failing_since, now()) END, \
                 last_success_at = CASE WHEN $10 THEN now() ELSE h.last_success_at END, \
                 last_failure_at = CASE WHEN $11 THEN now() ELSE h.last_failure_at END \
             RETURNING failing_since) \
         SELECT (SELECT count(*) FROM d), (SELECT failing_since FROM h)",
        RELEASE.replace("$1", "$13").replace("$2", "$14").replace("$3", "$9")
    )
});
