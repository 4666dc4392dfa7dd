//! Inline projections of the `message` stream that decisions need exactly: the sent-messages
//! counter, idempotency records, and the per-line dispatch queue.

use crate::{ApplyFuture, Projection, StoredEvent};
use domain::message::{Message, MessageEvent, Queued};
use domain::webhook_delivery::{self, DeliveryEvent};
use domain::Aggregate;
use serde_json::Value;
use sqlx::PgConnection;

/// `sent_messages` and `webhook_events` per account and billing cycle.
pub struct UsageCounters;

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
        Box::pin(async move {
            let (account_id, cycle_start, metric) = match (event.stream_type.as_str(), event.event_type.as_str()) {
                (Message::STREAM_TYPE, "message.queued") => {
                    let MessageEvent::Queued(q) = event.decode()? else { return Ok(()) };
                    (q.account_id, q.cycle_start, "sent_messages")
                }
                (webhook_delivery::STREAM_TYPE, _) => {
                    let DeliveryEvent::Charged { account_id, cycle_start, .. } = event.decode()?;
                    (account_id, cycle_start, "webhook_events")
                }
                _ => return Ok(()),
            };
            sqlx::query(
                "INSERT INTO usage_counters (account_id, cycle_start, metric, used) VALUES ($1, $2, $3, 1) \
                 ON CONFLICT (account_id, cycle_start, metric) DO UPDATE SET used = usage_counters.used + 1",
            )
            .bind(account_id.as_str())
            .bind(cycle_start)
            .bind(metric)
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
        Box::pin(async move {
            if event.stream_type != Message::STREAM_TYPE || event.event_type != "message.queued" {
                return Ok(());
            }
            let MessageEvent::Queued(q) = event.decode()? else { return Ok(()) };
            let Some(idem) = &q.idempotency else { return Ok(()) };
            // A key older than 24 hours may be used again: the new record replaces the old one.
            sqlx::query(
                "INSERT INTO idempotency_keys (account_id, key, request_hash, message_id, status_code, response, created_at) \
                 VALUES ($1, $2, $3, $4, 200, $5, $6) \
                 ON CONFLICT (account_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, \
                     message_id = EXCLUDED.message_id, status_code = EXCLUDED.status_code, \
                     response = EXCLUDED.response, created_at = EXCLUDED.created_at",
            )
            .bind(q.account_id.as_str())
            .bind(&idem.key)
            .bind(&idem.request_hash)
            .bind(q.message_id.as_str())
            .bind((self.response)(&q))
            .bind(event.recorded_at)
            .execute(conn)
            .await?;
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
}
