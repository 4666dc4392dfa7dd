//! The webhook aggregate: an endpoint of a tenant that receives signed events.
//!
//! The signing secret never appears here in clear: commands and events carry it encrypted with the
//! operator's master key (the server encrypts before deciding and decrypts only to sign).

use crate::aggregate::Aggregate;
use crate::event::DomainEvent;
use crate::ids::{AccountId, LineId, WebhookId};
use serde::{Deserialize, Serialize};

/// The events a webhook can subscribe to.
pub const EVENT_TYPES: [&str; 4] = ["message.received", "message.sent", "message.status", "line.status"];

/// A subscribed event type, one of [`EVENT_TYPES`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventType(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("`{0}` is not an event type; use message.received, message.sent, message.status or line.status")]
    UnknownEvent(String),
    #[error("at least one event type is required")]
    NoEvents,
    #[error("description must be at most 500 characters")]
    DescriptionTooLong,
    #[error("webhook not found")]
    NotFound,
    #[error("webhook already exists")]
    AlreadyExists,
}

impl EventType {
    pub fn parse(value: &str) -> Result<Self, WebhookError> {
        if EVENT_TYPES.contains(&value) {
            Ok(Self(value.to_owned()))
        } else {
            Err(WebhookError::UnknownEvent(value.chars().take(64).collect()))
        }
    }

    pub fn all() -> Vec<EventType> {
        EVENT_TYPES.iter().map(|t| EventType(t.to_string())).collect()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EventType {
    type Error = WebhookError;
    fn try_from(v: String) -> Result<Self, WebhookError> {
        Self::parse(&v)
    }
}

impl From<EventType> for String {
    fn from(e: EventType) -> String {
        e.0
    }
}

/// Which line's events a webhook receives: one line's (`line_id`), or every line's (`None`).
/// An update carries it only when it changes (`"line": {"line_id": null}` widens it to every line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineScope {
    pub line_id: Option<LineId>,
}

/// A webhook's signing secret, encrypted (nonce and ciphertext, base64).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SealedSecret(pub String);

#[derive(Debug, Clone)]
pub enum WebhookCommand {
    Create {
        webhook_id: WebhookId,
        account_id: AccountId,
        url: String,
        events: Vec<EventType>,
        line_id: Option<LineId>,
        description: Option<String>,
        secret: SealedSecret,
    },
    Update {
        url: Option<String>,
        events: Option<Vec<EventType>>,
        enabled: Option<bool>,
        description: Option<String>,
        /// Which line's events it receives, when that changes.
        line: Option<LineScope>,
    },
    RotateSecret {
        secret: SealedSecret,
    },
    /// Stop deliveries because the endpoint is failing; `reason` is shown to the tenant.
    Disable {
        reason: String,
    },
    Delete,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum WebhookEvent {
    #[serde(rename = "webhook.created")]
    Created {
        webhook_id: WebhookId,
        account_id: AccountId,
        url: String,
        events: Vec<EventType>,
        line_id: Option<LineId>,
        description: Option<String>,
        secret: SealedSecret,
    },
    #[serde(rename = "webhook.updated")]
    Updated {
        url: Option<String>,
        events: Option<Vec<EventType>>,
        enabled: Option<bool>,
        description: Option<String>,
        /// Absent unless the line changed (events recorded before it could change have none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        line: Option<LineScope>,
    },
    #[serde(rename = "webhook.secret_rotated")]
    SecretRotated { secret: SealedSecret },
    /// Disabled by the delivery worker (410 Gone, or failing for too long). Enabling it again
    /// with an update clears the reason.
    #[serde(rename = "webhook.disabled")]
    Disabled { reason: String },
    #[serde(rename = "webhook.deleted")]
    Deleted {},
}

impl DomainEvent for WebhookEvent {}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Webhook {
    pub state: Option<WebhookState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookState {
    pub webhook_id: WebhookId,
    pub account_id: AccountId,
    pub enabled: bool,
    pub deleted: bool,
}

fn check_description(description: &Option<String>) -> Result<(), WebhookError> {
    match description {
        Some(d) if d.chars().count() > 500 => Err(WebhookError::DescriptionTooLong),
        _ => Ok(()),
    }
}

fn dedup(mut events: Vec<EventType>) -> Result<Vec<EventType>, WebhookError> {
    events.sort();
    events.dedup();
    if events.is_empty() {
        return Err(WebhookError::NoEvents);
    }
    Ok(events)
}

impl Aggregate for Webhook {
    const STREAM_TYPE: &'static str = "webhook";
    type Command = WebhookCommand;
    type Event = WebhookEvent;
    type Error = WebhookError;
    type Context<'a> = ();

    fn decide(&self, command: WebhookCommand, _: &()) -> Result<Vec<WebhookEvent>, WebhookError> {
        match (command, &self.state) {
            (WebhookCommand::Create { webhook_id, account_id, url, events, line_id, description, secret }, None) => {
                check_description(&description)?;
                Ok(vec![WebhookEvent::Created {
                    webhook_id,
                    account_id,
                    url,
                    events: dedup(events)?,
                    line_id,
                    description,
                    secret,
                }])
            }
            (WebhookCommand::Create { .. }, Some(_)) => Err(WebhookError::AlreadyExists),
            (_, None) => Err(WebhookError::NotFound),
            (_, Some(s)) if s.deleted => Err(WebhookError::NotFound),
            (WebhookCommand::Update { url, events, enabled, description, line }, Some(_)) => {
                check_description(&description)?;
                let events = events.map(dedup).transpose()?;
                if url.is_none() && events.is_none() && enabled.is_none() && description.is_none() && line.is_none() {
                    return Ok(vec![]);
                }
                Ok(vec![WebhookEvent::Updated { url, events, enabled, description, line }])
            }
            (WebhookCommand::RotateSecret { secret }, Some(_)) => Ok(vec![WebhookEvent::SecretRotated { secret }]),
            // Already disabled (by the tenant or an earlier failure): nothing to record.
            (WebhookCommand::Disable { .. }, Some(s)) if !s.enabled => Ok(vec![]),
            (WebhookCommand::Disable { reason }, Some(_)) => Ok(vec![WebhookEvent::Disabled { reason }]),
            (WebhookCommand::Delete, Some(_)) => Ok(vec![WebhookEvent::Deleted {}]),
        }
    }

    fn apply(&mut self, event: &WebhookEvent) {
        match (event, &mut self.state) {
            (WebhookEvent::Created { webhook_id, account_id, .. }, _) => {
                self.state = Some(WebhookState {
                    webhook_id: webhook_id.clone(),
                    account_id: account_id.clone(),
                    enabled: true,
                    deleted: false,
                })
            }
            (WebhookEvent::Updated { enabled: Some(enabled), .. }, Some(s)) => s.enabled = *enabled,
            (WebhookEvent::Disabled { .. }, Some(s)) => s.enabled = false,
            (WebhookEvent::Deleted {}, Some(s)) => s.deleted = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;

    fn created() -> WebhookEvent {
        WebhookEvent::Created {
            webhook_id: WebhookId::parse("wh_0000000000000000000000000a").unwrap(),
            account_id: AccountId::parse("acc_0000000000000000000000000a").unwrap(),
            url: "https://example.com/hook".into(),
            events: EventType::all(),
            line_id: None,
            description: None,
            secret: SealedSecret("sealed".into()),
        }
    }

    #[test]
    fn event_types_are_the_four_published_ones() {
        assert!(EventType::parse("message.received").is_ok());
        assert_eq!(EventType::parse("message.deleted"), Err(WebhookError::UnknownEvent("message.deleted".into())));
    }

    #[test]
    fn an_update_needs_events_when_it_sets_them_and_changes_nothing_when_empty() {
        let update = |events| WebhookCommand::Update { url: None, events, enabled: None, description: None, line: None };
        assert_eq!(given::<Webhook>(&[created()]).when(update(Some(vec![])), &()), Err(WebhookError::NoEvents));
        assert_eq!(given::<Webhook>(&[created()]).when(update(None), &()), Ok(vec![]));
    }

    #[test]
    fn a_failing_webhook_is_disabled_once() {
        let disable = || WebhookCommand::Disable { reason: "410 Gone".into() };
        assert_eq!(
            given::<Webhook>(&[created()]).when(disable(), &()),
            Ok(vec![WebhookEvent::Disabled { reason: "410 Gone".into() }])
        );
        assert_eq!(
            given::<Webhook>(&[created(), WebhookEvent::Disabled { reason: "x".into() }]).when(disable(), &()),
            Ok(vec![])
        );
        let enabled_again = WebhookEvent::Updated { url: None, events: None, enabled: Some(true), description: None, line: None };
        assert_eq!(
            given::<Webhook>(&[created(), WebhookEvent::Disabled { reason: "x".into() }, enabled_again])
                .when(disable(), &())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_line_change_is_recorded_and_old_updates_without_one_still_read() {
        let everywhere = LineScope { line_id: None };
        let update =
            WebhookCommand::Update { url: None, events: None, enabled: None, description: None, line: Some(everywhere.clone()) };
        let recorded = given::<Webhook>(&[created()]).when(update, &()).unwrap();
        assert_eq!(
            recorded,
            vec![WebhookEvent::Updated { url: None, events: None, enabled: None, description: None, line: Some(everywhere) }]
        );
        let json = serde_json::to_value(&recorded[0]).unwrap();
        assert_eq!(json["line"], serde_json::json!({"line_id": null}), "widening to every line is explicit");
        let old: WebhookEvent = serde_json::from_value(serde_json::json!(
            {"type": "webhook.updated", "url": null, "events": null, "enabled": false, "description": null}
        ))
        .unwrap();
        assert_eq!(old, WebhookEvent::Updated { url: None, events: None, enabled: Some(false), description: None, line: None });
        let unchanged = serde_json::to_value(&old).unwrap();
        assert!(unchanged.get("line").is_none(), "an update that leaves the line alone is written as before");
    }

    #[test]
    fn a_deleted_webhook_is_gone() {
        let gone = [created(), WebhookEvent::Deleted {}];
        assert_eq!(given::<Webhook>(&gone).when(WebhookCommand::Delete, &()), Err(WebhookError::NotFound));
        assert_eq!(
            given::<Webhook>(&gone).when(WebhookCommand::RotateSecret { secret: SealedSecret("x".into()) }, &()),
            Err(WebhookError::NotFound)
        );
    }
}
