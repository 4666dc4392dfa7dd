//! Account commands: open, change plan, suspend, activate.

use super::{execute, CommandError};
use crate::store::{EventStore, Metadata};
use domain::account::{Account, AccountCommand, AccountContext, AccountError, AccountName, OpenAccount};
use domain::ids::AccountId;
use domain::plan::PlanCatalog;
use domain::Aggregate;

pub type AccountResult = Result<(OpenAccount, bool), CommandError<AccountError>>;

/// Run an account command. Returns the account after it and whether anything changed.
pub async fn handle(
    store: &EventStore,
    plans: &PlanCatalog,
    metadata: &Metadata,
    account_id: &AccountId,
    command: AccountCommand,
) -> AccountResult {
    let (state, stored) = execute::<Account, _>(
        store,
        account_id.as_str(),
        |a| a.opened.as_ref().map(|o| o.id.to_string()),
        metadata,
        |state: &Account| state.decide(command.clone(), &AccountContext { now: super::now(), plans }),
    )
    .await?;
    let account = state.opened.ok_or(CommandError::Rejected(AccountError::NotFound))?;
    Ok((account, !stored.is_empty()))
}

pub async fn open(store: &EventStore, plans: &PlanCatalog, metadata: &Metadata, name: &str, plan: &str) -> AccountResult {
    let name = AccountName::parse(name).map_err(CommandError::Rejected)?;
    let account_id = AccountId::new();
    handle(store, plans, metadata, &account_id.clone(), AccountCommand::Open { account_id, name, plan: plan.to_owned() }).await
}
