//! The asynchronous projection runtime: checkpoints, restarts, failures mid-batch, and one active
//! runner per projection across processes (advisory lock).

use crate::common::TestDb;
use projections::log::LogPosition;
use projections::notify::LogWatcher;
use projections::runtime::{self, Runner, RunnerConfig, RunnerState};
use projections::{ApplyFuture, Projection, ProjectionError, StoredEvent};
use serde_json::json;
use sqlx::PgPool;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use wazion_bridge::store::{Actor, Append, EventStore, Metadata, StreamAppend};

/// Records every event it applies; a double application shows as a repeated row.
struct Tally {
    /// Fail (once) when reaching this position, to simulate a crash in the middle of a batch.
    fail_at: AtomicI64,
}

impl Tally {
    fn new() -> Arc<Self> {
        Arc::new(Self { fail_at: AtomicI64::new(-1) })
    }
}

impl Projection for Tally {
    fn name(&self) -> &'static str {
        "test_tally"
    }

    fn apply<'a>(&'a self, conn: &'a mut sqlx::PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            sqlx::query("INSERT INTO tally (global_position) VALUES ($1)")
                .bind(event.global_position)
                .execute(&mut *conn)
                .await?;
            if self.fail_at.compare_exchange(event.global_position, -1, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                return Err(ProjectionError::Db(sqlx::Error::Protocol("simulated crash".into())));
            }
            Ok(())
        })
    }
}

async fn setup() -> (TestDb, EventStore) {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE tally (global_position bigint NOT NULL)").execute(&db.pool).await.unwrap();
    let store = EventStore::new(db.pool.clone(), vec![]);
    (db, store)
}

/// Append `n` events, one stream each; returns the last position.
async fn write(store: &EventStore, n: usize) -> LogPosition {
    let mut last = LogPosition::START;
    for _ in 0..n {
        let id = uuid::Uuid::new_v4().to_string();
        let stored = store
            .append(&Append {
                tenant_id: "t".into(),
                metadata: Metadata::new(Actor::System),
                streams: vec![StreamAppend {
                    stream_type: "test",
                    stream_id: id,
                    expected_version: 0,
                    events: vec![("test.e".into(), 1, json!({}))],
                }],
            })
            .await
            .unwrap();
        last = stored[0].position();
    }
    last
}

async fn tally(pool: &PgPool) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT global_position) FROM tally").fetch_one(pool).await.unwrap()
}

fn config() -> RunnerConfig {
    RunnerConfig { batch_size: 3, poll_interval: Duration::from_millis(200), lock_retry: Duration::from_millis(50) }
}

struct Running {
    token: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
    state: tokio::sync::watch::Receiver<RunnerState>,
    progress: tokio::sync::watch::Receiver<LogPosition>,
}

fn start(pool: &PgPool, projection: Arc<Tally>, watcher: &LogWatcher) -> Running {
    let runner = Runner::new(pool.clone(), projection, watcher.wakeups(), config());
    let (state, progress) = (runner.state(), runner.progress());
    let token = CancellationToken::new();
    let handle = tokio::spawn(runner.run(token.clone()));
    Running { token, handle, state, progress }
}

impl Running {
    async fn reaches(&mut self, target: LogPosition) {
        tokio::time::timeout(Duration::from_secs(20), self.progress.wait_for(|p| *p >= target))
            .await
            .expect("runner caught up in time")
            .unwrap();
    }
    async fn stop(self) {
        self.token.cancel();
        self.handle.await.unwrap();
    }
}

#[tokio::test]
async fn a_restarted_runner_resumes_from_its_checkpoint_without_applying_twice() {
    let (db, store) = setup().await;
    let watcher = LogWatcher::default();
    let projection = Tally::new();

    let first_head = write(&store, 7).await;
    let mut first = start(&db.pool, projection.clone(), &watcher);
    first.reaches(first_head).await;
    first.stop().await;
    assert_eq!(tally(&db.pool).await, (7, 7));

    let second_head = write(&store, 5).await;
    // The new runner crashes in the middle of a batch once; the batch is rolled back and re-run.
    projection.fail_at.store(second_head.global_position - 1, Ordering::SeqCst);
    let mut second = start(&db.pool, projection.clone(), &watcher);
    watcher.poke();
    second.reaches(second_head).await;
    second.stop().await;
    assert_eq!(projection.fail_at.load(Ordering::SeqCst), -1, "the simulated crash happened");
    assert_eq!(tally(&db.pool).await, (12, 12), "every event applied exactly once");

    let status = runtime::status(&db.pool, &["test_tally"]).await.unwrap();
    assert_eq!(status[0].checkpoint, second_head);
    assert_eq!(status[0].lag, 0);
    assert!(!status[0].active, "no runner holds the lock any more");
}

#[tokio::test]
async fn a_second_runner_stays_idle_while_the_first_holds_the_lock_then_takes_over() {
    let (db, store) = setup().await;
    let watcher = LogWatcher::default();

    let mut first = start(&db.pool, Tally::new(), &watcher);
    first.state.wait_for(|s| *s == RunnerState::Active).await.unwrap();
    let mut second = start(&db.pool, Tally::new(), &watcher);
    // The second runner has tried for the lock and stayed in standby.
    second.state.changed().await.unwrap();
    assert_eq!(*second.state.borrow_and_update(), RunnerState::Standby);

    let head = write(&store, 10).await;
    watcher.poke();
    first.reaches(head).await;
    assert_eq!(*second.progress.borrow(), LogPosition::START, "the standby runner applied nothing");
    assert_eq!(*second.state.borrow(), RunnerState::Standby);
    assert_eq!(tally(&db.pool).await, (10, 10));
    let status = runtime::status(&db.pool, &["test_tally"]).await.unwrap();
    assert!(status[0].active);

    // When the first one goes away, the second takes over from the checkpoint.
    first.stop().await;
    second.state.wait_for(|s| *s == RunnerState::Active).await.unwrap();
    let head = write(&store, 4).await;
    watcher.poke();
    second.reaches(head).await;
    second.stop().await;
    assert_eq!(tally(&db.pool).await, (14, 14));
}

#[tokio::test]
async fn catch_up_once_drives_a_projection_to_the_head_and_yields_to_an_active_runner() {
    let (db, store) = setup().await;
    write(&store, 8).await;
    let projection = Tally::new();
    // Each pass applies what is final below the server-wide horizon, never more; drive passes
    // until everything is applied (this binary runs alone, so one pass normally does it).
    let applied = std::sync::atomic::AtomicUsize::new(0);
    db.condition_within(Duration::from_secs(10), || async {
        let n = runtime::catch_up_once(&db.pool, projection.as_ref(), 3).await.unwrap().expect("no other runner");
        applied.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n >= 8
    })
    .await;
    let applied = applied.into_inner();
    assert_eq!(applied, 8);
    assert_eq!(runtime::catch_up_once(&db.pool, projection.as_ref(), 3).await.unwrap(), Some(0));
    assert_eq!(tally(&db.pool).await, (8, 8));

    let watcher = LogWatcher::default();
    let mut running = start(&db.pool, projection.clone(), &watcher);
    running.state.wait_for(|s| *s == RunnerState::Active).await.unwrap();
    assert_eq!(runtime::catch_up_once(&db.pool, projection.as_ref(), 3).await.unwrap(), None);
    running.stop().await;
}
