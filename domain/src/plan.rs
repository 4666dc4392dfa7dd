//! Plans and their limits. The catalog itself comes from configuration; this module validates it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A quota metric, counted per account and billing cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    SentMessages,
    WebhookEvents,
    Lines,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::SentMessages, Metric::WebhookEvents, Metric::Lines];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::SentMessages => "sent_messages",
            Metric::WebhookEvents => "webhook_events",
            Metric::Lines => "lines",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The limits of one plan, per billing cycle (lines: at any time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanLimits {
    pub sent_messages: u64,
    pub webhook_events: u64,
    pub lines: u64,
}

impl PlanLimits {
    pub fn limit(&self, metric: Metric) -> u64 {
        match metric {
            Metric::SentMessages => self.sent_messages,
            Metric::WebhookEvents => self.webhook_events,
            Metric::Lines => self.lines,
        }
    }
}

/// A plan's name: lowercase letters, digits, `-` and `_`, 1 to 32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PlanName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("`{0}` is not a valid plan name (lowercase letters, digits, '-' and '_', at most 32)")]
    InvalidName(String),
    #[error("unknown plan `{name}`; known plans: {known}")]
    Unknown { name: String, known: String },
}

impl PlanName {
    pub fn parse(value: &str) -> Result<Self, PlanError> {
        let ok = !value.is_empty()
            && value.len() <= 32
            && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(PlanError::InvalidName(value.chars().take(64).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlanName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for PlanName {
    type Error = PlanError;
    fn try_from(value: String) -> Result<Self, PlanError> {
        Self::parse(&value)
    }
}

impl From<PlanName> for String {
    fn from(p: PlanName) -> String {
        p.0
    }
}

/// The plans an operator offers, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlanCatalog {
    plans: BTreeMap<PlanName, PlanLimits>,
}

impl PlanCatalog {
    pub fn new(plans: BTreeMap<PlanName, PlanLimits>) -> Self {
        Self { plans }
    }

    /// Look a plan up by name, with an error that lists the plans there are.
    pub fn get(&self, name: &str) -> Result<(&PlanName, &PlanLimits), PlanError> {
        self.plans
            .get_key_value(name)
            .ok_or_else(|| PlanError::Unknown { name: name.chars().take(64).collect(), known: self.names().join(", ") })
    }

    pub fn names(&self) -> Vec<&str> {
        self.plans.keys().map(PlanName::as_str).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&PlanName, &PlanLimits)> {
        self.plans.iter()
    }
}

impl std::borrow::Borrow<str> for PlanName {
    fn borrow(&self) -> &str {
        &self.0
    }
}
