//! Read models of WAzion Bridge and the runtime that keeps them up to date.
//!
//! - [`log`]: the event log as readers see it, in an order that never skips a late commit.
//! - [`runtime`]: asynchronous projections with a checkpoint, an advisory lock and NOTIFY wake-ups.
//! - [`notify`]: the one LISTEN connection per process that wakes runners and caches.
//! - Inline projections ([`accounts`], [`api_keys`], [`lines`], [`console_users`]) run inside the append transaction.

pub mod accounts;
pub mod api_keys;
pub mod bulk;
pub mod console_users;
pub mod conversations;
pub mod lines;
pub mod log;
pub mod messaging;
pub mod notify;
pub mod rebuild;
pub mod runtime;
pub mod webhook_deliveries;
pub mod webhooks;

use std::future::Future;
use std::pin::Pin;

pub use log::{LogPosition, StoredEvent};

/// What a projection can fail with while folding an event.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Decode(#[from] domain::EventDecodeError),
    /// A row the event claims was written first by a transaction that ran alongside (two nodes
    /// taking the same Idempotency-Key at once): the append must not stand; deciding again sees it.
    #[error("{0}")]
    Claimed(String),
    /// The log holds what the read model's constraints refuse (a message id twice, say).
    #[error("the log cannot be folded into the read model: {0}")]
    Inconsistent(String),
}

pub type ApplyFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ProjectionError>> + Send + 'a>>;

/// Folds events of the log into its own tables. Applying must be deterministic and use only the
/// event and the projection's own tables, so that a rebuild from the log gives the same rows.
pub trait Projection: Send + Sync + 'static {
    /// A stable name: the checkpoint's key and the advisory lock's seed.
    fn name(&self) -> &'static str;

    /// The tables the projection writes and nothing else does: what a rebuild builds anew. Empty
    /// for a projection that cannot be rebuilt from the log alone (one whose rows record what was
    /// done in the world, such as the webhook delivery queue).
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    /// The stream types whose events the projection folds. Runners and rebuilds read the others
    /// without their payload (it comes as JSON `null`), so `apply` must look at an event's stream
    /// type before its payload. Empty (the default): every event, with its payload.
    fn stream_types(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether the projection runs inside each append's transaction (an inline projection) rather
    /// than behind a checkpoint of its own.
    fn inline(&self) -> bool {
        false
    }

    /// A fold of the projection in memory, for rebuilds to load its tables in bulk (see
    /// [`bulk`]); `None` when it has none, and rebuilds apply events one batch at a time.
    fn bulk(&self) -> Option<Box<dyn bulk::BulkFold>> {
        None
    }

    /// Fold one event. Runs inside the caller's transaction; events the projection does not care
    /// about are ignored.
    fn apply<'a>(&'a self, conn: &'a mut sqlx::PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a>;

    /// Fold several events, in log order: what one group commit appended. One [`Projection::apply`]
    /// per event unless the projection does it with fewer statements; either way the rows come out
    /// the same.
    fn apply_batch<'a>(&'a self, conn: &'a mut sqlx::PgConnection, events: &'a [StoredEvent]) -> ApplyFuture<'a> {
        Box::pin(async move {
            for event in events {
                self.apply(&mut *conn, event).await?;
            }
            Ok(())
        })
    }
}
