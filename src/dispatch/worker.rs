//! One line's worker: hold the lease, take the oldest queued message, wait for the pacer, record
//! the attempt (with the engine message id it will be sent under), call the engine, record the
//! outcome. A message whose attempt was recorded but whose outcome was not (a crash in between) is
//! sent again under the same engine id, which the network de-duplicates: never twice under two ids.

use super::{lease, DispatchConfig};
use crate::commands::messages::{dispatch_start, dispatch_step, DispatchError};
use crate::commands::CommandError;
use crate::engine::{new_engine_message_id, EngineError, EngineLine, Outbound, SessionEngine, SessionLease};
use crate::store::EventStore;
use domain::ids::{LineId, MessageId};
use domain::line::EngineKind;
use domain::message::{Content, Message, MessageCommand, MessageStatus};
use domain::phone::PhoneNumber;
use governor::{Jitter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Wake-ups of one worker: at most one pending, and whether any of them said the line changed.
#[derive(Default)]
pub struct WakeSignal {
    notify: tokio::sync::Notify,
    changed: AtomicBool,
}

impl WakeSignal {
    pub fn send(&self, why: super::Wake) {
        if why == super::Wake::Changed {
            self.changed.store(true, Ordering::SeqCst);
        }
        self.notify.notify_one();
    }

    /// The next wake-up (or the one pending).
    async fn any(&self) {
        self.notify.notified().await;
    }

    /// The next wake-up that says the line changed; those that only queued a message pass.
    async fn changed(&self) {
        loop {
            if self.changed.swap(false, Ordering::SeqCst) {
                return;
            }
            self.notify.notified().await;
        }
    }
}

/// Where a worker stands in the cluster.
pub struct Placement {
    /// Keeps the line's lease alive.
    pub renewer: lease::Renewer,
    /// Whether the line is still this node's.
    pub ownership: Arc<super::ownership::Ownership>,
    /// Taken because nobody served it (see the supervisor): kept until idle, whatever the list says.
    pub adopted: bool,
}

/// Every database call and send below is boxed: its state lives on the heap only while it runs,
/// so the task of an idle worker (one per line) holds little more than its wait.
pub async fn run(
    line_id: LineId,
    store: EventStore,
    engine: Arc<dyn SessionEngine>,
    config: Arc<DispatchConfig>,
    placement: Placement,
    wake: Arc<WakeSignal>,
    shutdown: CancellationToken,
) {
    let pool = store.pool().clone();
    let line = match Box::pin(engine_of(&pool, &line_id)).await {
        Ok(Some(engine)) => EngineLine { id: line_id.clone(), engine },
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(%line_id, error = %e, "dispatcher: reading the line failed");
            return;
        }
    };
    // A line whose engine keeps a session is served under the session's lease, by the node that
    // runs the session; otherwise the worker takes the line's lease itself.
    let (keeper, own_lease) = match engine.session_lease(&line) {
        SessionLease::Held(keeper) => (keeper, false),
        SessionLease::Elsewhere => return,
        SessionLease::NotKept => match Box::pin(lease::acquire(&pool, &line_id, &config.node, config.lease_ttl)).await {
            Ok(Some(lease)) => (Arc::new(placement.renewer.keep(lease)), true),
            Ok(None) => return, // another node serves this line
            Err(e) => {
                tracing::warn!(%line_id, error = %e, "dispatcher: taking the lease failed");
                return;
            }
        },
    };
    let lease = keeper.lease();
    tracing::info!(%line_id, epoch = lease.epoch, "dispatcher: serving line");
    // After a send the engine could not make (the session is down), the next try waits this long,
    // doubling up to a third of the lease TTL; a wake-up (the line is back) tries at once.
    let first_retry = Duration::from_millis(250);
    let mut retry_wait = first_retry;
    // One send per interval, no bursts; jitter spreads sends further.
    let quota =
        Quota::with_period(config.interval.max(Duration::from_millis(1))).expect("non-zero period").allow_burst(NonZeroU32::MIN);
    let pacer = RateLimiter::direct(quota);
    let jitter = Jitter::up_to(config.jitter);
    let mut idle_since = Instant::now();
    // When the engine was last called for this line. The pacer spaces the loop; this floor makes
    // the spacing hold at the engine itself, whatever the database work in between took.
    let mut last_call: Option<tokio::time::Instant> = None;

    while !shutdown.is_cancelled() {
        if keeper.is_lost() {
            tracing::warn!(%line_id, "dispatcher: lease lost; stopping");
            return;
        }
        // Between sends: a line that is now another node's (one joined, or this one is draining)
        // is handed back; that node takes it at its next scan.
        if own_lease && !placement.adopted && !placement.ownership.is_mine(line_id.as_str()) {
            let to = placement.ownership.node_for(line_id.as_str()).unwrap_or_default();
            tracing::info!(%line_id, to, "dispatcher: the line is another node's now; handing it back");
            break;
        }
        let next = match Box::pin(next_message(&pool, &line_id)).await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(%line_id, error = %e, "dispatcher: reading the queue failed");
                Next::Wait
            }
        };
        if let Next::Abandon(message_id) = &next {
            let reason = match Box::pin(logout_reason(&pool, &line_id)).await {
                Some(why) => format!("the line was logged out before the message could be sent ({why})"),
                None => "the line was logged out before the message could be sent".to_owned(),
            };
            let failed = MessageCommand::MarkFailed { reason };
            if let Err(e) = Box::pin(dispatch_step(&store, lease, message_id, failed)).await {
                tracing::warn!(%line_id, %message_id, error = ?e, "dispatcher: failing a message of a logged-out line failed");
                return;
            }
            continue;
        }
        let Next::Send(message_id, from) = next else {
            if idle_since.elapsed() >= config.idle_timeout {
                break;
            }
            // Nothing to send: wait for a wake-up (a message queued here, a change of the line, or
            // the supervisor's scan finding messages queued through another node), not a timer
            // (ten thousand idle lines polling their queues would be a query each every few
            // seconds); the timer only lets the line go once it has been idle long enough.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = keeper.lost() => {}
                _ = wake.any() => {}
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(idle_since + config.idle_timeout)) => {}
            }
            continue;
        };
        // Wait for the pacer, but let a change of the line (a logout, a disconnect) interrupt the
        // wait: an unfinished wait takes no permit, and the queue is read again. Messages queued
        // behind this one change nothing here.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = keeper.lost() => continue,
            _ = wake.changed() => continue,
            _ = pacer.until_ready_with_jitter(jitter) => {}
        }
        // The wait may have been long: send only if this is still the next message of a
        // connected line.
        match Box::pin(next_message(&pool, &line_id)).await {
            Ok(Next::Send(still, _)) if still == message_id => {}
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(%line_id, error = %e, "dispatcher: reading the queue failed");
                continue;
            }
        }
        match Box::pin(send_one(&store, engine.as_ref(), &config, &keeper, &line, &message_id, from, &mut last_call)).await {
            Ok(Sent::Done) => retry_wait = first_retry,
            Ok(Sent::Later(reason)) => {
                tracing::info!(%line_id, %message_id, %reason, "dispatcher: the engine cannot send now; the message waits");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = keeper.lost() => {}
                    _ = wake.any() => {}
                    _ = tokio::time::sleep(retry_wait) => {}
                }
                retry_wait = (retry_wait * 2).min(config.lease_ttl / 3);
                continue;
            }
            Err(DispatchError::LeaseLost) => {
                tracing::warn!(%line_id, "dispatcher: lease lost; stopping");
                return;
            }
            Err(DispatchError::Abandoned) => {
                tracing::warn!(%line_id, %message_id, "dispatcher: the lease could not be renewed in time; the send is abandoned");
                crate::metrics::global().dispatch_send(&config.node, "abandoned");
                return;
            }
            Err(e) => tracing::error!(%line_id, %message_id, error = ?e, "dispatcher: recording a send failed"),
        }
        idle_since = Instant::now();
    }
    if own_lease {
        let _ = Box::pin(lease::release(&pool, lease)).await;
    }
}

/// Why the line was logged out, when it was not by its tenant (a logout from the phone, a ban).
async fn logout_reason(pool: &sqlx::PgPool, line_id: &LineId) -> Option<String> {
    sqlx::query_scalar(
        "SELECT payload->>'reason' FROM events WHERE stream_type = 'line' AND stream_id = $1 AND event_type = 'line.logged_out' LIMIT 1",
    )
    .bind(line_id.as_str())
    .fetch_optional(pool)
    .await
    .ok()
    .flatten()
    .flatten()
}

async fn engine_of(pool: &sqlx::PgPool, line_id: &LineId) -> Result<Option<EngineKind>, sqlx::Error> {
    let engine: Option<String> =
        sqlx::query_scalar("SELECT engine FROM lines WHERE line_id = $1").bind(line_id.as_str()).fetch_optional(pool).await?;
    Ok(engine.and_then(|e| EngineKind::parse(&e)))
}

/// How long before a send's paced time its line's lease is renewed: more than a renewal's round
/// trip takes, a small part of any lease's TTL.
const RENEWAL_LEAD: Duration = Duration::from_millis(100);

/// What became of one message's turn.
enum Sent {
    /// Sent, failed for good, or nothing left to do.
    Done,
    /// The engine could not send it now (the session is down): it stays first in the queue.
    Later(String),
}

/// What the line's queue holds next.
enum Next {
    /// The oldest queued message, and the line's phone to send it from.
    Send(MessageId, PhoneNumber),
    /// The line was logged out with this message still queued: it can never be sent.
    Abandon(MessageId),
    /// Nothing to send now (empty queue, or a line that is not connected: it keeps its queue
    /// until it is back).
    Wait,
}

async fn next_message(pool: &sqlx::PgPool, line_id: &LineId) -> Result<Next, sqlx::Error> {
    let row: Option<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT q.message_id, l.status, l.phone FROM dispatch_queue q JOIN lines l ON l.line_id = q.line_id \
         WHERE q.line_id = $1 ORDER BY q.queued_position LIMIT 1",
    )
    .bind(line_id.as_str())
    .fetch_optional(pool)
    .await?;
    let Some((id, status, phone)) = row else { return Ok(Next::Wait) };
    let Ok(message_id) = MessageId::parse(&id) else { return Ok(Next::Wait) };
    Ok(match (status.as_str(), phone.and_then(|p| PhoneNumber::parse(&p).ok())) {
        ("connected", Some(phone)) => Next::Send(message_id, phone),
        ("logged_out", _) => Next::Abandon(message_id),
        _ => Next::Wait,
    })
}

/// `step`, unless the lease stops being certain first ([`lease::Keeper::expired`]): then the send
/// is abandoned. The steps from recording the attempt to the engine call are fenced so: a node
/// cut off from the database, wherever the partition caught it, stops before another node can
/// take the line and send the message again (under the same WhatsApp id, which the network
/// de-duplicates). A media download is not: no lease is needed to fetch a file, and the lease is
/// renewed, fenced, before the engine is called.
async fn fenced<T>(
    keeper: &lease::Keeper,
    step: impl std::future::Future<Output = Result<T, DispatchError>>,
) -> Result<T, DispatchError> {
    tokio::select! {
        result = step => result,
        _ = keeper.expired() => Err(DispatchError::Abandoned),
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_one(
    store: &EventStore,
    engine: &dyn SessionEngine,
    config: &DispatchConfig,
    keeper: &lease::Keeper,
    line: &EngineLine,
    message_id: &MessageId,
    from: PhoneNumber,
    last_call: &mut Option<tokio::time::Instant>,
) -> Result<Sent, DispatchError> {
    let lease = keeper.lease();
    let Some((engine_message_id, queued)) =
        fenced(keeper, dispatch_start(store, lease, message_id, new_engine_message_id())).await?
    else {
        return Ok(Sent::Done); // already sent or failed
    };
    // A file that cannot be fetched fails the message with the reason; nothing is sent.
    let media = match &queued.content {
        Content::Media { media_url, media_type, .. } => match config.media.fetch(media_url, *media_type).await {
            Ok(file) => Some(Arc::new(file)),
            Err(e) => {
                dispatch_step(store, lease, message_id, MessageCommand::MarkFailed { reason: e.to_string() }).await?;
                crate::metrics::global().dispatch_send(&config.node, "failed");
                return Ok(Sent::Done);
            }
        },
        _ => None,
    };
    // A reaction queued behind its target (still queued then) goes out with the target's WhatsApp
    // id, known now that the target went first; if the target was never sent, neither is it.
    let content = match queued.content {
        Content::Reaction { target_message_id: Some(target), target_engine_message_id: None, emoji } => {
            let (state, _) = crate::commands::load::<Message>(store, target.as_str()).await?;
            let sent = state.state.filter(|s| s.status != MessageStatus::Queued && s.status != MessageStatus::Failed);
            match sent.and_then(|s| s.engine_message_id) {
                Some(id) => Content::Reaction { target_message_id: Some(target), target_engine_message_id: Some(id), emoji },
                None => {
                    let reason = format!("the message reacted to ({target}) was not sent");
                    dispatch_step(store, lease, message_id, MessageCommand::MarkFailed { reason }).await?;
                    crate::metrics::global().dispatch_send(&config.node, "failed");
                    return Ok(Sent::Done);
                }
            }
        }
        content => content,
    };
    let outbound = Outbound {
        message_id: message_id.clone(),
        engine_message_id: engine_message_id.clone(),
        line_id: lease.line_id.clone(),
        engine: line.engine,
        from,
        to: queued.to,
        content,
        quoted_engine_message_id: match &queued.quoted_message_id {
            Some(quoted) => engine_id_of(store, quoted).await?,
            None => None,
        },
        media,
    };
    // The download and the pacing may have taken long: call the engine only while the lease is
    // certainly still ours, or another node may be sending this very message. The renewal is
    // made just before the send's time (RENEWAL_LEAD), not at it, so that its round trip (a
    // commit) does not make the send late; the lease then has all but that lead of its TTL left.
    let send_at = last_call.map(|last| last + config.interval);
    if let Some(at) = send_at {
        tokio::time::sleep_until(at - RENEWAL_LEAD.min(config.interval)).await;
    }
    let renewed = fenced(keeper, async {
        lease::renew(store.pool(), lease, config.lease_ttl).await.map_err(|e| CommandError::Db(e).into())
    });
    if keeper.is_lost() || !renewed.await? {
        return Err(DispatchError::LeaseLost);
    }
    if let Some(at) = send_at {
        tokio::time::sleep_until(at).await;
    }
    *last_call = Some(tokio::time::Instant::now());
    let metrics = crate::metrics::global();
    let call = fenced(keeper, async { Ok(tokio::time::timeout(config.send_timeout, engine.send(&outbound)).await) }).await?;
    let outcome = match call {
        Ok(Ok(())) => MessageCommand::MarkSent { engine_message_id },
        Ok(Err(EngineError::Unavailable(reason))) => {
            metrics.dispatch_send(&config.node, "later");
            return Ok(Sent::Later(reason));
        }
        Ok(Err(e)) => MessageCommand::MarkFailed { reason: e.to_string() },
        Err(_) => MessageCommand::MarkFailed {
            reason: format!("the engine did not answer within {} ms", config.send_timeout.as_millis()),
        },
    };
    let kind = if matches!(outcome, MessageCommand::MarkSent { .. }) { "sent" } else { "failed" };
    dispatch_step(store, lease, message_id, outcome).await?;
    metrics.dispatch_send(&config.node, kind);
    Ok(Sent::Done)
}

/// The WhatsApp id of a message (sent or received), from its stream.
async fn engine_id_of(store: &EventStore, message_id: &MessageId) -> Result<Option<String>, DispatchError> {
    let (state, _) = crate::commands::load::<Message>(store, message_id.as_str()).await?;
    Ok(state.state.and_then(|s| s.engine_message_id))
}
