//! Resources of the calling account. A command or query that acts on one line, webhook or API key
//! takes an owned value, and only the account-scoped lookups of this module's siblings
//! ([`super::lines::owned`], [`super::webhooks::owned`], [`super::keys::owned`]) can make one:
//! code that forgets to check whose resource an id names does not compile.

use domain::ids::{AccountId, KeyId, LineId, WebhookId};

/// A resource `id` that belongs to `account_id`, as a lookup scoped to that account found it.
#[derive(Debug, Clone)]
pub struct Owned<Id> {
    account_id: AccountId,
    id: Id,
}

impl<Id> Owned<Id> {
    /// Only for the account-scoped lookups in `queries`.
    pub(super) fn vouched(account_id: AccountId, id: Id) -> Self {
        Self { account_id, id }
    }

    pub fn id(&self) -> &Id {
        &self.id
    }

    pub fn account_id(&self) -> &AccountId {
        &self.account_id
    }
}

/// A line of the calling account.
pub type OwnedLine = Owned<LineId>;

/// A webhook of the calling account.
pub type OwnedWebhook = Owned<WebhookId>;

/// An API key of the calling account.
pub type OwnedKey = Owned<KeyId>;
