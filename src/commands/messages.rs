//! Message commands: sending, receiving, receipts, and the dispatcher's lease-guarded steps.
//!
//! A send is one short transaction that checks the Idempotency-Key, the line and the quota, and
//! appends the `message.queued` event. Everything the decision depends on is read in that
//! transaction, so it holds under concurrency:
//!
//! - an advisory lock on (account, Idempotency-Key) makes concurrent requests with one key wait for
//!   the first, which then finds its saved response;
//! - the `usage_counters` row of (account, cycle, sent_messages) is locked before it is compared to
//!   the limit, so concurrent sends cannot overshoot it;
//! - the account must be active as of the transaction, not only as of the caller's cached key (a
//!   suspension reaches the key caches of other nodes a moment after it commits).
//!
//! That is the path of one send ([`send`]). Under load, sends go through group commit
//! ([`super::group_commit`]), which makes the same decisions for many sends in one transaction
//! from the same parts (`admit`, `replay`, `queue`).

use super::{execute, CommandError};
use crate::store::{Actor, Append, AppendError, EventStore, Metadata, StreamAppend};
use chrono::{DateTime, Utc};
use domain::account::SubscriptionStatus;
use domain::chat_id::{ChatId, GroupJid};
use domain::ids::{AccountId, LineId, MessageId};
use domain::message::{
    ArchivePolicy, Content, Idempotency, Message, MessageCommand, MessageError, MessageEvent, MessageStatus, Queued, Received,
};
use domain::phone::PhoneNumber;
use domain::plan::{Metric, PlanCatalog};
use domain::Aggregate;
use projections::{Projection, ProjectionError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// A validated send (text or media).
#[derive(Debug, Clone)]
pub struct Send {
    pub line_id: LineId,
    pub to: ChatId,
    pub content: Content,
    pub quoted_message_id: Option<MessageId>,
    pub archive_policy: ArchivePolicy,
    pub idempotency: Option<Idempotency>,
}

// What a send answers, and answers again for a repeated Idempotency-Key: the idempotency record
// keeps its serialisation (see `accepted_response`). A plain comment: a doc comment would become
// the schema's description in the OpenAPI document.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SendResponse {
    pub ok: bool,
    #[schema(example = "msg_01jdzq2m9a8x0v3k1s5t7w9y2b")]
    pub message_id: String,
    /// `queued`: the line's dispatcher sends it, spaced from the line's other sends.
    pub status: String,
    pub line_id: String,
    pub to: String,
}

impl SendResponse {
    pub fn queued(q: &Queued) -> Self {
        Self {
            ok: true,
            message_id: q.message_id.to_string(),
            status: "queued".into(),
            line_id: q.line_id.to_string(),
            to: q.to.to_string(),
        }
    }
}

/// The response saved with an Idempotency-Key, for the inline idempotency projection.
pub fn accepted_response(q: &Queued) -> Value {
    serde_json::to_value(SendResponse::queued(q)).expect("a send response serialises")
}

#[derive(Debug)]
pub enum SendOutcome {
    /// Queued now: the response to return.
    Accepted { response: SendResponse, line_id: LineId },
    /// The same Idempotency-Key and body were seen before: the saved response.
    Replayed { response: SendResponse },
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the account is suspended")]
    Suspended,
    #[error("line not found")]
    LineNotFound,
    #[error("line not connected")]
    LineNotConnected,
    #[error("quota exceeded")]
    QuotaExceeded { used: u64, limit: u64, plan: String },
    #[error("idempotency key reused with another body")]
    IdempotencyConflict,
    #[error("database error")]
    Db(#[from] sqlx::Error),
    #[error("event store error")]
    Store(#[from] AppendError),
    #[error("the saved response of the Idempotency-Key does not read back")]
    SavedResponse(#[source] serde_json::Error),
    #[error("the server is stopping")]
    Stopped,
}

/// How long an Idempotency-Key is remembered.
pub use projections::messaging::IDEMPOTENCY_WINDOW_HOURS;

/// What a send is decided on, as read in its transaction: the account's status, plan and cycle
/// anchor, and the line's status (`None`: no such line of the account).
pub(crate) type SendContext = (String, String, DateTime<Utc>, Option<String>);

/// The refusals a send's context decides; `Ok`: its plan and cycle anchor.
pub(crate) fn admit(context: Option<SendContext>) -> Result<(String, DateTime<Utc>), SendError> {
    let (account_status, plan, anchor, line_status) = context.ok_or(SendError::LineNotFound)?;
    if account_status == SubscriptionStatus::Suspended.as_str() {
        return Err(SendError::Suspended);
    }
    // A logged-out line still exists (GET /v1/lines lists it): it is not connected, not unknown.
    match line_status.as_deref() {
        None => Err(SendError::LineNotFound),
        Some("connected") => Ok((plan, anchor)),
        Some(_) => Err(SendError::LineNotConnected),
    }
}

/// What a saved Idempotency-Key record means for a send with the same key.
pub(crate) fn replay(idem: &Idempotency, saved_hash: &str, saved: Value) -> Result<SendOutcome, SendError> {
    if saved_hash == idem.request_hash {
        let response = serde_json::from_value(saved).map_err(SendError::SavedResponse)?;
        Ok(SendOutcome::Replayed { response })
    } else {
        Err(SendError::IdempotencyConflict)
    }
}

/// The accepted send: its `message.queued` append and the response.
pub(crate) fn queue(
    metadata: &Metadata,
    account_id: &AccountId,
    send: Send,
    cycle_start: DateTime<Utc>,
) -> (Append, SendOutcome) {
    let queued = Queued {
        message_id: MessageId::new(),
        line_id: send.line_id.clone(),
        account_id: account_id.clone(),
        to: send.to,
        content: send.content,
        quoted_message_id: send.quoted_message_id,
        archive_policy: send.archive_policy,
        cycle_start,
        idempotency: send.idempotency,
    };
    let response = SendResponse::queued(&queued);
    let message_id = queued.message_id.clone();
    let events = Message::default().decide(MessageCommand::Queue(Box::new(queued)), &()).expect("a new message can be queued");
    let append = Append {
        tenant_id: account_id.to_string(),
        metadata: metadata.clone(),
        streams: vec![StreamAppend::new(Message::STREAM_TYPE, message_id.as_str(), 0, &events)],
    };
    (append, SendOutcome::Accepted { response, line_id: send.line_id })
}

/// Decide and record one send in its own transaction (the path when group commit is off, and the
/// one a failed batch falls back to).
pub async fn send(
    store: &EventStore,
    plans: &PlanCatalog,
    metadata: &Metadata,
    account_id: &AccountId,
    send: Send,
) -> Result<SendOutcome, SendError> {
    if send.idempotency.is_none() {
        return send_once(store, plans, metadata, account_id, send).await;
    }
    match send_once(store, plans, metadata, account_id, send.clone()).await {
        // Another node's batch took the Idempotency-Key between our look-up and our write: it has
        // committed now, so deciding again finds its record.
        Err(SendError::Store(AppendError::Projection(ProjectionError::Claimed(_)))) => {
            send_once(store, plans, metadata, account_id, send).await
        }
        outcome => outcome,
    }
}

async fn send_once(
    store: &EventStore,
    plans: &PlanCatalog,
    metadata: &Metadata,
    account_id: &AccountId,
    send: Send,
) -> Result<SendOutcome, SendError> {
    let mut tx = store.pool().begin().await?;

    if let Some(idem) = &send.idempotency {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || '/' || $2, 0))")
            .bind(account_id.as_str())
            .bind(&idem.key)
            .execute(&mut *tx)
            .await?;
        let saved: Option<(String, Value)> = sqlx::query_as(
            "SELECT request_hash, response FROM idempotency_keys \
             WHERE account_id = $1 AND key = $2 AND created_at > now() - make_interval(hours => $3)",
        )
        .bind(account_id.as_str())
        .bind(&idem.key)
        .bind(IDEMPOTENCY_WINDOW_HOURS)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((hash, saved)) = saved {
            return replay(idem, &hash, saved);
        }
    }

    // The account's status, plan and cycle, and the line's state, as of this transaction.
    let context: Option<SendContext> = sqlx::query_as(
        "SELECT a.status, a.plan, a.cycle_anchor, l.status FROM accounts a \
         LEFT JOIN lines l ON l.line_id = $2 AND l.account_id = a.account_id \
         WHERE a.account_id = $1",
    )
    .bind(account_id.as_str())
    .bind(send.line_id.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let (plan, anchor) = admit(context)?;

    let cycle = domain::billing::cycle_containing(anchor, Utc::now());
    let limit = plans.get(&plan).map(|(_, l)| l.sent_messages).unwrap_or(0);
    // The quota checked and the send counted in one statement: one is added only while the
    // counter is under the limit, and the counter stays locked to the commit. The usage
    // projection, whose work that is, is not run again over the send's event.
    let counted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO usage_counters (account_id, cycle_start, metric, used) SELECT $1, $2, $3, 1 WHERE $4 >= 1 \
         ON CONFLICT (account_id, cycle_start, metric) DO UPDATE SET used = usage_counters.used + 1 \
           WHERE usage_counters.used < $4 \
         RETURNING used",
    )
    .bind(account_id.as_str())
    .bind(cycle.start)
    .bind(Metric::SentMessages.as_str())
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_optional(&mut *tx)
    .await?;
    if counted.is_none() {
        let used = crate::usage::lock_counter(&mut tx, account_id.as_str(), cycle.start, Metric::SentMessages).await?;
        return Err(SendError::QuotaExceeded { used, limit, plan });
    }

    let (append, outcome) = queue(metadata, account_id, send, cycle.start);
    let usage = projections::messaging::UsageCounters.name();
    store.append_batch_in_applied(&mut tx, &[&append], &[usage]).await?;
    tx.commit().await?;
    store.committed(&append);
    Ok(outcome)
}

/// A message that arrived on a line (from the engine, or the sandbox).
#[derive(Debug, Clone)]
pub struct Inbound {
    pub line_id: LineId,
    pub from: PhoneNumber,
    /// The group it arrived in, if any.
    pub group: Option<GroupJid>,
    pub engine_message_id: String,
    pub content: Content,
    pub quoted_engine_message_id: Option<String>,
}

/// The append that records an inbound message on a line of `account_id`, and the message's id.
pub fn inbound_append(metadata: &Metadata, account_id: &AccountId, inbound: Inbound) -> (Append, MessageId) {
    let message_id = MessageId::new();
    (inbound_append_as(metadata, account_id, message_id.clone(), inbound), message_id)
}

/// The append that records an inbound message under the id `message_id`.
pub fn inbound_append_as(metadata: &Metadata, account_id: &AccountId, message_id: MessageId, inbound: Inbound) -> Append {
    let received = Received {
        message_id: message_id.clone(),
        line_id: inbound.line_id,
        account_id: account_id.clone(),
        from: inbound.from,
        group: inbound.group,
        engine_message_id: inbound.engine_message_id,
        content: inbound.content,
        quoted_engine_message_id: inbound.quoted_engine_message_id,
    };
    let events =
        Message::default().decide(MessageCommand::Receive(Box::new(received)), &()).expect("a new message can be received");
    Append {
        tenant_id: account_id.to_string(),
        metadata: metadata.clone(),
        streams: vec![StreamAppend::new(Message::STREAM_TYPE, message_id.as_str(), 0, &events)],
    }
}

/// Record an inbound message on a line of `account_id`. Returns its id.
pub async fn receive(
    store: &EventStore,
    metadata: &Metadata,
    account_id: &AccountId,
    inbound: Inbound,
) -> Result<MessageId, CommandError<MessageError>> {
    let (append, message_id) = inbound_append(metadata, account_id, inbound);
    store.append(&append).await?;
    Ok(message_id)
}

/// Record a receipt (delivered or read) for an outbound message. Late or repeated receipts change
/// nothing.
pub async fn receipt(
    store: &EventStore,
    metadata: &Metadata,
    message_id: &MessageId,
    status: MessageStatus,
) -> Result<(), CommandError<MessageError>> {
    let command = MessageCommand::Receipt { status };
    let tenant = tenant_of_message(store, message_id).await?;
    execute::<Message, _>(
        store,
        message_id.as_str(),
        |_| Some(tenant.clone()),
        metadata,
        |m: &Message| m.decide(command.clone(), &()),
    )
    .await?;
    Ok(())
}

async fn tenant_of_message(store: &EventStore, message_id: &MessageId) -> Result<String, CommandError<MessageError>> {
    sqlx::query_scalar("SELECT tenant_id FROM events WHERE stream_type = 'message' AND stream_id = $1 AND stream_version = 1")
        .bind(message_id.as_str())
        .fetch_optional(store.pool())
        .await?
        .ok_or(CommandError::Rejected(MessageError::NotFound))
}

/// The right to write for a line's session: held by one node, at one epoch.
#[derive(Debug, Clone)]
pub struct LeaseGuard {
    pub line_id: LineId,
    pub owner: String,
    pub epoch: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// Another node took the line over: this one must stop writing for it.
    #[error("the line's lease was lost")]
    LeaseLost,
    /// The lease could not be renewed in time: this node may no longer count on it, so it stops
    /// before the database could let another node take the line.
    #[error("the line's lease could not be renewed in time")]
    Abandoned,
    #[error(transparent)]
    Command(#[from] CommandError<MessageError>),
}

/// A message's stream as the dispatcher reads it, in one read: its state and version, its
/// tenant, and what was queued.
struct Dispatched {
    state: Message,
    version: i64,
    tenant: String,
    queued: Option<Queued>,
}

async fn load_dispatched(store: &EventStore, message_id: &MessageId) -> Result<Dispatched, CommandError<MessageError>> {
    let (state, mut events) = super::load_with_events::<Message>(store, message_id.as_str()).await?;
    let version = events.last().map_or(0, |(stored, _)| stored.stream_version);
    if events.is_empty() {
        return Err(CommandError::Rejected(MessageError::NotFound));
    }
    let (first, event) = events.swap_remove(0);
    let queued = match event {
        MessageEvent::Queued(q) => Some(q),
        _ => None,
    };
    Ok(Dispatched { state, version, tenant: first.tenant_id, queued })
}

/// A dispatcher's step on a queued message (start, sent, failed), appended only while `lease` is
/// still the line's current lease: the check and the append share one transaction, and the lease
/// row stays share-locked until it commits, so a takeover cannot slip in between.
pub async fn dispatch_step(
    store: &EventStore,
    lease: &LeaseGuard,
    message_id: &MessageId,
    command: MessageCommand,
) -> Result<Vec<MessageEvent>, DispatchError> {
    let loaded = load_dispatched(store, message_id).await?;
    step(store, lease, message_id, &loaded, command).await
}

/// The dispatcher starts sending a message under `engine_message_id`: the id it goes out under
/// (an earlier attempt's, if one was recorded) and what was queued; `None` if it was already sent
/// or failed.
pub async fn dispatch_start(
    store: &EventStore,
    lease: &LeaseGuard,
    message_id: &MessageId,
    engine_message_id: String,
) -> Result<Option<(String, Queued)>, DispatchError> {
    let loaded = load_dispatched(store, message_id).await?;
    let started = step(store, lease, message_id, &loaded, MessageCommand::StartDispatch { engine_message_id }).await?;
    Ok(match (started.into_iter().next(), loaded.queued) {
        (Some(MessageEvent::DispatchStarted { engine_message_id, .. }), Some(queued)) => Some((engine_message_id, queued)),
        _ => None,
    })
}

async fn step(
    store: &EventStore,
    lease: &LeaseGuard,
    message_id: &MessageId,
    loaded: &Dispatched,
    command: MessageCommand,
) -> Result<Vec<MessageEvent>, DispatchError> {
    let events = loaded.state.decide(command, &()).map_err(CommandError::Rejected)?;
    if events.is_empty() {
        return Ok(events);
    }
    let mut tx = store.pool().begin().await.map_err(CommandError::Db)?;
    let held: Option<i64> =
        sqlx::query_scalar("SELECT epoch FROM line_leases WHERE line_id = $1 AND owner = $2 AND epoch = $3 FOR SHARE")
            .bind(lease.line_id.as_str())
            .bind(&lease.owner)
            .bind(lease.epoch)
            .fetch_optional(&mut *tx)
            .await
            .map_err(CommandError::Db)?;
    if held.is_none() {
        return Err(DispatchError::LeaseLost);
    }
    let append = Append {
        tenant_id: loaded.tenant.clone(),
        metadata: Metadata::new(Actor::Engine { line_id: lease.line_id.to_string() }),
        streams: vec![StreamAppend::new(Message::STREAM_TYPE, message_id.as_str(), loaded.version, &events)],
    };
    store.append_in(&mut tx, &append).await.map_err(CommandError::Store)?;
    tx.commit().await.map_err(CommandError::Db)?;
    store.committed(&append);
    Ok(events)
}
