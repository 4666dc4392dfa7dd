//! Command handling: load an aggregate from its stream, decide, append. A decision that lost a
//! race with another writer of the same stream is decided again on fresh state (a few times), never
//! merged.

pub mod accounts;
pub mod chats;
pub mod console_users;
pub mod group_commit;
pub mod keys;
pub mod lines;
pub mod messages;
pub mod sandbox;
pub mod sending;
pub mod webhooks;

use crate::store::{Append, AppendError, EventStore, Metadata, StreamAppend};
use domain::Aggregate;
use projections::{ProjectionError, StoredEvent};

/// The decision clock, at the database's precision (microseconds) so that a time written into an
/// event equals the same time read back from a table.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}

/// How often a command is re-decided after losing a race before giving up.
const MAX_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    /// The domain refused the command; nothing was appended.
    #[error(transparent)]
    Rejected(E),
    #[error("the event store failed")]
    Store(#[from] AppendError),
    #[error("a stored event could not be read")]
    Projection(#[from] ProjectionError),
    #[error("database error")]
    Db(#[from] sqlx::Error),
}

/// An aggregate's state and the version of its stream.
pub async fn load<A: Aggregate<Error: 'static>>(store: &EventStore, stream_id: &str) -> Result<(A, i64), CommandError<A::Error>> {
    let (state, events) = load_with_events::<A>(store, stream_id).await?;
    Ok((state, events.last().map_or(0, |(stored, _)| stored.stream_version)))
}

/// [`load`], with the stream's events decoded, each beside its stored row (tenant, version).
pub async fn load_with_events<A: Aggregate<Error: 'static>>(
    store: &EventStore,
    stream_id: &str,
) -> Result<(A, Vec<(StoredEvent, A::Event)>), CommandError<A::Error>> {
    let stored = store.read_stream(A::STREAM_TYPE, stream_id).await?;
    let mut state = A::default();
    let mut events = Vec::with_capacity(stored.len());
    for stored in stored {
        let event: A::Event = stored.decode().map_err(ProjectionError::from)?;
        state.apply(&event);
        events.push((stored, event));
    }
    Ok((state, events))
}

/// Load, decide with `decide`, append; retried on a concurrent write to the stream. Returns the
/// state after the decision and the stored events (none if the command changed nothing).
pub async fn execute<A, F>(
    store: &EventStore,
    stream_id: &str,
    tenant_of: impl Fn(&A) -> Option<String>,
    metadata: &Metadata,
    decide: F,
) -> Result<(A, Vec<StoredEvent>), CommandError<A::Error>>
where
    A: Aggregate,
    A::Error: 'static,
    F: Fn(&A) -> Result<Vec<A::Event>, A::Error>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut state, version) = load::<A>(store, stream_id).await?;
        let events = decide(&state).map_err(CommandError::Rejected)?;
        if events.is_empty() {
            return Ok((state, vec![]));
        }
        for e in &events {
            state.apply(e);
        }
        let tenant_id = tenant_of(&state).expect("a stream with events belongs to a tenant");
        let append = Append {
            tenant_id,
            metadata: metadata.clone(),
            streams: vec![StreamAppend::new(A::STREAM_TYPE, stream_id, version, &events)],
        };
        match store.append(&append).await {
            Ok(stored) => return Ok((state, stored)),
            Err(AppendError::Conflict { .. }) if attempt < MAX_ATTEMPTS => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
