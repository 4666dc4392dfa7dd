//! The dispatcher owns sending. Each line has one FIFO queue (`dispatch_queue`, kept by an inline
//! projection) drained by one worker that holds the line's lease; sends of a line are paced, lines
//! run in parallel. See [`worker`] for one line's loop.

pub mod lease;
pub mod ownership;
pub mod worker;

use crate::engine::SessionEngine;
use crate::store::EventStore;
use domain::ids::LineId;
use ownership::Ownership;
use projections::notify::Change;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Least time between two sends of one line.
    pub interval: Duration,
    /// Up to this much more, at random, on top of the interval.
    pub jitter: Duration,
    pub lease_ttl: Duration,
    pub node: String,
    /// How long the engine may take over one send before it counts as failed.
    pub send_timeout: Duration,
    /// How often queues are scanned for lines no worker serves (after a restart, or a node's death).
    pub scan_interval: Duration,
    /// An idle worker lets its line go after this long.
    pub idle_timeout: Duration,
    /// Downloads the files of media messages.
    pub media: crate::media::MediaFetcher,
}

/// Why a line's worker is woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A message was queued: an idle worker has work; a busy one goes on as it was.
    Queued,
    /// The line changed (connected, dropped, logged out): the worker reads its queue again now.
    Changed,
}

/// A handle to wake a line's worker.
#[derive(Clone)]
pub struct Dispatcher {
    wake: mpsc::UnboundedSender<(LineId, Wake)>,
    /// Which lines are this node's (`None`: a disabled dispatcher).
    ownership: Option<Arc<Ownership>>,
}

impl Dispatcher {
    /// The line changed: its worker reads the queue again at once.
    pub fn wake(&self, line_id: &LineId) {
        let _ = self.wake.send((line_id.clone(), Wake::Changed));
    }

    /// A message was queued on the line.
    pub fn queued(&self, line_id: &LineId) {
        let _ = self.wake.send((line_id.clone(), Wake::Queued));
    }

    /// A dispatcher that sends nothing (for commands run outside a server).
    pub fn disabled() -> Self {
        Self { wake: mpsc::unbounded_channel().0, ownership: None }
    }

    /// Which lines are this node's, as its dispatcher sees the live dispatch nodes (the WhatsApp
    /// sessions are placed by it too).
    pub fn ownership(&self) -> Option<&Arc<Ownership>> {
        self.ownership.as_ref()
    }
}

/// Start the supervisor: it runs a worker per line with queued messages, for the lines that are
/// this node's ([`ownership`]). `changes` (the log's announcements) tell it of messages queued
/// through other nodes, which it then looks for at once rather than at its next scan.
pub fn start(
    store: EventStore,
    engine: Arc<dyn SessionEngine>,
    config: DispatchConfig,
    changes: Option<broadcast::Receiver<Change>>,
    shutdown: CancellationToken,
) -> (Dispatcher, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let ownership = Arc::new(Ownership::new(&config.node));
    let handle = tokio::spawn(supervise(store, engine, Arc::new(config), ownership.clone(), rx, changes, shutdown));
    (Dispatcher { wake: tx, ownership: Some(ownership) }, handle)
}

struct Running {
    wake: Arc<worker::WakeSignal>,
    handle: JoinHandle<()>,
}

/// How soon after hearing of a message queued through another node the queues are scanned: long
/// enough to gather a burst of announcements into one scan.
const PROMPT_SCAN: Duration = Duration::from_millis(20);

async fn supervise(
    store: EventStore,
    engine: Arc<dyn SessionEngine>,
    config: Arc<DispatchConfig>,
    ownership: Arc<Ownership>,
    mut wakes: mpsc::UnboundedReceiver<(LineId, Wake)>,
    mut changes: Option<broadcast::Receiver<Change>>,
    shutdown: CancellationToken,
) {
    let mut workers: HashMap<LineId, Running> = HashMap::new();
    let renewer = lease::Renewer::start(store.pool().clone(), config.lease_ttl);
    let mut scan = tokio::time::interval(config.scan_interval);
    // Messages queued through other nodes, heard of and not looked for yet: when to look, and in
    // whose accounts (`None`: anywhere, notifications may have been missed).
    let mut prompt: Option<(tokio::time::Instant, Option<HashSet<String>>)> = None;
    loop {
        let lines: Vec<(LineId, Wake, bool)> = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some((line, why)) = wakes.recv() => vec![(line, why, false)],
            change = next_change(&mut changes) => {
                if let Some(heard) = queued_elsewhere(&change, &config.node) {
                    let (_, accounts) = prompt.get_or_insert_with(|| (tokio::time::Instant::now() + PROMPT_SCAN, Some(HashSet::new())));
                    match (heard, accounts.as_mut()) {
                        (Heard::Account(account), Some(accounts)) => {
                            accounts.insert(account);
                        }
                        (Heard::Anything, _) => *accounts = None,
                        (Heard::Account(_), None) => {}
                    }
                }
                continue;
            }
            _ = tokio::time::sleep_until(prompt.as_ref().map_or_else(tokio::time::Instant::now, |p| p.0)), if prompt.is_some() => {
                let accounts = prompt.take().and_then(|(_, accounts)| accounts);
                let found = match accounts {
                    Some(accounts) => queued_lines_of(&store, accounts).await,
                    None => queued_lines(&store, config.lease_ttl).await,
                };
                match found {
                    Ok(lines) => lines,
                    Err(e) => {
                        tracing::warn!(error = %e, "dispatcher: scanning queues failed");
                        continue;
                    }
                }
            }
            _ = scan.tick() => {
                match crate::cluster::live_dispatchers(store.pool(), config.lease_ttl).await {
                    // The lines' nodes changed: the workers of lines that are no longer this node's
                    // wake to hand them back (the others go on as they were).
                    Ok(live) => if ownership.update(live) {
                        crate::metrics::global().dispatch_live_nodes(&config.node, ownership.live().len());
                        tracing::info!(live = ?ownership.live(), "dispatcher: the live dispatch nodes changed");
                        for (line_id, worker) in &workers {
                            if !ownership.is_mine(line_id.as_str()) {
                                worker.wake.send(Wake::Changed);
                            }
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "dispatcher: reading the live nodes failed"),
                }
                match queued_lines(&store, config.lease_ttl).await {
                    Ok(lines) => lines,
                    Err(e) => {
                        tracing::warn!(error = %e, "dispatcher: scanning queues failed");
                        continue;
                    }
                }
            },
        };
        workers.retain(|_, w| !w.handle.is_finished());
        for (line_id, why, orphaned) in lines {
            if let Some(worker) = workers.get(&line_id) {
                worker.wake.send(why);
                continue;
            }
            // Another node's line is left to it, unless nobody has served it for a whole TTL
            // while messages wait (its node cannot, whatever the list says): then any node does.
            if !orphaned && !ownership.is_mine(line_id.as_str()) {
                continue;
            }
            let wake = Arc::new(worker::WakeSignal::default());
            let handle = tokio::spawn(worker::run(
                line_id.clone(),
                store.clone(),
                engine.clone(),
                config.clone(),
                worker::Placement { renewer: renewer.clone(), ownership: ownership.clone(), adopted: orphaned },
                wake.clone(),
                shutdown.clone(),
            ));
            workers.insert(line_id, Running { wake, handle });
        }
    }
    for (_, worker) in workers {
        let _ = worker.handle.await;
    }
}

/// The next announcement, or never without a receiver. A receiver that fell behind reports it
/// as a reset (something may have been missed).
async fn next_change(changes: &mut Option<broadcast::Receiver<Change>>) -> Change {
    let Some(receiver) = changes else { return std::future::pending().await };
    match receiver.recv().await {
        Ok(change) => change,
        Err(broadcast::error::RecvError::Lagged(_)) => Change::Reset,
        Err(broadcast::error::RecvError::Closed) => {
            *changes = None;
            std::future::pending().await
        }
    }
}

/// Where a message this node did not hear of itself may have been queued.
enum Heard {
    Account(String),
    Anything,
}

/// Whether `change` may have queued a message through another node, and in which account.
fn queued_elsewhere(change: &Change, node: &str) -> Option<Heard> {
    match change {
        Change::Appended(a)
            if a.origin.as_deref() != Some(node)
                && a.stream_types
                    .iter()
                    .any(|t| t == <domain::message::Message as domain::aggregate::Aggregate>::STREAM_TYPE) =>
        {
            Some(Heard::Account(a.tenant.clone()))
        }
        Change::Appended(_) => None,
        Change::Reset => Some(Heard::Anything),
    }
}

/// The lines of `accounts` with queued messages (through their accounts' lines, by index: not a
/// scan of every queue, which a busy cluster would otherwise make at every burst of sends).
async fn queued_lines_of(store: &EventStore, accounts: HashSet<String>) -> Result<Vec<(LineId, Wake, bool)>, sqlx::Error> {
    let accounts: Vec<String> = accounts.into_iter().collect();
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT l.line_id FROM lines l WHERE l.account_id = ANY($1) \
            AND EXISTS (SELECT 1 FROM dispatch_queue q WHERE q.line_id = l.line_id)",
    )
    .bind(&accounts)
    .fetch_all(store.pool())
    .await?;
    Ok(ids.iter().filter_map(|id| LineId::parse(id).ok()).map(|id| (id, Wake::Queued, false)).collect())
}

/// Every line with queued messages, and whether it is orphaned: no node has held its lease for a
/// whole TTL (or, never leased, its oldest message has waited that long).
async fn queued_lines(store: &EventStore, ttl: Duration) -> Result<Vec<(LineId, Wake, bool)>, sqlx::Error> {
    let rows: Vec<(String, bool)> = sqlx::query_as(
        "SELECT q.line_id, COALESCE(max(l.expires_at), min(q.enqueued_at)) < now() - make_interval(secs => $1) \
           FROM dispatch_queue q LEFT JOIN line_leases l ON l.line_id = q.line_id \
          GROUP BY q.line_id",
    )
    .bind(ttl.as_secs_f64())
    .fetch_all(store.pool())
    .await?;
    Ok(rows.into_iter().filter_map(|(id, orphaned)| LineId::parse(&id).ok().map(|id| (id, Wake::Queued, orphaned))).collect())
}
