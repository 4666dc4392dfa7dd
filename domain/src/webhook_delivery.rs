//! Delivering events to webhooks: what a notification says, when a failed delivery is tried
//! again, what a receiver's answer means, and the event that charges a delivery to the plan's
//! `webhook_events` quota.

use crate::chat_id::ChatId;
use crate::event::DomainEvent;
use crate::ids::{AccountId, DeliveryId, EventId, MessageId, WebhookId};
use crate::line::LineEvent;
use crate::message::{Content, Queued, Received};
use crate::phone::PhoneNumber;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// The stream of a delivery's charge: one event at most per delivery, so a delivery is never
/// counted twice (a second charge fails on the stream's version).
pub const STREAM_TYPE: &str = "webhook_delivery";

/// The event type of the test event `POST /v1/webhooks/{id}/test` sends.
pub const TEST_EVENT: &str = "webhook.test";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum DeliveryEvent {
    /// The delivery was first sent and counted against the plan's `webhook_events`.
    #[serde(rename = "webhook_delivery.charged")]
    Charged {
        delivery_id: DeliveryId,
        webhook_id: WebhookId,
        account_id: AccountId,
        /// The event delivered.
        event_id: EventId,
        /// The billing cycle it counts against.
        cycle_start: DateTime<Utc>,
    },
}

impl DomainEvent for DeliveryEvent {}

/// The body a receiver gets. `id` is the id of the event in the log: the same on every retry, so
/// a receiver can drop duplicates by it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notification {
    pub id: String,
    pub event: String,
    pub line_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub data: Value,
}

impl Notification {
    /// The exact bytes that are signed and sent.
    pub fn to_body(&self) -> String {
        serde_json::to_string(self).expect("a notification serializes")
    }
}

fn content_fields(content: &Content) -> Value {
    match content {
        Content::Text { text } => json!({"type": "text", "text": text.as_str()}),
        Content::Media { media_url, media_type, caption } => json!({
            "type": media_type.as_str(),
            "media_url": media_url,
            "media_type": media_type.as_str(),
            "caption": caption.as_ref().map(|c| c.as_str()),
        }),
        Content::Reaction { target_message_id, target_engine_message_id, emoji } => json!({
            "type": "reaction",
            "reaction": {
                "emoji": emoji.as_str(),
                "message_id": target_message_id,
                "whatsapp_id": target_engine_message_id,
            },
        }),
    }
}

/// The chat: `phone` as the API takes it (a phone, or a group's jid) and its `jid`.
fn chat_fields(chat: &ChatId) -> Value {
    json!({"phone": chat.as_str(), "jid": chat.jid()})
}

/// The order of the fields of a message's `data`, whatever order they were added in (and
/// however a database stored them), so every event of a message reads the same way.
const MESSAGE_FIELDS: [&str; 17] = [
    "message_id",
    "whatsapp_id",
    "direction",
    "phone",
    "jid",
    "sender",
    "type",
    "text",
    "caption",
    "media_url",
    "media_type",
    "reaction",
    "quoted_message_id",
    "quoted_whatsapp_id",
    "status",
    "failure_reason",
    "line_id",
];

fn merge(base: Value, extra: Value) -> Value {
    let (Value::Object(mut fields), Value::Object(extra)) = (base, extra) else { unreachable!("data are objects") };
    fields.extend(extra);
    let mut ordered = serde_json::Map::new();
    for key in MESSAGE_FIELDS {
        if let Some(v) = fields.remove(key) {
            ordered.insert(key.to_owned(), v);
        }
    }
    ordered.extend(fields);
    Value::Object(ordered)
}

/// The `data` of a message event, as known when the message was accepted for sending; the
/// status events add `status` (and `whatsapp_id` once it is known).
pub fn outbound_message_data(q: &Queued, quoted_whatsapp_id: Option<&str>) -> Value {
    let base = json!({
        "message_id": q.message_id,
        "whatsapp_id": null,
        "direction": "outbound",
        "quoted_message_id": q.quoted_message_id,
        "quoted_whatsapp_id": quoted_whatsapp_id,
    });
    merge(merge(base, chat_fields(&q.to)), content_fields(&q.content))
}

/// The `data` of `message.received`. A message in a group names its `sender` too.
pub fn inbound_message_data(r: &Received, quoted_message_id: Option<&MessageId>) -> Value {
    let mut base = json!({
        "message_id": r.message_id,
        "whatsapp_id": r.engine_message_id,
        "direction": "inbound",
        "quoted_message_id": quoted_message_id,
        "quoted_whatsapp_id": r.quoted_engine_message_id,
        "status": "received",
    });
    if r.group.is_some() {
        base["sender"] = json!({"phone": r.from.as_str(), "jid": r.from.jid()});
    }
    merge(merge(base, chat_fields(&r.chat())), content_fields(&r.content))
}

/// A message's data with its new status (and the reason, for `failed`).
pub fn with_status(data: &Value, status: &str, whatsapp_id: Option<&str>, reason: Option<&str>) -> Value {
    let mut extra = json!({"status": status});
    if let Some(id) = whatsapp_id {
        extra["whatsapp_id"] = json!(id);
    }
    if let Some(reason) = reason {
        extra["failure_reason"] = json!(reason);
    }
    merge(data.clone(), extra)
}

/// The `line.status` data of a line event, if it changes the line's status. `phone` is the number
/// the line was last linked to (a connection names it; the other events do not).
pub fn line_status_data(line_id: &str, event: &LineEvent, phone: Option<&PhoneNumber>) -> Option<Value> {
    let (status, reason) = match event {
        LineEvent::Connected { .. } => ("connected", None),
        LineEvent::Disconnected { reason } => ("disconnected", Some(reason.as_str())),
        LineEvent::LoggedOut { reason } => ("logged_out", reason.as_deref()),
        LineEvent::QrExpired {} => ("qr_expired", None),
        LineEvent::PairingRestarted {} => ("pending_qr", None),
        LineEvent::Created { .. } => return None,
    };
    let phone = match event {
        LineEvent::Connected { phone, .. } => Some(phone),
        _ => phone,
    };
    let mut data = json!({
        "line_id": line_id,
        "status": status,
        "phone": phone.map(|p| p.as_str()),
        "jid": phone.map(|p| p.jid()),
    });
    if let Some(reason) = reason {
        data["reason"] = json!(reason);
    }
    Some(data)
}

/// How long to wait before each retry: `delays[n]` after the (n+1)-th failed attempt. Each wait
/// is spread by up to ±`jitter` (a fraction) so that many failed deliveries do not come back at
/// the same instant.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    pub delays: Vec<Duration>,
    pub jitter: f64,
}

impl RetrySchedule {
    /// The wait after `failed_attempts` failures, or `None` when the schedule is exhausted and
    /// the delivery is given up. `unit` is a uniform random number in [0, 1).
    pub fn delay(&self, failed_attempts: u32, unit: f64) -> Option<Duration> {
        let base = *self.delays.get(failed_attempts.checked_sub(1)? as usize)?;
        let factor = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Some(base.mul_f64(factor.max(0.0)))
    }

    /// The whole span the schedule covers, without jitter.
    pub fn span(&self) -> Duration {
        self.delays.iter().sum()
    }
}

/// What a receiver's answer means for the delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// 2xx.
    Delivered,
    /// 410 Gone: the endpoint is gone for good; the webhook is disabled.
    Gone,
    /// Anything else (another status, a timeout, a refused connection): try again later, no
    /// sooner than `not_before` when the receiver said so (429 and 503 with Retry-After).
    Retry { not_before: Option<Duration> },
}

/// The longest Retry-After honoured; a receiver cannot park a delivery for longer than this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

pub fn verdict(status: Option<u16>, retry_after: Option<&str>, now: DateTime<Utc>) -> Verdict {
    match status {
        Some(s) if (200..300).contains(&s) => Verdict::Delivered,
        Some(410) => Verdict::Gone,
        Some(429 | 503) => Verdict::Retry { not_before: retry_after.and_then(|v| parse_retry_after(v, now)) },
        _ => Verdict::Retry { not_before: None },
    }
}

/// `Retry-After` as delay-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
            (at - now).to_std().unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::LineId;
    use crate::message::MessageText;

    fn schedule() -> RetrySchedule {
        RetrySchedule { delays: vec![Duration::from_secs(5), Duration::from_secs(60)], jitter: 0.2 }
    }

    #[test]
    fn retries_follow_the_schedule_within_the_jitter_and_then_stop() {
        let s = schedule();
        assert_eq!(s.delay(1, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(s.delay(1, 0.0), Some(Duration::from_secs(4)));
        assert!(s.delay(2, 0.999).unwrap() < Duration::from_secs(72));
        assert_eq!(s.delay(3, 0.5), None);
        assert_eq!(s.delay(0, 0.5), None);
        assert_eq!(s.span(), Duration::from_secs(65));
    }

    #[test]
    fn answers_are_judged_by_status() {
        let now = Utc::now();
        assert_eq!(verdict(Some(204), None, now), Verdict::Delivered);
        assert_eq!(verdict(Some(410), None, now), Verdict::Gone);
        assert_eq!(verdict(Some(500), Some("30"), now), Verdict::Retry { not_before: None });
        assert_eq!(verdict(None, None, now), Verdict::Retry { not_before: None });
        assert_eq!(verdict(Some(429), Some("30"), now), Verdict::Retry { not_before: Some(Duration::from_secs(30)) });
        assert_eq!(verdict(Some(503), Some("999999"), now), Verdict::Retry { not_before: Some(MAX_RETRY_AFTER) });
        assert_eq!(verdict(Some(503), Some("soon"), now), Verdict::Retry { not_before: None });
    }

    #[test]
    fn retry_after_takes_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("Wed, 25 Nov 2026 10:02:00 GMT", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 25 Nov 2026 09:00:00 GMT", now), Some(Duration::ZERO));
    }

    #[test]
    fn message_data_names_the_chat_both_ways_and_takes_a_status() {
        let q = Queued {
            message_id: MessageId::parse("msg_0000000000000000000000000a").unwrap(),
            line_id: LineId::parse("line_0000000000000000000000000a").unwrap(),
            account_id: AccountId::parse("acc_0000000000000000000000000a").unwrap(),
            to: ChatId::parse("+34600000000").unwrap(),
            content: Content::Text { text: MessageText::parse("hola").unwrap() },
            quoted_message_id: None,
            archive_policy: Default::default(),
            cycle_start: Utc::now(),
            idempotency: None,
        };
        let data = with_status(&outbound_message_data(&q, None), "sent", Some("3EB0AA"), None);
        assert_eq!(data["jid"], "34600000000@s.whatsapp.net");
        assert_eq!(data["phone"], "+34600000000");
        assert_eq!(data["type"], "text");
        assert_eq!(data["text"], "hola");
        assert_eq!(data["status"], "sent");
        assert_eq!(data["whatsapp_id"], "3EB0AA");
        assert_eq!(data["direction"], "outbound");
        let keys: Vec<&String> = data.as_object().unwrap().keys().collect();
        assert_eq!(keys[..3], ["message_id", "whatsapp_id", "direction"]);
    }

    #[test]
    fn a_group_message_names_the_group_as_the_chat_and_its_sender() {
        let r = Received {
            message_id: MessageId::parse("msg_0000000000000000000000000b").unwrap(),
            line_id: LineId::parse("line_0000000000000000000000000a").unwrap(),
            account_id: AccountId::parse("acc_0000000000000000000000000a").unwrap(),
            from: PhoneNumber::parse("+34600000002").unwrap(),
            group: crate::chat_id::GroupJid::parse("120363041234567890@g.us"),
            engine_message_id: "3EB0BB".into(),
            content: Content::Text { text: MessageText::parse("hola a todos").unwrap() },
            quoted_engine_message_id: None,
        };
        let data = inbound_message_data(&r, None);
        assert_eq!(
            (data["phone"].as_str(), data["jid"].as_str()),
            (Some("120363041234567890@g.us"), Some("120363041234567890@g.us"))
        );
        assert_eq!(data["sender"], json!({"phone": "+34600000002", "jid": "34600000002@s.whatsapp.net"}));
        let direct = inbound_message_data(&Received { group: None, ..r }, None);
        assert_eq!(direct["phone"], "+34600000002");
        assert!(direct.get("sender").is_none(), "a direct chat's sender is the chat");
    }

    #[test]
    fn line_status_names_the_phone_even_when_the_event_does_not() {
        let phone = PhoneNumber::parse("+34600000000").unwrap();
        let down = LineEvent::Disconnected { reason: "phone offline".into() };
        let data = line_status_data("line_x", &down, Some(&phone)).unwrap();
        assert_eq!((data["status"].as_str(), data["phone"].as_str()), (Some("disconnected"), Some("+34600000000")));
        assert_eq!(data["reason"], "phone offline");
        assert_eq!(line_status_data("line_x", &LineEvent::LoggedOut { reason: None }, None).unwrap()["phone"], Value::Null);
    }
}
