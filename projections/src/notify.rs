//! One LISTEN connection per process. Appenders `NOTIFY bridge_events` inside their transaction,
//! which PostgreSQL delivers only after commit; this watcher turns those into wake-ups.

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub const CHANNEL: &str = "bridge_events";

/// What an append announces: whose streams changed. Small on purpose (NOTIFY payloads are capped).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Announcement {
    pub tenant: String,
    pub stream_types: Vec<String>,
    /// The node that appended (from its notice; not sent per announcement). `None`: unknown.
    #[serde(skip)]
    pub origin: Option<String>,
}

/// One NOTIFY's payload: the announcements of one append, or of many coalesced appends. `None`
/// means there were too many to list: listeners treat it as "anything may have changed".
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Notice {
    pub appended: Option<Vec<Announcement>>,
    /// The node whose appends these are (so a node can tell its own appends from others').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// NOTIFY payloads must stay under 8000 bytes.
pub const MAX_PAYLOAD: usize = 7000;

impl Notice {
    /// The payload for these announcements, falling back to "anything" when too long.
    pub fn payload(announcements: Vec<Announcement>, origin: Option<String>) -> String {
        let full = serde_json::to_string(&Notice { appended: Some(announcements), origin: origin.clone() }).expect("serializes");
        if full.len() <= MAX_PAYLOAD {
            full
        } else {
            serde_json::to_string(&Notice { appended: None, origin }).expect("serializes")
        }
    }
}

/// Something that may have changed. `Reset` means notifications may have been missed (the
/// connection dropped): anything cached from the log must be dropped.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Appended(Announcement),
    Reset,
}

#[derive(Clone)]
pub struct LogWatcher {
    /// Bumped on every notification: runners wait on it to know the log may have grown.
    generation: watch::Sender<u64>,
    changes: broadcast::Sender<Change>,
}

impl Default for LogWatcher {
    fn default() -> Self {
        Self { generation: watch::channel(0).0, changes: broadcast::channel(1024).0 }
    }
}

impl LogWatcher {
    /// A receiver that is marked changed whenever the log may have grown.
    pub fn wakeups(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Wake every runner (used after local appends so they do not wait for the round trip).
    pub fn poke(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    fn publish(&self, change: Change) {
        self.poke();
        let _ = self.changes.send(change);
    }

    /// Listen until `shutdown`. Reconnects on its own, and publishes `Reset` once it listens again
    /// after every connection or loss of one, never before: a cache cleared before that could be
    /// refilled, by a read made while nothing was heard, with what a missed append changed.
    pub async fn run(self, pool: PgPool, shutdown: CancellationToken) {
        let mut backoff = std::time::Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "event listener could not connect; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                    continue;
                }
            };
            // A lost connection is then re-established, and LISTENed on, before `try_recv` returns.
            listener.eager_reconnect(true);
            if let Err(e) = listener.listen(CHANNEL).await {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                continue;
            }
            backoff = std::time::Duration::from_millis(100);
            // Whatever happened while we were not listening is unknown.
            self.publish(Change::Reset);
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    n = listener.try_recv() => n,
                };
                match next {
                    Ok(Some(n)) => match serde_json::from_str::<Notice>(n.payload()) {
                        Ok(Notice { appended: Some(announcements), origin }) => {
                            for mut a in announcements {
                                a.origin = origin.clone();
                                self.publish(Change::Appended(a));
                            }
                        }
                        _ => self.publish(Change::Reset),
                    },
                    // The connection was lost; sqlx has reconnected and LISTENs again (eager
                    // reconnect), so what was missed in between can be forgotten now.
                    Ok(None) => self.publish(Change::Reset),
                    Err(e) => {
                        tracing::warn!(error = %e, "event listener failed; reconnecting");
                        break;
                    }
                }
            }
        }
    }
}
