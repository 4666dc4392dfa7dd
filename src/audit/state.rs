//! An account as it was at a past moment, rebuilt from its events: the account itself, its lines,
//! its keys (ids and status only), its webhooks, and its usage in the billing cycle of that moment.
//!
//! [`fold`] is pure: it reads the events it is given and nothing else, so the same events always
//! give the same state.

use chrono::{DateTime, Utc};
use domain::account::AccountEvent;
use domain::api_key::ApiKeyEvent;
use domain::line::LineEvent;
use domain::message::MessageEvent;
use domain::webhook::WebhookEvent;
use domain::webhook_delivery::DeliveryEvent;
use domain::EventDecodeError;
use futures_util::TryStreamExt;
use projections::log::EVENT_COLUMNS;
use projections::StoredEvent;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AccountAsOf {
    pub account_id: String,
    pub name: String,
    pub plan: String,
    pub status: String,
    pub cycle_anchor: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LineAsOf {
    pub line_id: String,
    pub status: String,
    pub engine: String,
    pub phone: Option<String>,
    /// The WhatsApp identity the engine linked.
    pub jid: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyAsOf {
    pub key_id: String,
    pub name: Option<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub rotations: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WebhookAsOf {
    pub webhook_id: String,
    pub url: String,
    pub events: Vec<String>,
    pub line_id: Option<String>,
    pub description: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret_rotations: u32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UsageAsOf {
    pub cycle_start: DateTime<Utc>,
    pub cycle_end: DateTime<Utc>,
    pub sent_messages: u64,
    pub webhook_events: u64,
    /// Lines not logged out.
    pub lines: u64,
}

/// The state of an account at `as_of`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StateAsOf {
    pub as_of: DateTime<Utc>,
    /// The log position of the last event taken into account.
    pub position: Option<i64>,
    pub events: u64,
    pub account: Option<AccountAsOf>,
    pub lines: Vec<LineAsOf>,
    pub keys: Vec<KeyAsOf>,
    pub webhooks: Vec<WebhookAsOf>,
    pub usage: Option<UsageAsOf>,
}

/// Fold an account's events (in log order, all recorded at or before `as_of`) into its state.
pub fn fold<'e>(as_of: DateTime<Utc>, events: impl IntoIterator<Item = &'e StoredEvent>) -> Result<StateAsOf, EventDecodeError> {
    let mut account: Option<AccountAsOf> = None;
    let mut lines: BTreeMap<String, LineAsOf> = BTreeMap::new();
    let mut keys: BTreeMap<String, KeyAsOf> = BTreeMap::new();
    let mut webhooks: BTreeMap<String, WebhookAsOf> = BTreeMap::new();
    // Counts per billing cycle start, as the events recorded them.
    let mut sent: BTreeMap<DateTime<Utc>, u64> = BTreeMap::new();
    let mut delivered: BTreeMap<DateTime<Utc>, u64> = BTreeMap::new();
    let (mut position, mut count) = (None, 0);
    for e in events {
        count += 1;
        position = Some(e.global_position);
        let id = e.stream_id.clone();
        match e.stream_type.as_str() {
            "account" => match e.decode::<AccountEvent>()? {
                AccountEvent::Opened { account_id, name, plan, cycle_anchor } => {
                    account = Some(AccountAsOf {
                        account_id: account_id.to_string(),
                        name: name.as_str().to_owned(),
                        plan: plan.as_str().to_owned(),
                        status: "active".into(),
                        cycle_anchor,
                    });
                }
                AccountEvent::PlanChanged { to, .. } => account.iter_mut().for_each(|a| a.plan = to.as_str().to_owned()),
                AccountEvent::Suspended { .. } => account.iter_mut().for_each(|a| a.status = "suspended".into()),
                AccountEvent::Activated {} => account.iter_mut().for_each(|a| a.status = "active".into()),
            },
            "api_key" => match e.decode::<ApiKeyEvent>()? {
                ApiKeyEvent::Created { name, .. } => {
                    keys.insert(
                        id.clone(),
                        KeyAsOf { key_id: id, name, status: "active".into(), created_at: e.recorded_at, rotations: 0 },
                    );
                }
                ApiKeyEvent::Rotated { .. } => keys.get_mut(&id).into_iter().for_each(|k| k.rotations += 1),
                ApiKeyEvent::Revoked {} => keys.get_mut(&id).into_iter().for_each(|k| k.status = "revoked".into()),
            },
            "line" => {
                let event = e.decode::<LineEvent>()?;
                if let LineEvent::Created { engine, .. } = &event {
                    let engine =
                        serde_json::to_value(engine).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                    lines.insert(
                        id.clone(),
                        LineAsOf {
                            line_id: id,
                            status: "pending_qr".into(),
                            engine,
                            phone: None,
                            jid: None,
                            created_at: e.recorded_at,
                        },
                    );
                    continue;
                }
                let Some(line) = lines.get_mut(&id) else { continue };
                match event {
                    LineEvent::Connected { phone, jid } => {
                        line.status = "connected".into();
                        line.phone = Some(phone.to_string());
                        line.jid = Some(jid);
                    }
                    LineEvent::Disconnected { .. } => line.status = "disconnected".into(),
                    LineEvent::LoggedOut { .. } => line.status = "logged_out".into(),
                    LineEvent::QrExpired {} => line.status = "qr_expired".into(),
                    LineEvent::PairingRestarted {} => line.status = "pending_qr".into(),
                    LineEvent::Created { .. } => {}
                }
            }
            "webhook" => {
                let event = e.decode::<WebhookEvent>()?;
                if let WebhookEvent::Created { url, events, line_id, description, .. } = event {
                    webhooks.insert(
                        id.clone(),
                        WebhookAsOf {
                            webhook_id: id,
                            url,
                            events: events.iter().map(|t| t.as_str().to_owned()).collect(),
                            line_id: line_id.map(|l| l.to_string()),
                            description,
                            enabled: true,
                            disabled_reason: None,
                            secret_rotations: 0,
                            created_at: e.recorded_at,
                        },
                    );
                    continue;
                }
                let Some(hook) = webhooks.get_mut(&id) else { continue };
                match event {
                    WebhookEvent::Updated { url, events, enabled, description, line } => {
                        if let Some(line) = line {
                            hook.line_id = line.line_id.map(|l| l.to_string());
                        }
                        hook.url = url.unwrap_or(hook.url.clone());
                        if let Some(events) = events {
                            hook.events = events.iter().map(|t| t.as_str().to_owned()).collect();
                        }
                        if let Some(enabled) = enabled {
                            hook.enabled = enabled;
                            if enabled {
                                hook.disabled_reason = None;
                            }
                        }
                        if description.is_some() {
                            hook.description = description;
                        }
                    }
                    WebhookEvent::SecretRotated { .. } => hook.secret_rotations += 1,
                    WebhookEvent::Disabled { reason } => {
                        hook.enabled = false;
                        hook.disabled_reason = Some(reason);
                    }
                    WebhookEvent::Deleted {} => {
                        webhooks.remove(&id);
                    }
                    WebhookEvent::Created { .. } => {}
                }
            }
            "message" if e.event_type == "message.queued" => {
                if let MessageEvent::Queued(q) = e.decode::<MessageEvent>()? {
                    *sent.entry(q.cycle_start).or_default() += 1;
                }
            }
            domain::webhook_delivery::STREAM_TYPE => {
                let DeliveryEvent::Charged { cycle_start, .. } = e.decode::<DeliveryEvent>()?;
                *delivered.entry(cycle_start).or_default() += 1;
            }
            _ => {}
        }
    }
    let usage = account.as_ref().map(|a| {
        let cycle = domain::billing::cycle_containing(a.cycle_anchor, as_of);
        UsageAsOf {
            cycle_start: cycle.start,
            cycle_end: cycle.end,
            sent_messages: sent.get(&cycle.start).copied().unwrap_or(0),
            webhook_events: delivered.get(&cycle.start).copied().unwrap_or(0),
            lines: lines.values().filter(|l| l.status != "logged_out").count() as u64,
        }
    });
    Ok(StateAsOf {
        as_of,
        position,
        events: count,
        account,
        lines: lines.into_values().collect(),
        keys: keys.into_values().collect(),
        webhooks: webhooks.into_values().collect(),
        usage,
    })
}

/// Read the account's events recorded at or before `as_of` and fold them.
pub async fn as_of(pool: &sqlx::PgPool, account_id: &str, as_of: DateTime<Utc>) -> anyhow::Result<StateAsOf> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND recorded_at <= $2 ORDER BY events.transaction_id, events.global_position"
    );
    let events: Vec<StoredEvent> = sqlx::query_as(&sql).bind(account_id).bind(as_of).fetch(pool).try_collect().await?;
    Ok(fold(as_of, &events)?)
}
