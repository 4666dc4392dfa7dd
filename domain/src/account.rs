//! The account aggregate: opening, plan changes, suspension and activation.

use crate::aggregate::Aggregate;
use crate::event::DomainEvent;
use crate::ids::AccountId;
use crate::plan::{PlanCatalog, PlanError, PlanName};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Active,
    Suspended,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::Suspended => "suspended",
        }
    }
}

/// An account's display name: 1 to 200 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountName(String);

impl AccountName {
    pub fn parse(value: &str) -> Result<Self, AccountError> {
        let trimmed = value.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 200 || trimmed.chars().any(char::is_control) {
            return Err(AccountError::InvalidName);
        }
        Ok(Self(trimmed.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccountName {
    type Error = AccountError;
    fn try_from(v: String) -> Result<Self, AccountError> {
        Self::parse(&v)
    }
}

impl From<AccountName> for String {
    fn from(n: AccountName) -> String {
        n.0
    }
}

#[derive(Debug, Clone)]
pub enum AccountCommand {
    Open { account_id: AccountId, name: AccountName, plan: String },
    ChangePlan { plan: String },
    Suspend { reason: Option<String> },
    Activate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AccountEvent {
    #[serde(rename = "account.opened")]
    Opened { account_id: AccountId, name: AccountName, plan: PlanName, cycle_anchor: DateTime<Utc> },
    #[serde(rename = "account.plan_changed")]
    PlanChanged { from: PlanName, to: PlanName },
    #[serde(rename = "account.suspended")]
    Suspended { reason: Option<String> },
    #[serde(rename = "account.activated")]
    Activated {},
}

impl DomainEvent for AccountEvent {}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AccountError {
    #[error("account already exists")]
    AlreadyOpened,
    #[error("account not found")]
    NotFound,
    #[error("account name must be 1 to 200 characters with no control characters")]
    InvalidName,
    #[error(transparent)]
    Plan(#[from] PlanError),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Account {
    pub opened: Option<OpenAccount>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OpenAccount {
    pub id: AccountId,
    pub name: AccountName,
    pub plan: PlanName,
    pub status: SubscriptionStatus,
    pub cycle_anchor: DateTime<Utc>,
}

pub struct AccountContext<'a> {
    pub now: DateTime<Utc>,
    pub plans: &'a PlanCatalog,
}

impl Aggregate for Account {
    const STREAM_TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Context<'a> = AccountContext<'a>;

    fn decide(&self, command: AccountCommand, ctx: &AccountContext<'_>) -> Result<Vec<AccountEvent>, AccountError> {
        match (command, &self.opened) {
            (AccountCommand::Open { account_id, name, plan }, None) => {
                let (plan, _) = ctx.plans.get(&plan)?;
                Ok(vec![AccountEvent::Opened { account_id, name, plan: plan.clone(), cycle_anchor: ctx.now }])
            }
            (AccountCommand::Open { .. }, Some(_)) => Err(AccountError::AlreadyOpened),
            (_, None) => Err(AccountError::NotFound),
            (AccountCommand::ChangePlan { plan }, Some(acc)) => {
                let (plan, _) = ctx.plans.get(&plan)?;
                if *plan == acc.plan {
                    return Ok(vec![]);
                }
                Ok(vec![AccountEvent::PlanChanged { from: acc.plan.clone(), to: plan.clone() }])
            }
            (AccountCommand::Suspend { reason }, Some(acc)) => Ok(match acc.status {
                SubscriptionStatus::Suspended => vec![],
                SubscriptionStatus::Active => vec![AccountEvent::Suspended { reason }],
            }),
            (AccountCommand::Activate, Some(acc)) => Ok(match acc.status {
                SubscriptionStatus::Active => vec![],
                SubscriptionStatus::Suspended => vec![AccountEvent::Activated {}],
            }),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match (event, &mut self.opened) {
            (AccountEvent::Opened { account_id, name, plan, cycle_anchor }, _) => {
                self.opened = Some(OpenAccount {
                    id: account_id.clone(),
                    name: name.clone(),
                    plan: plan.clone(),
                    status: SubscriptionStatus::Active,
                    cycle_anchor: *cycle_anchor,
                });
            }
            (AccountEvent::PlanChanged { to, .. }, Some(acc)) => acc.plan = to.clone(),
            (AccountEvent::Suspended { .. }, Some(acc)) => acc.status = SubscriptionStatus::Suspended,
            (AccountEvent::Activated {}, Some(acc)) => acc.status = SubscriptionStatus::Active,
            (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;
    use crate::plan::PlanLimits;
    use std::collections::BTreeMap;

    static PLANS: std::sync::LazyLock<PlanCatalog> = std::sync::LazyLock::new(|| {
        let limits = PlanLimits { sent_messages: 10, webhook_events: 10, lines: 1 };
        PlanCatalog::new(BTreeMap::from([(PlanName::parse("free").unwrap(), limits), (PlanName::parse("pro").unwrap(), limits)]))
    });

    fn context() -> AccountContext<'static> {
        AccountContext { now: now(), plans: &PLANS }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-25T10:00:00Z".parse().unwrap()
    }

    fn opened() -> AccountEvent {
        AccountEvent::Opened {
            account_id: AccountId::parse("acc_0000000000000000000000000a").unwrap(),
            name: AccountName::parse("Acme").unwrap(),
            plan: PlanName::parse("free").unwrap(),
            cycle_anchor: now(),
        }
    }

    #[test]
    fn opening_records_plan_and_anchors_the_cycle_now() {
        let id = AccountId::parse("acc_0000000000000000000000000a").unwrap();
        let events = given::<Account>(&[]).when(
            AccountCommand::Open { account_id: id, name: AccountName::parse(" Acme ").unwrap(), plan: "free".into() },
            &context(),
        );
        assert_eq!(events, Ok(vec![opened()]));
    }

    #[test]
    fn opening_with_an_unknown_plan_lists_the_known_ones() {
        let err = given::<Account>(&[])
            .when(
                AccountCommand::Open {
                    account_id: AccountId::new(),
                    name: AccountName::parse("A").unwrap(),
                    plan: "gold".into(),
                },
                &context(),
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "unknown plan `gold`; known plans: free, pro");
    }

    #[test]
    fn commands_on_a_missing_account_fail() {
        assert_eq!(given::<Account>(&[]).when(AccountCommand::Activate, &context()), Err(AccountError::NotFound));
    }

    #[test]
    fn plan_change_to_the_same_plan_changes_nothing() {
        assert_eq!(
            given::<Account>(&[opened()]).when(AccountCommand::ChangePlan { plan: "free".into() }, &context()),
            Ok(vec![])
        );
        assert_eq!(
            given::<Account>(&[opened()]).when(AccountCommand::ChangePlan { plan: "pro".into() }, &context()),
            Ok(vec![AccountEvent::PlanChanged { from: PlanName::parse("free").unwrap(), to: PlanName::parse("pro").unwrap() }])
        );
    }

    #[test]
    fn suspend_and_activate_are_idempotent() {
        let suspended = AccountEvent::Suspended { reason: None };
        assert_eq!(
            given::<Account>(&[opened()]).when(AccountCommand::Suspend { reason: None }, &context()),
            Ok(vec![suspended.clone()])
        );
        assert_eq!(
            given::<Account>(&[opened(), suspended.clone()]).when(AccountCommand::Suspend { reason: None }, &context()),
            Ok(vec![])
        );
        assert_eq!(
            given::<Account>(&[opened(), suspended]).when(AccountCommand::Activate, &context()),
            Ok(vec![AccountEvent::Activated {}])
        );
        assert_eq!(given::<Account>(&[opened()]).when(AccountCommand::Activate, &context()), Ok(vec![]));
    }

    #[test]
    fn stored_form_keeps_the_type_out_of_the_payload() {
        let (event_type, payload) = opened().to_stored();
        assert_eq!(event_type, "account.opened");
        assert!(payload.get("type").is_none());
        assert_eq!(AccountEvent::from_stored(&event_type, 1, payload).unwrap(), opened());
    }
}
