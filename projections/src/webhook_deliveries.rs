//! The webhook projector: reads the log and creates one delivery per (webhook, event) a webhook
//! subscribes to, with the exact body that will be signed and sent.
//!
//! It keeps its own copy of the subscriptions (`webhook_subscriptions`), folded from the
//! `webhook` stream in log order, so an event is matched against the webhooks as they were when
//! the event happened (a webhook created later does not receive it, a webhook disabled at the
//! time does not either). It also keeps what it needs of each message (`webhook_message_data`)
//! for the `data` of the message's later status events. A delivery is unique per (webhook,
//! event): a re-run of a batch changes nothing.

use crate::{ApplyFuture, LogPosition, Projection, ProjectionError, StoredEvent};
use chrono::{DateTime, Utc};
use domain::ids::{DeliveryId, MessageId};
use domain::line::{Line, LineEvent};
use domain::message::{Message, MessageEvent};
use domain::phone::PhoneNumber;
use domain::webhook::{Webhook, WebhookEvent};
use domain::webhook_delivery::{self as wd, Notification};
use domain::Aggregate;
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The webhook projector. [`WebhookDeliveries::with_lane_hints`] tells this process's delivery
/// worker which lanes (webhook and line) got new deliveries, so it can go straight to them.
#[derive(Default)]
pub struct WebhookDeliveries {
    lanes: Option<LaneHints>,
}

impl WebhookDeliveries {
    pub fn with_lane_hints(lanes: LaneHints) -> Self {
        Self { lanes: Some(lanes) }
    }
}

/// Lanes (webhook id, line key) that got deliveries, each with the position of the last event
/// that gave it one. The delivery worker takes only lanes whose position the projector has
/// committed: a lane noted by a batch still in progress is not looked at before its rows exist.
#[derive(Clone, Default)]
pub struct LaneHints(Arc<Mutex<HashMap<(String, String), LogPosition>>>);

impl LaneHints {
    fn note(&self, webhook_id: &str, line_key: &str, at: LogPosition) {
        let mut lanes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let noted = lanes.entry((webhook_id.to_owned(), line_key.to_owned())).or_insert(at);
        *noted = (*noted).max(at);
    }

    /// The lanes noted at or before `committed`, removed from the hints.
    pub fn take_committed(&self, committed: LogPosition) -> Vec<(String, String)> {
        let mut lanes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let ready: Vec<(String, String)> = lanes.iter().filter(|(_, at)| **at <= committed).map(|(k, _)| k.clone()).collect();
        for lane in &ready {
            lanes.remove(lane);
        }
        ready
    }
}

impl Projection for WebhookDeliveries {
    fn name(&self) -> &'static str {
        "webhook_deliveries"
    }

    fn stream_types(&self) -> &'static [&'static str] {
        &[Webhook::STREAM_TYPE, Message::STREAM_TYPE, Line::STREAM_TYPE]
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        self.apply_batch(conn, std::slice::from_ref(event))
    }

    /// A batch is folded in memory and written with one statement per table: the message data it
    /// needs is read in one query, subscriptions in one per account set, and its deliveries are
    /// inserted in one statement, in log order. Webhook and line events (rare) are written as
    /// they come, after what the batch gathered before them.
    fn apply_batch<'a>(&'a self, conn: &'a mut PgConnection, events: &'a [StoredEvent]) -> ApplyFuture<'a> {
        Box::pin(async move {
            // Each message event decoded once, for the read ahead and for the fold.
            let decoded = events
                .iter()
                .map(|e| (e.stream_type == Message::STREAM_TYPE).then(|| e.decode::<MessageEvent>()).transpose())
                .collect::<Result<Vec<_>, _>>()?;
            let mut batch = Batch::load(conn, events, &decoded).await?;
            for (event, message) in events.iter().zip(decoded) {
                match event.stream_type.as_str() {
                    Webhook::STREAM_TYPE => {
                        batch.flush(conn, self.lanes.as_ref()).await?;
                        subscriptions(conn, event).await?;
                        batch.subscriptions.remove(&event.tenant_id);
                    }
                    Message::STREAM_TYPE => {
                        if let Some(message) = message {
                            batch.message(conn, event, message).await?;
                        }
                    }
                    Line::STREAM_TYPE => line(conn, &mut batch, event).await?,
                    _ => {}
                }
            }
            batch.flush(conn, self.lanes.as_ref()).await
        })
    }
}

/// What the projector knows of a message: its line, WhatsApp id and `data`.
struct MessageData {
    line_id: String,
    whatsapp_id: Option<String>,
    data: Value,
    recorded_at: DateTime<Utc>,
    /// Not yet in `webhook_message_data`.
    new: bool,
    /// Its WhatsApp id changed in this batch.
    changed: bool,
}

/// A row of `webhook_message_data`.
#[derive(sqlx::FromRow)]
struct KnownMessage {
    message_id: String,
    line_id: String,
    whatsapp_id: Option<String>,
    data: Value,
    recorded_at: DateTime<Utc>,
}

struct Subscription {
    webhook_id: String,
    events: Vec<String>,
    line_id: Option<String>,
}

struct Delivery {
    webhook_id: String,
    account_id: String,
    event_id: String,
    event_type: String,
    line_key: String,
    body: String,
    at: LogPosition,
}

/// One batch's state: the rows it read, and the writes it has gathered.
#[derive(Default)]
struct Batch {
    messages: HashMap<String, MessageData>,
    /// (line id, WhatsApp id) → message id, for quotes of received messages.
    by_whatsapp_id: HashMap<(String, String), String>,
    /// The enabled subscriptions of an account, read when first needed.
    subscriptions: HashMap<String, Vec<Subscription>>,
    deliveries: Vec<Delivery>,
}

impl Batch {
    /// Read, in one query, what the batch's message events need of messages recorded before it.
    async fn load(
        conn: &mut PgConnection,
        events: &[StoredEvent],
        decoded: &[Option<MessageEvent>],
    ) -> Result<Self, ProjectionError> {
        let mut ids = Vec::new();
        let (mut quoted_lines, mut quoted_whatsapp_ids) = (Vec::new(), Vec::new());
        for (event, message) in events.iter().zip(decoded) {
            let Some(message) = message else { continue };
            ids.push(event.stream_id.clone());
            match message {
                MessageEvent::Queued(q) => ids.extend(q.quoted_message_id.as_ref().map(|m| m.to_string())),
                MessageEvent::Received(r) => {
                    if let Some(quoted) = &r.quoted_engine_message_id {
                        quoted_lines.push(r.line_id.to_string());
                        quoted_whatsapp_ids.push(quoted.clone());
                    }
                }
                _ => {}
            }
        }
        let mut batch = Batch::default();
        if ids.is_empty() {
            return Ok(batch);
        }
        let rows: Vec<KnownMessage> = sqlx::query_as(
            "SELECT message_id, line_id, whatsapp_id, data, recorded_at FROM webhook_message_data WHERE message_id = ANY($1) \
             UNION ALL \
             SELECT m.message_id, m.line_id, m.whatsapp_id, m.data, m.recorded_at FROM webhook_message_data m \
             JOIN UNNEST($2::text[], $3::text[]) AS q(line_id, whatsapp_id) \
               ON m.line_id = q.line_id AND m.whatsapp_id = q.whatsapp_id",
        )
        .bind(&ids)
        .bind(&quoted_lines)
        .bind(&quoted_whatsapp_ids)
        .fetch_all(&mut *conn)
        .await?;
        for KnownMessage { message_id, line_id, whatsapp_id, data, recorded_at } in rows {
            batch.remember(message_id, MessageData { line_id, whatsapp_id, data, recorded_at, new: false, changed: false });
        }
        Ok(batch)
    }

    fn remember(&mut self, message_id: String, data: MessageData) {
        if self.messages.contains_key(&message_id) {
            return;
        }
        if let Some(whatsapp_id) = &data.whatsapp_id {
            self.by_whatsapp_id.insert((data.line_id.clone(), whatsapp_id.clone()), message_id.clone());
        }
        self.messages.insert(message_id, data);
    }

    async fn message(
        &mut self,
        conn: &mut PgConnection,
        event: &StoredEvent,
        message: MessageEvent,
    ) -> Result<(), ProjectionError> {
        let id = &event.stream_id;
        let (status, whatsapp_id, reason) = match message {
            MessageEvent::Queued(q) => {
                let quoted = q.quoted_message_id.as_ref().and_then(|quoted| self.messages.get(quoted.as_str()));
                let data = wd::outbound_message_data(&q, quoted.and_then(|m| m.whatsapp_id.as_deref()));
                let line_id = q.line_id.to_string();
                let recorded_at = event.recorded_at;
                self.remember(
                    id.clone(),
                    MessageData { line_id, whatsapp_id: None, data, recorded_at, new: true, changed: false },
                );
                return Ok(());
            }
            MessageEvent::Received(r) => {
                let line_id = r.line_id.to_string();
                let quoted = r.quoted_engine_message_id.as_ref().and_then(|quoted| {
                    let message_id = self.by_whatsapp_id.get(&(line_id.clone(), quoted.clone()))?;
                    MessageId::parse(message_id).ok()
                });
                let data = wd::inbound_message_data(&r, quoted.as_ref());
                let whatsapp_id = Some(r.engine_message_id.clone());
                let known = MessageData {
                    line_id: line_id.clone(),
                    whatsapp_id,
                    data: data.clone(),
                    recorded_at: event.recorded_at,
                    new: true,
                    changed: false,
                };
                self.remember(id.clone(), known);
                return self.notify(conn, event, &line_id, "message.received", data).await;
            }
            MessageEvent::DispatchStarted { .. } => return Ok(()),
            MessageEvent::Sent { engine_message_id } => ("sent", Some(engine_message_id), None),
            MessageEvent::Delivered {} => ("delivered", None, None),
            MessageEvent::Read {} => ("read", None, None),
            MessageEvent::Failed { reason } => ("failed", None, Some(reason)),
        };
        let Some(known) = self.messages.get_mut(id.as_str()) else { return Ok(()) };
        if let Some(whatsapp_id) = whatsapp_id {
            known.changed |= known.whatsapp_id.as_ref() != Some(&whatsapp_id);
            known.whatsapp_id = Some(whatsapp_id.clone());
            self.by_whatsapp_id.insert((known.line_id.clone(), whatsapp_id), id.clone());
        }
        let data = wd::with_status(&known.data, status, known.whatsapp_id.as_deref(), reason.as_deref());
        let line_id = known.line_id.clone();
        let event_type = if status == "sent" { "message.sent" } else { "message.status" };
        self.notify(conn, event, &line_id, event_type, data).await
    }

    /// One delivery for each webhook of the account that subscribes to `event_type` on this line.
    async fn notify(
        &mut self,
        conn: &mut PgConnection,
        event: &StoredEvent,
        line_id: &str,
        event_type: &str,
        data: Value,
    ) -> Result<(), ProjectionError> {
        if !self.subscriptions.contains_key(&event.tenant_id) {
            let rows: Vec<(String, Vec<String>, Option<String>)> = sqlx::query_as(
                "SELECT webhook_id, events, line_id FROM webhook_subscriptions WHERE account_id = $1 AND enabled \
                 ORDER BY webhook_id",
            )
            .bind(&event.tenant_id)
            .fetch_all(&mut *conn)
            .await?;
            let subscriptions =
                rows.into_iter().map(|(webhook_id, events, line_id)| Subscription { webhook_id, events, line_id }).collect();
            self.subscriptions.insert(event.tenant_id.clone(), subscriptions);
        }
        let webhooks: Vec<&str> = self.subscriptions[&event.tenant_id]
            .iter()
            .filter(|s| s.events.iter().any(|e| e == event_type) && s.line_id.as_deref().is_none_or(|l| l == line_id))
            .map(|s| s.webhook_id.as_str())
            .collect();
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
        for webhook_id in webhooks {
            self.deliveries.push(Delivery {
                webhook_id: webhook_id.to_owned(),
                account_id: event.tenant_id.clone(),
                event_id: event.event_id.clone(),
                event_type: event_type.to_owned(),
                line_key: line_id.to_owned(),
                body: body.clone(),
                at: event.position(),
            });
        }
        Ok(())
    }

    /// Write what the batch gathered so far: new message data, changed WhatsApp ids, and the
    /// deliveries, in log order (their `seq` is each lane's order).
    async fn flush(&mut self, conn: &mut PgConnection, lanes: Option<&LaneHints>) -> Result<(), ProjectionError> {
        let (mut new_ids, mut new_lines, mut new_whatsapp_ids, mut new_data, mut new_times) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut changed_ids, mut changed_whatsapp_ids) = (Vec::new(), Vec::new());
        for (id, m) in self.messages.iter_mut() {
            if m.new {
                new_ids.push(id.clone());
                new_lines.push(m.line_id.clone());
                new_whatsapp_ids.push(m.whatsapp_id.clone());
                new_data.push(m.data.clone());
                new_times.push(m.recorded_at);
            } else if m.changed {
                changed_ids.push(id.clone());
                changed_whatsapp_ids.push(m.whatsapp_id.clone());
            }
            m.new = false;
            m.changed = false;
        }
        if !new_ids.is_empty() {
            sqlx::query(
                "INSERT INTO webhook_message_data (message_id, line_id, whatsapp_id, data, recorded_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[]) \
                 ON CONFLICT (message_id) DO NOTHING",
            )
            .bind(&new_ids)
            .bind(&new_lines)
            .bind(&new_whatsapp_ids)
            .bind(&new_data)
            .bind(&new_times)
            .execute(&mut *conn)
            .await?;
        }
        if !changed_ids.is_empty() {
            sqlx::query(
                "UPDATE webhook_message_data m SET whatsapp_id = u.whatsapp_id \
                 FROM UNNEST($1::text[], $2::text[]) AS u(message_id, whatsapp_id) WHERE m.message_id = u.message_id",
            )
            .bind(&changed_ids)
            .bind(&changed_whatsapp_ids)
            .execute(&mut *conn)
            .await?;
        }
        if self.deliveries.is_empty() {
            return Ok(());
        }
        let deliveries = std::mem::take(&mut self.deliveries);
        let column = |f: fn(&Delivery) -> &str| deliveries.iter().map(|d| f(d).to_owned()).collect::<Vec<String>>();
        let ids: Vec<String> = deliveries.iter().map(|_| DeliveryId::new().to_string()).collect();
        sqlx::query(
            "INSERT INTO webhook_deliveries (delivery_id, webhook_id, account_id, event_id, event_type, line_key, body, state, \
                 next_attempt_at, created_at, updated_at) \
             SELECT d, w, a, e, t, l, b, 'pending', now(), now(), now() \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
                 WITH ORDINALITY AS u(d, w, a, e, t, l, b, n) \
             ORDER BY n \
             ON CONFLICT ON CONSTRAINT webhook_deliveries_once DO NOTHING",
        )
        .bind(&ids)
        .bind(column(|d| &d.webhook_id))
        .bind(column(|d| &d.account_id))
        .bind(column(|d| &d.event_id))
        .bind(column(|d| &d.event_type))
        .bind(column(|d| &d.line_key))
        .bind(column(|d| &d.body))
        .execute(&mut *conn)
        .await?;
        if let Some(lanes) = lanes {
            for d in &deliveries {
                lanes.note(&d.webhook_id, &d.line_key, d.at);
            }
        }
        Ok(())
    }
}

async fn line(conn: &mut PgConnection, batch: &mut Batch, event: &StoredEvent) -> Result<(), ProjectionError> {
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
        Some(data) => batch.notify(conn, event, &event.stream_id, "line.status", data).await,
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
