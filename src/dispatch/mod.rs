//! The dispatcher owns sending. Each line has one FIFO queue (`dispatch_queue`, kept by an inline
//! projection) drained by one worker that holds the line's lease; sends of a line are paced, lines
//! run in parallel. See [`worker`] for one line's loop.

pub mod lease;
pub mod worker;

use crate::engine::SessionEngine;
use crate::store::EventStore;
use domain::ids::LineId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
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
        Self { wake: mpsc::unbounded_channel().0 }
    }
}

/// Start the supervisor: it runs a worker per line with queued messages.
pub fn start(
    store: EventStore,
    engine: Arc<dyn SessionEngine>,
    config: DispatchConfig,
    shutdown: CancellationToken,
) -> (Dispatcher, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = tokio::spawn(supervise(store, engine, Arc::new(config), rx, shutdown));
    (Dispatcher { wake: tx }, handle)
}

struct Running {
    wake: Arc<worker::WakeSignal>,
    handle: JoinHandle<()>,
}

async fn supervise(
    store: EventStore,
    engine: Arc<dyn SessionEngine>,
    config: Arc<DispatchConfig>,
    mut wakes: mpsc::UnboundedReceiver<(LineId, Wake)>,
    shutdown: CancellationToken,
) {
    let mut workers: HashMap<LineId, Running> = HashMap::new();
    let renewer = lease::Renewer::start(store.pool().clone(), config.lease_ttl);
    let mut scan = tokio::time::interval(config.scan_interval);
    loop {
        let lines: Vec<(LineId, Wake)> = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(line) = wakes.recv() => vec![line],
            _ = scan.tick() => match sqlx::query_scalar::<_, String>("SELECT DISTINCT line_id FROM dispatch_queue").fetch_all(store.pool()).await {
                Ok(ids) => ids.iter().filter_map(|id| LineId::parse(id).ok()).map(|id| (id, Wake::Queued)).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "dispatcher: scanning queues failed");
                    continue;
                }
            },
        };
        workers.retain(|_, w| !w.handle.is_finished());
        for (line_id, why) in lines {
            if let Some(worker) = workers.get(&line_id) {
                worker.wake.send(why);
                continue;
            }
            let wake = Arc::new(worker::WakeSignal::default());
            let handle = tokio::spawn(worker::run(
                line_id.clone(),
                store.clone(),
                engine.clone(),
                config.clone(),
                renewer.clone(),
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
