//! Inline projections of the `message` stream that decisions need exactly: the sent-messages
//! counter, idempotency records, and the per-line dispatch queue. Each folds a group commit's
//! events with one statement per table.

/// How long an Idempotency-Key is remembered, in hours.
pub const IDEMPOTENCY_WINDOW_HOURS: i32 = 24;

use crate::{ApplyFuture, Projection, ProjectionError, StoredEvent};
use chrono::{DateTime, Utc};
use domain::message::{Message, MessageEvent, Queued};
use domain::webhook_delivery::{self, DeliveryEvent};
use domain::Aggregate;
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::BTreeMap;

/// `sent_messages` and `webhook_events` per account and billing cycle.
pub struct UsageCounters;

/// A counter: the account, the cycle's start and the metric.
type Counter = (String, DateTime<Utc>, &'static str);

impl UsageCounters {
    /// What an event counts: the account, the cycle and the metric it adds one to.
    fn counted(event: &StoredEvent) -> Result<Option<Counter>, ProjectionError> {
        Ok(match (event.stream_type.as_str(), event.event_type.as_str()) {
            (Message::STREAM_TYPE, "message.queued") => {
                let MessageEvent::Queued(q) = event.decode()? else { return Ok(None) };
                Some((q.account_id.to_string(), q.cycle_start, "sent_messages"))
            }
            (webhook_delivery::STREAM_TYPE, _) => {
                let DeliveryEvent::Charged { account_id, cycle_start, .. } = event.decode()?;
                Some((account_id.to_string(), cycle_start, "webhook_events"))
            }
            _ => None,
        })
    }
}

impl Projection for UsageCounters {
    fn name(&self) -> &'static str {
        "usage_counters"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["usage_counters"]
    }

    fn inline(&self) -> bool {
        true
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        self.apply_batch(conn, std::slice::from_ref(event))
    }

    /// One statement for the whole batch: each counter is added what the batch counts on it, the
    /// counters taken in one fixed order (so two batches never wait on each other in a cycle).
    fn apply_batch<'a>(&'a self, conn: &'a mut PgConnection, events: &'a [StoredEvent]) -> ApplyFuture<'a> {
        Box::pin(async move {
            let mut counts: BTreeMap<Counter, i64> = BTreeMap::new();
            for event in events {
                if let Some(key) = Self::counted(event)? {
                    *counts.entry(key).or_default() += 1;
                }
            }
            if counts.is_empty() {
                return Ok(());
            }
            let (mut accounts, mut cycles, mut metrics, mut adds) = (vec![], vec![], vec![], vec![]);
            for ((account, cycle, metric), n) in counts {
                accounts.push(account);
                cycles.push(cycle);
                metrics.push(metric);
                adds.push(n);
            }
            sqlx::query(
                "INSERT INTO usage_counters (account_id, cycle_start, metric, used) \
                 SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[], $4::bigint[]) \
                 ON CONFLICT (account_id, cycle_start, metric) DO UPDATE SET used = usage_counters.used + EXCLUDED.used",
            )
            .bind(&accounts)
            .bind(&cycles)
            .bind(&metrics)
            .bind(&adds)
            .execute(conn)
            .await?;
            Ok(())
        })
    }
}

/// Idempotency records: the key, the hash of the request, and the response it got. The response
/// is the server's to shape (`response` renders it from the queued message); it is stored as is.
pub struct IdempotencyKeys {
    pub response: fn(&Queued) -> Value,
}

impl Projection for IdempotencyKeys {
    fn name(&self) -> &'static str {
        "idempotency_keys"
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        self.apply_batch(conn, std::slice::from_ref(event))
    }

    /// One statement for the batch. A key is taken by the first message that names it; it may be
    /// taken again once it is older than the window. A key the statement finds taken within the
    /// window was taken by a transaction that ran alongside this one (the command decided before
    /// that one committed): [`ProjectionError::Claimed`], so the append does not stand.
    fn apply_batch<'a>(&'a self, conn: &'a mut PgConnection, events: &'a [StoredEvent]) -> ApplyFuture<'a> {
        Box::pin(async move {
            // By (account, key): the request hash, the message, the response and the time.
            type Record = (String, String, Value, DateTime<Utc>);
            let mut rows: BTreeMap<(String, String), Record> = BTreeMap::new();
            for event in events {
                if event.stream_type != Message::STREAM_TYPE || event.event_type != "message.queued" {
                    continue;
                }
                let MessageEvent::Queued(q) = event.decode()? else { continue };
                let Some(idem) = &q.idempotency else { continue };
                // The same key twice in one batch (only a replay of the log can hold that: a
                // command reusing it is refused or replayed) keeps the later, as one by one would.
                rows.insert(
                    (q.account_id.to_string(), idem.key.clone()),
                    (idem.request_hash.clone(), q.message_id.to_string(), (self.response)(&q), event.recorded_at),
                );
            }
            if rows.is_empty() {
                return Ok(());
            }
            let n = rows.len();
            let (mut accounts, mut keys, mut hashes, mut ids, mut responses, mut times) =
                (vec![], vec![], vec![], vec![], vec![], vec![]);
            for ((account, key), (hash, id, response, at)) in rows {
                accounts.push(account);
                keys.push(key);
                hashes.push(hash);
                ids.push(id);
                responses.push(response);
                times.push(at);
            }
            let taken: Vec<String> = sqlx::query_scalar(&format!(
                "INSERT INTO idempotency_keys (account_id, key, request_hash, message_id, status_code, response, created_at) \
                 SELECT a, k, h, m, 200, r, t FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::timestamptz[]) \
                     AS u(a, k, h, m, r, t) \
                 ON CONFLICT (account_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, \
                     message_id = EXCLUDED.message_id, status_code = EXCLUDED.status_code, \
                     response = EXCLUDED.response, created_at = EXCLUDED.created_at \
                   WHERE idempotency_keys.created_at <= EXCLUDED.created_at - make_interval(hours => {IDEMPOTENCY_WINDOW_HOURS}) \
                      OR idempotency_keys.message_id = EXCLUDED.message_id \
                 RETURNING key"
            ))
            .bind(&accounts)
            .bind(&keys)
            .bind(&hashes)
            .bind(&ids)
            .bind(&responses)
            .bind(&times)
            .fetch_all(conn)
            .await?;
            if taken.len() < n {
                let lost: Vec<&String> = keys.iter().filter(|k| !taken.contains(k)).collect();
                return Err(ProjectionError::Claimed(format!("Idempotency-Key {lost:?} was taken by a concurrent request")));
            }
            Ok(())
        })
    }
}

/// The per-line queue the dispatcher drains: a message is in it from `queued` until it is sent or
/// has failed.
pub struct DispatchQueue;

impl Projection for DispatchQueue {
    fn name(&self) -> &'static str {
        "dispatch_queue"
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            if event.stream_type != Message::STREAM_TYPE {
                return Ok(());
            }
            match event.decode()? {
                MessageEvent::Queued(q) => {
                    sqlx::query(
                        "INSERT INTO dispatch_queue (message_id, line_id, account_id, queued_position, enqueued_at) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(q.message_id.as_str())
                    .bind(q.line_id.as_str())
                    .bind(q.account_id.as_str())
                    .bind(event.global_position)
                    .bind(event.recorded_at)
                    .execute(conn)
                    .await?;
                }
                MessageEvent::DispatchStarted { attempt, engine_message_id } => {
                    sqlx::query("UPDATE dispatch_queue SET attempts = $2, engine_message_id = $3 WHERE message_id = $1")
                        .bind(&event.stream_id)
                        .bind(attempt as i32)
                        .bind(engine_message_id)
                        .execute(conn)
                        .await?;
                }
                MessageEvent::Sent { .. } | MessageEvent::Failed { .. } => {
                    sqlx::query("DELETE FROM dispatch_queue WHERE message_id = $1").bind(&event.stream_id).execute(conn).await?;
                }
                _ => {}
            }
            Ok(())
        })
    }

    /// The batch's new messages join their queues in one statement; what else it holds (a group
    /// commit holds nothing else) follows one event at a time. Nothing in a batch can precede its
    /// own message's `queued`, so inserting those first gives the rows one by one would.
    fn apply_batch<'a>(&'a self, conn: &'a mut PgConnection, events: &'a [StoredEvent]) -> ApplyFuture<'a> {
        Box::pin(async move {
            let (mut ids, mut lines, mut accounts, mut positions, mut times) = (vec![], vec![], vec![], vec![], vec![]);
            let mut rest = Vec::new();
            for event in events.iter().filter(|e| e.stream_type == Message::STREAM_TYPE) {
                if event.event_type != "message.queued" {
                    rest.push(event);
                    continue;
                }
                let MessageEvent::Queued(q) = event.decode()? else { continue };
                ids.push(q.message_id.to_string());
                lines.push(q.line_id.to_string());
                accounts.push(q.account_id.to_string());
                positions.push(event.global_position);
                times.push(event.recorded_at);
            }
            if !ids.is_empty() {
                sqlx::query(
                    "INSERT INTO dispatch_queue (message_id, line_id, account_id, queued_position, enqueued_at) \
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[])",
                )
                .bind(&ids)
                .bind(&lines)
                .bind(&accounts)
                .bind(&positions)
                .bind(&times)
                .execute(&mut *conn)
                .await?;
            }
            for event in rest {
                self.apply(&mut *conn, event).await?;
            }
            Ok(())
        })
    }
}
