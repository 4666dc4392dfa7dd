//! Webhook commands: create, update, rotate the secret, delete. Always scoped to the account.

use super::{execute, CommandError};
use crate::queries::owned::OwnedWebhook;
use crate::store::{EventStore, Metadata};
use domain::ids::{AccountId, WebhookId};
use domain::webhook::{Webhook, WebhookCommand, WebhookError};
use domain::Aggregate;

/// Create a webhook of the account under a new id.
pub async fn create(
    store: &EventStore,
    metadata: &Metadata,
    account_id: &AccountId,
    webhook_id: &WebhookId,
    command: WebhookCommand,
) -> Result<(), CommandError<WebhookError>> {
    debug_assert!(matches!(command, WebhookCommand::Create { .. }));
    run(store, metadata, account_id, webhook_id, command).await
}

/// Run `command` on the account's webhook. (The aggregate checks the account again: a webhook
/// whose stream names another account is `NotFound`.)
pub async fn handle(
    store: &EventStore,
    metadata: &Metadata,
    webhook: &OwnedWebhook,
    command: WebhookCommand,
) -> Result<(), CommandError<WebhookError>> {
    run(store, metadata, webhook.account_id(), webhook.id(), command).await
}

async fn run(
    store: &EventStore,
    metadata: &Metadata,
    account_id: &AccountId,
    webhook_id: &WebhookId,
    command: WebhookCommand,
) -> Result<(), CommandError<WebhookError>> {
    let tenant = account_id.to_string();
    let is_create = matches!(command, WebhookCommand::Create { .. });
    execute::<Webhook, _>(
        store,
        webhook_id.as_str(),
        |_| Some(tenant.clone()),
        metadata,
        |w: &Webhook| match &w.state {
            Some(s) if s.account_id != *account_id => Err(WebhookError::NotFound),
            None if !is_create => Err(WebhookError::NotFound),
            _ => w.decide(command.clone(), &()),
        },
    )
    .await?;
    Ok(())
}
