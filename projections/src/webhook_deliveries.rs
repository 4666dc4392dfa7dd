//! The webhook projector: reads the log and creates one delivery per (webhook, event) a webhook
//! subscribes to, with the exact body that will be signed and sent.
//!
//! It keeps its own copy of the subscriptions (`webhook_subscriptions`), folded from the
//! `webhook` stream in log order, so an event is matched against the webhooks as they were when
//! the event happened (a webhook created later does not receive it, a webhook disabled at the
//! time does not either). It also keeps what it needs of each message (`webhook_message_data`)
//! for the `data` of the message's later status events. A delivery is unique per (webhook,
//! event): a re-run of a batch changes nothing.

use crate::{ApplyFuture, Projection, ProjectionError, StoredEvent};
use domain::ids::{DeliveryId, MessageId};
use domain::line::{Line, LineEvent};
use domain::message::{Message, MessageEvent};
use domain::phone::PhoneNumber;
use domain::webhook::{Webhook, WebhookEvent};
use domain::webhook_delivery::{self as wd, Notification};
use domain::Aggregate;
use serde_json::Value;
use sqlx::PgConnection;

pub struct WebhookDeliveries;

impl Projection for WebhookDeliveries {
    fn name(&self) -> &'static str {
        "webhook_deliveries"
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            match event.stream_type.as_str() {
                Webhook::STREAM_TYPE => subscriptions(conn, event).await,
                Message::STREAM_TYPE => message(conn, event).await,
                Line::STREAM_TYPE => line(conn, event).await,
                _ => Ok(()),
            }
        })
    }
}

async fn line(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
    let line_event = event.decode::<LineEvent>()?;
    let phone: Option<String> = match &line_event {
        LineEvent::Connected { phone, .. } => {
            sqlx::query(
                "INSERT INTO webhook_line_phones (line_id, phone) VALUES ($1, $2) ON CONFLICT (line_id) DO UPDATE SET phone = $2",
            )
            .bind(&event.stream_id)
            .bind(phone.as_str())
            .execute(&mut *conn)
            .await?;
            None
        }
        _ => {
            sqlx::query_scalar("SELECT phone FROM webhook_line_phones WHERE line_id = $1")
                .bind(&event.stream_id)
                .fetch_optional(&mut *conn)
                .await?
        }
    };
    let phone = phone.and_then(|p| PhoneNumber::parse(&p).ok());
    match wd::line_status_data(&event.stream_id, &line_event, phone.as_ref()) {
        Some(data) => notify(conn, event, &event.stream_id, "line.status", data).await,
        None => Ok(()),
    }
}

async fn subscriptions(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
    let id = &event.stream_id;
    match event.decode::<WebhookEvent>()? {
        WebhookEvent::Created { account_id, events, line_id, .. } => {
            let events: Vec<String> = events.into_iter().map(String::from).collect();
            sqlx::query(
                "INSERT INTO webhook_subscriptions (webhook_id, account_id, events, line_id, enabled) VALUES ($1, $2, $3, $4, true) \
                 ON CONFLICT (webhook_id) DO NOTHING",
            )
            .bind(id)
            .bind(account_id.as_str())
            .bind(events)
            .bind(line_id.as_ref().map(|l| l.as_str()))
            .execute(conn)
            .await?;
        }
        WebhookEvent::Updated { events, enabled, line, .. } => {
            let events: Option<Vec<String>> = events.map(|e| e.into_iter().map(String::from).collect());
            sqlx::query(
                "UPDATE webhook_subscriptions SET events = COALESCE($2, events), enabled = COALESCE($3, enabled), \
                     line_id = CASE WHEN $4 THEN $5 ELSE line_id END \
                 WHERE webhook_id = $1",
            )
            .bind(id)
            .bind(events)
            .bind(enabled)
            .bind(line.is_some())
            .bind(line.and_then(|l| l.line_id).map(String::from))
            .execute(conn)
            .await?;
        }
        WebhookEvent::Disabled { .. } => {
            sqlx::query("UPDATE webhook_subscriptions SET enabled = false WHERE webhook_id = $1").bind(id).execute(conn).await?;
        }
        WebhookEvent::Deleted {} => {
            sqlx::query("DELETE FROM webhook_subscriptions WHERE webhook_id = $1").bind(id).execute(&mut *conn).await?;
            // What was still waiting has nowhere to go.
            sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND state IN ('pending', 'held')")
                .bind(id)
                .execute(conn)
                .await?;
        }
        WebhookEvent::SecretRotated { .. } => {}
    }
    Ok(())
}

async fn message(conn: &mut PgConnection, event: &StoredEvent) -> Result<(), ProjectionError> {
    let id = &event.stream_id;
    let (status, whatsapp_id, reason) = match event.decode::<MessageEvent>()? {
        MessageEvent::Queued(q) => {
            let quoted: Option<String> = match &q.quoted_message_id {
                Some(quoted) => sqlx::query_scalar("SELECT whatsapp_id FROM webhook_message_data WHERE message_id = $1")
                    .bind(quoted.as_str())
                    .fetch_optional(&mut *conn)
                    .await?
                    .flatten(),
                None => None,
            };
            let data = wd::outbound_message_data(&q, quoted.as_deref());
            remember(conn, id, q.line_id.as_str(), None, &data, event).await?;
            return Ok(());
        }
        MessageEvent::Received(r) => {
            let quoted: Option<String> = match &r.quoted_engine_message_id {
                Some(quoted) => {
                    sqlx::query_scalar("SELECT message_id FROM webhook_message_data WHERE line_id = $1 AND whatsapp_id = $2")
                        .bind(r.line_id.as_str())
                        .bind(quoted)
                        .fetch_optional(&mut *conn)
                        .await?
                }
                None => None,
            };
            let quoted = quoted.and_then(|q| MessageId::parse(&q).ok());
            let data = wd::inbound_message_data(&r, quoted.as_ref());
            remember(conn, id, r.line_id.as_str(), Some(&r.engine_message_id), &data, event).await?;
            return notify(conn, event, r.line_id.as_str(), "message.received", data).await;
        }
        MessageEvent::DispatchStarted { .. } => return Ok(()),
        MessageEvent::Sent { engine_message_id } => ("sent", Some(engine_message_id), None),
        MessageEvent::Delivered {} => ("delivered", None, None),
        MessageEvent::Read {} => ("read", None, None),
        MessageEvent::Failed { reason } => ("failed", None, Some(reason)),
    };
    let known: Option<(String, Option<String>, Value)> = sqlx::query_as(
        "UPDATE webhook_message_data SET whatsapp_id = COALESCE($2, whatsapp_id) WHERE message_id = $1 \
         RETURNING line_id, whatsapp_id, data",
    )
    .bind(id)
    .bind(&whatsapp_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((line_id, whatsapp_id, data)) = known else { return Ok(()) };
    let data = wd::with_status(&data, status, whatsapp_id.as_deref(), reason.as_deref());
    let event_type = if status == "sent" { "message.sent" } else { "message.status" };
    notify(conn, event, &line_id, event_type, data).await
}

async fn remember(
    conn: &mut PgConnection,
    message_id: &str,
    line_id: &str,
    whatsapp_id: Option<&str>,
    data: &Value,
    event: &StoredEvent,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_message_data (message_id, line_id, whatsapp_id, data, recorded_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(message_id)
    .bind(line_id)
    .bind(whatsapp_id)
    .bind(data)
    .bind(event.recorded_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// One delivery for each webhook of the account that subscribes to `event_type` on this line.
async fn notify(
    conn: &mut PgConnection,
    event: &StoredEvent,
    line_id: &str,
    event_type: &str,
    data: Value,
) -> Result<(), ProjectionError> {
    let webhooks: Vec<String> = sqlx::query_scalar(
        "SELECT webhook_id FROM webhook_subscriptions \
         WHERE account_id = $1 AND enabled AND $2 = ANY(events) AND (line_id IS NULL OR line_id = $3)",
    )
    .bind(&event.tenant_id)
    .bind(event_type)
    .bind(line_id)
    .fetch_all(&mut *conn)
    .await?;
    if webhooks.is_empty() {
        return Ok(());
    }
    let body = Notification {
        id: event.event_id.clone(),
        event: event_type.to_owned(),
        line_id: Some(line_id.to_owned()),
        created_at: event.recorded_at,
        data,
    }
    .to_body();
    let ids: Vec<String> = webhooks.iter().map(|_| DeliveryId::new().to_string()).collect();
    sqlx::query(
        "INSERT INTO webhook_deliveries (delivery_id, webhook_id, account_id, event_id, event_type, line_key, body, state, \
             next_attempt_at, created_at, updated_at) \
         SELECT d, w, $3, $4, $5, $6, $7, 'pending', now(), now(), now() FROM UNNEST($1::text[], $2::text[]) AS t(d, w) \
         ON CONFLICT ON CONSTRAINT webhook_deliveries_once DO NOTHING",
    )
    .bind(&ids)
    .bind(&webhooks)
    .bind(&event.tenant_id)
    .bind(&event.event_id)
    .bind(event_type)
    .bind(line_id)
    .bind(body)
    .execute(conn)
    .await?;
    Ok(())
}
