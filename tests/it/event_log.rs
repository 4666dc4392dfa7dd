//! The event log: multi-stream atomic appends, optimistic concurrency, and a global reader that
//! never skips a transaction that committed out of order.

use crate::common::TestDb;
use projections::log::{read_after, read_stream, LogPosition};
use serde_json::json;
use wazion_bridge::store::{Actor, Append, AppendError, EventStore, Metadata, StreamAppend};

fn append(tenant: &str, streams: Vec<(&'static str, &str, i64, usize)>) -> Append {
    Append {
        tenant_id: tenant.into(),
        metadata: Metadata::new(Actor::System),
        streams: streams
            .into_iter()
            .map(|(stream_type, id, expected, n)| StreamAppend {
                stream_type,
                stream_id: id.into(),
                expected_version: expected,
                events: (0..n).map(|i| ("test.happened".to_owned(), 1, json!({"n": i}))).collect(),
            })
            .collect(),
    }
}

#[tokio::test]
async fn the_reader_never_skips_a_lower_position_that_commits_later() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone(), vec![]);

    // A takes the lower position but stays open...
    let mut a = db.pool.begin().await.unwrap();
    let a_events = store.append_in(&mut a, &append("t1", vec![("test", "a", 0, 1)])).await.unwrap();
    // ...while B takes a higher one and commits first.
    let mut b = db.pool.begin().await.unwrap();
    let b_events = store.append_in(&mut b, &append("t1", vec![("test", "b", 0, 1)])).await.unwrap();
    assert!(a_events[0].global_position < b_events[0].global_position);
    b.commit().await.unwrap();

    // B is committed and visible, but A could still commit behind it: the reader must hold back.
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&db.pool).await.unwrap();
    assert_eq!(visible, 1);
    let early = read_after(&db.pool, LogPosition::START, 100).await.unwrap();
    assert!(early.is_empty(), "read {early:?} while an earlier transaction was open");

    a.commit().await.unwrap();
    let all = read_until(&db, LogPosition::START, 2).await;
    let streams: Vec<&str> = all.iter().map(|e| e.stream_id.as_str()).collect();
    assert_eq!(streams, ["a", "b"], "both, in commit-safe order");
    // And a reader that had stopped anywhere before sees the rest.
    let after_first = read_after(&db.pool, all[0].position(), 100).await.unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].stream_id, "b");
}

#[tokio::test]
async fn an_append_covers_several_streams_atomically() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone(), vec![]);
    store.append(&append("t1", vec![("test", "x", 0, 1)])).await.unwrap();

    // The second stream's expected version is stale: nothing of the append may be written.
    let err = store.append(&append("t1", vec![("test", "y", 0, 2), ("test", "x", 0, 1)])).await.unwrap_err();
    assert!(matches!(err, AppendError::Conflict { .. }), "{err:?}");
    assert!(read_stream(&db.pool, "test", "y").await.unwrap().is_empty());

    let stored = store.append(&append("t1", vec![("test", "y", 0, 2), ("test", "x", 1, 1)])).await.unwrap();
    assert_eq!(stored.len(), 3);
    assert_eq!(stored.iter().map(|e| e.transaction_id).collect::<std::collections::HashSet<_>>().len(), 1, "one transaction");
    let versions: Vec<i64> = read_stream(&db.pool, "test", "y").await.unwrap().iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, [1, 2]);
}

#[tokio::test]
async fn a_second_writer_at_the_same_version_fails() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone(), vec![]);
    let writers = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.append(&append("t1", vec![("test", "race", 0, 1)])).await })
    });
    let results = futures_join(writers).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "exactly one writer wins version 1");
    assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| matches!(e, AppendError::Conflict { .. })));
    assert_eq!(read_stream(&db.pool, "test", "race").await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_log_refuses_updates_and_deletes() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone(), vec![]);
    store.append(&append("t1", vec![("test", "x", 0, 1)])).await.unwrap();
    let update = sqlx::query("UPDATE events SET payload = '{}'").execute(&db.pool).await.unwrap_err();
    assert!(update.to_string().contains("append-only"), "{update}");
    let delete = sqlx::query("DELETE FROM events").execute(&db.pool).await.unwrap_err();
    assert!(delete.to_string().contains("append-only"), "{delete}");
}

/// Read after `from` once `n` events are readable. The horizon is the oldest transaction running
/// anywhere on the PostgreSQL server, so a reader may briefly see less than is committed (never
/// out of order); this binary runs alone (.config/nextest.toml), so that is rare, and the wait is
/// on the log's NOTIFY.
async fn read_until(db: &TestDb, from: LogPosition, n: usize) -> Vec<projections::StoredEvent> {
    db.condition_within(std::time::Duration::from_secs(10), || async {
        read_after(&db.pool, from, 100).await.unwrap().len() >= n
    })
    .await;
    read_after(&db.pool, from, 100).await.unwrap()
}

async fn futures_join<T: Send + 'static>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

/// Readers of the log (projection runners, rebuilds, lag reports) must walk the log's index in
/// its order. Ordering by the bare name `transaction_id` once named the bigint the statement
/// selects, which no index has: every read sorted the rest of the log, and a rebuild over a
/// million events took ten minutes. With sorting made as costly as PostgreSQL allows, none of the
/// statements sorts.
#[tokio::test]
async fn the_log_is_read_along_its_index_never_sorted() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET enable_sort = off").execute(&mut *conn).await.unwrap();
    for statement in projections::log::ordered_reads() {
        let explain = format!("EXPLAIN (FORMAT JSON) {statement}");
        let mut query = sqlx::query_scalar::<_, serde_json::Value>(&explain);
        if statement.contains("$1") {
            query = query.bind("0").bind(0_i64).bind(100_i64).bind(Vec::<String>::new());
        }
        if statement.contains("$5") {
            query = query.bind("100").bind(100_i64);
        }
        let plan = query.fetch_one(&mut *conn).await.unwrap().to_string();
        assert!(plan.contains("events_log_order_idx"), "{statement}\n{plan}");
        assert!(!plan.contains("\"Sort\""), "sorts the log: {statement}\n{plan}");
    }
}
