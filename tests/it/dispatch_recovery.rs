//! The dispatcher across crashes: a killed server's queue is sent exactly once and in order after
//! a restart, and an attempt recorded before a crash is retried under the same WhatsApp id.

use crate::common::{TestApp, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// `bridge serve` as a real process on the test database, quick to send.
async fn serve(db: &TestDb) -> (tokio::process::Child, String, std::path::PathBuf) {
    crate::common::serve_process(
        db,
        &[("BRIDGE_LINE_SEND_INTERVAL_MS", "150"), ("BRIDGE_LINE_SEND_JITTER_MS", "0"), ("BRIDGE_SIM_DELIVERED_AFTER_MS", "10")],
    )
    .await
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

#[tokio::test]
async fn a_server_killed_with_a_queue_pending_sends_every_message_exactly_once_and_in_order_after_restart() {
    let db = TestDb::new().await;
    let (_, key) = crate::common::account_on(&db.url, "pro").await;

    let (mut first, base, first_log) = serve(&db).await;
    let http = reqwest::Client::new();
    let post = |base: String, path: &'static str, body: Value| {
        let (http, key) = (http.clone(), key.clone());
        async move {
            let r = http.post(format!("{base}{path}")).bearer_auth(key).json(&body).send().await.unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let mut lines = Vec::new();
    for phone in ["+34600000301", "+34600000302"] {
        let (_, created) = post(base.clone(), "/v1/lines", json!({})).await;
        let line = created["line"]["line_id"].as_str().unwrap().to_owned();
        let r = http
            .post(format!("{base}/v1/sandbox/lines/{line}/scan"))
            .bearer_auth(&key)
            .json(&json!({"phone": phone}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        lines.push(line);
    }
    const N: usize = 10;
    for i in 0..N {
        let (status, _) = post(
            base.clone(),
            "/v1/messages/send",
            json!({"line_id": lines[0], "to": "+34600000302", "message": format!("{i}")}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Kill it (no graceful shutdown) once some, but not all, have gone out.
    let first_sent = db
        .condition_within(Duration::from_secs(20), || async { count(&db, "SELECT count(*) FROM sim_deliveries").await >= 2 })
        .await;
    if !first_sent {
        panic!("the first sends did not go out; state: {}\nserver's log:\n{}", diagnose(&db).await, log_tail(&first_log));
    }
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let before_restart = count(&db, "SELECT count(*) FROM sim_deliveries").await;
    assert!((before_restart as usize) < N, "the queue was still pending when the server died");

    let (mut second, _, second_log) = serve(&db).await;
    // Until every send's outcome is recorded (arrival on line B comes just before it).
    let all_sent = db
        .condition_within(Duration::from_secs(30), || async {
            count(&db, "SELECT count(*) FROM events WHERE event_type = 'message.sent'").await >= N as i64
        })
        .await;
    if !all_sent {
        panic!(
            "not everything was sent after the restart; state: {}\nrestarted server's log:\n{}",
            diagnose(&db).await,
            log_tail(&second_log)
        );
    }
    second.start_kill().unwrap();

    let received: Vec<String> = sqlx::query_scalar(
        "SELECT payload->'content'->>'text' FROM events WHERE event_type = 'message.received' ORDER BY global_position",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(received, expected, "every message arrived once, in the order it was accepted");
    assert_eq!(count(&db, "SELECT count(*) FROM sim_deliveries").await, N as i64);
    assert_eq!(count(&db, "SELECT count(*) FROM events WHERE event_type = 'message.sent'").await, N as i64);
    assert_eq!(count(&db, "SELECT count(*) FROM dispatch_queue").await, 0);
    let epochs = count(&db, "SELECT max(epoch) FROM line_leases").await;
    assert!(epochs >= 2, "the restarted node took the line under a new epoch");
}

#[tokio::test]
async fn an_attempt_recorded_before_a_crash_is_retried_under_the_same_whatsapp_id_and_delivered_once() {
    use wazion_bridge::commands::messages::dispatch_step;
    use wazion_bridge::dispatch::lease;
    let mut app = TestApp::spawn_with(|c| c.line_send_jitter_ms = 0).await;
    let (account_id, _, key) = app.account("pro").await;
    let mut lines = Vec::new();
    for phone in ["+34600000311", "+34600000312"] {
        let r: Value =
            app.http.post(app.url("/v1/lines")).bearer_auth(&key).json(&json!({})).send().await.unwrap().json().await.unwrap();
        let line = r["line"]["line_id"].as_str().unwrap().to_owned();
        app.http
            .post(app.url(&format!("/v1/sandbox/lines/{line}/scan")))
            .bearer_auth(&key)
            .json(&json!({"phone": phone}))
            .send()
            .await
            .unwrap();
        lines.push(line);
    }
    let store = app.server.as_ref().unwrap().state.store.clone();
    let plans = app.server.as_ref().unwrap().state.plans.clone();
    app.stop_server().await;

    // A node that then dies: it takes the line, queues a message and records the attempt.
    let line_a = domain::ids::LineId::parse(&lines[0]).unwrap();
    let account = domain::ids::AccountId::parse(&account_id).unwrap();
    let dead = lease::acquire(store.pool(), &line_a, "node-dead", Duration::from_secs(3600)).await.unwrap().unwrap();
    let message_id = queue_text(&store, &plans, &account, &line_a, "once").await;
    dispatch_step(
        &store,
        &dead,
        &message_id,
        domain::message::MessageCommand::StartDispatch { engine_message_id: "3EB0DEADBEEF00000001".into() },
    )
    .await
    .unwrap();
    // Its lease runs out.
    sqlx::query("UPDATE line_leases SET expires_at = now() - interval '1 second'").execute(&app.db.pool).await.unwrap();

    app.start_server(|c| c.line_send_jitter_ms = 0).await;
    app.eventually("the message is sent", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = 'message.sent'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
            == 1
    })
    .await;
    let sent_id: String =
        sqlx::query_scalar("SELECT payload->>'engine_message_id' FROM events WHERE event_type = 'message.sent'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(sent_id, "3EB0DEADBEEF00000001", "the id announced before the crash");
    let attempts: Vec<i64> = sqlx::query_scalar(
        "SELECT (payload->>'attempt')::bigint FROM events WHERE event_type = 'message.dispatch_started' ORDER BY global_position",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(attempts, [1, 2]);
    let received: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'message.received'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(received, 1);

    // The dead node, should it wake up, can no longer write for the line, even a step the message
    // would accept.
    app.stop_server().await;
    let another_id = queue_text(&store, &plans, &account, &line_a, "later").await;
    let late = dispatch_step(
        &store,
        &dead,
        &another_id,
        domain::message::MessageCommand::StartDispatch { engine_message_id: "3EB0LATE".into() },
    )
    .await;
    assert!(
        matches!(late, Err(wazion_bridge::commands::messages::DispatchError::LeaseLost)),
        "a stale epoch must not write: {late:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_receipt_that_arrives_before_the_send_is_recorded_does_not_leave_the_message_queued() {
    use wazion_bridge::commands::messages::{dispatch_step, receipt};
    use wazion_bridge::dispatch::lease;
    let mut app = TestApp::spawn().await;
    let (account_id, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000321").await;
    let store = app.server.as_ref().unwrap().state.store.clone();
    let plans = app.server.as_ref().unwrap().state.plans.clone();
    app.stop_server().await;

    // The dispatcher announced the attempt and the network delivered it; the recipient's receipt
    // is recorded before the dispatcher records the send.
    let line_id = domain::ids::LineId::parse(&line).unwrap();
    let account = domain::ids::AccountId::parse(&account_id).unwrap();
    let guard = lease::acquire(store.pool(), &line_id, "node-a", Duration::from_secs(60)).await.unwrap().unwrap();
    let message_id = queue_text(&store, &plans, &account, &line_id, "raced").await;
    let started = domain::message::MessageCommand::StartDispatch { engine_message_id: "3EB0RACE".into() };
    dispatch_step(&store, &guard, &message_id, started).await.unwrap();
    let engine = wazion_bridge::store::Metadata::new(wazion_bridge::store::Actor::Engine { line_id: line.clone() });
    receipt(&store, &engine, &message_id, domain::message::MessageStatus::Delivered).await.unwrap();
    let sent = domain::message::MessageCommand::MarkSent { engine_message_id: "3EB0RACE".into() };
    let recorded = dispatch_step(&store, &guard, &message_id, sent).await.unwrap();
    assert!(recorded.is_empty(), "the send was already recorded by the receipt");

    let types: Vec<String> = sqlx::query_scalar("SELECT event_type FROM events WHERE stream_id = $1 ORDER BY global_position")
        .bind(message_id.as_str())
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(types, ["message.queued", "message.dispatch_started", "message.sent", "message.delivered"]);
    assert_eq!(count(&app.db, "SELECT count(*) FROM dispatch_queue").await, 0, "the line's queue is not stuck behind it");
    app.shutdown().await;
}

/// Queue a text from `line` to +34600000312 through the library, as a node would.
async fn queue_text(
    store: &wazion_bridge::store::EventStore,
    plans: &domain::plan::PlanCatalog,
    account: &domain::ids::AccountId,
    line: &domain::ids::LineId,
    text: &str,
) -> domain::ids::MessageId {
    use wazion_bridge::commands::messages::{send, Send, SendOutcome};
    let metadata = wazion_bridge::store::Metadata::new(wazion_bridge::store::Actor::System);
    let message = Send {
        line_id: line.clone(),
        to: domain::chat_id::ChatId::parse("+34600000312").unwrap(),
        content: domain::message::Content::Text { text: domain::message::MessageText::parse(text).unwrap() },
        quoted_message_id: None,
        archive_policy: Default::default(),
        idempotency: None,
    };
    let SendOutcome::Accepted { response, .. } = send(store, plans, &metadata, account, message).await.unwrap() else {
        panic!("queued")
    };
    domain::ids::MessageId::parse(&response.message_id).unwrap()
}

/// The last 40 lines of a server's log, for a failure message.
fn log_tail(path: &std::path::Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
    tail.join("\n")
}

/// What the queue, the lease and the database's sessions look like, for a failure message.
async fn diagnose(db: &TestDb) -> Value {
    sqlx::query_scalar(
        "SELECT jsonb_build_object( \
            'queue', (SELECT jsonb_agg(to_jsonb(q)) FROM dispatch_queue q), \
            'leases', (SELECT jsonb_agg(jsonb_build_object('owner', owner, 'epoch', epoch, 'expires_in', expires_at - now())) FROM line_leases), \
            'sent', (SELECT count(*) FROM events WHERE event_type = 'message.sent'), \
            'sessions', (SELECT jsonb_agg(jsonb_build_object('state', state, 'wait', wait_event_type || ':' || wait_event, 'query', left(query, 120))) \
                         FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()))",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}
