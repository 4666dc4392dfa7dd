//! Operators: `bridge projections rebuild` rebuilds the read models from the log while messages
//! keep flowing and the API keeps answering, ends equal to a fresh replay, and resumes after an
//! interruption; `bridge projections verify` reports any difference from a fresh replay.

use crate::common::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

async fn app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.line_send_interval_ms = 5;
        c.line_send_jitter_ms = 0;
        c.sim_delivered_after_ms = 5;
        c.sim_read_after_ms = 10;
    })
    .await
}

async fn verify(app: &TestApp, name: &str) -> (bool, Value) {
    let run = app.cli(&["projections", "verify", name, "--json"]).await;
    let out: Value = serde_json::from_str(&run.stdout()).unwrap_or_else(|e| panic!("{e}: {} {}", run.stdout(), run.stderr()));
    assert_eq!(run.ok(), out["same"] == true, "the exit code says what the report says");
    (run.ok(), out)
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.db.pool).await.unwrap()
}

/// Wait until every message queued has been sent and delivered, and both read models have
/// applied the whole log.
async fn settled(app: &TestApp) {
    app.eventually("the traffic has settled", WAIT, || async {
        let undelivered = count(
            app,
            "SELECT count(*) FROM events q WHERE q.event_type = 'message.queued' AND NOT EXISTS \
               (SELECT 1 FROM events d WHERE d.stream_type = 'message' AND d.stream_id = q.stream_id \
                  AND d.event_type IN ('message.delivered', 'message.failed'))",
        )
        .await;
        let status = projections::runtime::status(&app.db.pool, &["chats", "messages"]).await.unwrap();
        undelivered == 0 && status.iter().all(|s| s.lag == 0)
    })
    .await;
}

#[tokio::test]
async fn a_rebuild_while_writes_continue_ends_equal_to_a_fresh_replay_and_the_api_answers_throughout() {
    let app = Arc::new(app().await);
    let (_, _, key) = app.account("business").await;
    let a = app.connected_line(&key, "+34600000501").await;
    let b = app.connected_line(&key, "+34600000502").await;
    for i in 0..30 {
        app.post(
            &key,
            &format!("/v1/sandbox/lines/{b}/inbound"),
            json!({"from": format!("+3465{:07}", i % 5), "message": format!("in{i}")}),
        )
        .await;
    }

    // Writers and readers run for the whole rebuild.
    let stop = Arc::new(AtomicBool::new(false));
    let (reads, failures) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let writer = tokio::spawn({
        let (app, key, a, b, stop) = (app.clone(), key.clone(), a.clone(), b.clone(), stop.clone());
        async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = app
                    .post(&key, "/v1/messages/send", json!({"line_id": a, "to": "+34600000502", "message": format!("w{sent}"), "archive_policy": if sent.is_multiple_of(3) { "always" } else { "never" }}))
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let (status, _) = app
                    .post(
                        &key,
                        &format!("/v1/sandbox/lines/{b}/inbound"),
                        json!({"from": "+34650000009", "message": format!("r{sent}")}),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK);
                sent += 1;
            }
            sent
        }
    });
    let reader = tokio::spawn({
        let (app, key, a, b, stop) = (app.clone(), key.clone(), a.clone(), b.clone(), stop.clone());
        let (reads, failures) = (reads.clone(), failures.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                for path in [format!("/v1/chats?line_id={b}"), format!("/v1/messages?line_id={a}&phone=%2B34600000502")] {
                    let response = app.get(&path, &key).await;
                    if response.status() == StatusCode::OK {
                        reads.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    });
    app.eventually("traffic is flowing", WAIT, || async {
        count(&app, "SELECT count(*) FROM events WHERE event_type = 'message.delivered'").await >= 5
    })
    .await;
    let run = app.cli(&["projections", "rebuild", "--all", "--json"]).await;
    stop.store(true, Ordering::Relaxed);
    let sent = writer.await.unwrap();
    reader.await.unwrap();
    let out = run.json();
    let rebuilt = out["rebuilt"].as_array().unwrap();
    assert_eq!(
        rebuilt.iter().map(|r| r["projection"].as_str().unwrap()).collect::<Vec<_>>(),
        ["messages", "chats", "usage_counters"]
    );
    assert!(rebuilt.iter().all(|r| r["events"].as_u64().unwrap() > 0 && r["resumed"] == false), "{out}");
    assert!(sent > 0, "writes went on during the rebuild");
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(failures.load(Ordering::Relaxed), 0, "every read was answered");

    settled(&app).await;
    for name in ["messages", "chats", "usage_counters"] {
        let (same, report) = verify(&app, name).await;
        assert!(same, "{name}: {report}");
    }
    // Nothing lost or duplicated: one row per message in the log.
    let in_log = count(&app, "SELECT count(*) FROM events WHERE event_type IN ('message.queued', 'message.received')").await;
    assert_eq!(count(&app, "SELECT count(*) FROM rm_messages").await, in_log);
    // The rebuilt tables are the live ones now, with their indexes; nothing is left behind.
    let leftovers = count(
        &app,
        "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild_%' OR nspname LIKE 'retired_%' OR nspname LIKE 'verify_%'",
    )
    .await;
    assert_eq!(leftovers, 0);
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'rm_chats' ORDER BY 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(indexes, ["rm_chats_pkey", "rm_chats_recent_idx"]);
    // And the live runners carry on on them.
    let (status, _) =
        app.post(&key, &format!("/v1/sandbox/lines/{b}/inbound"), json!({"from": "+34650000777", "message": "after"})).await;
    assert_eq!(status, StatusCode::OK);
    let response = app.get(&format!("/v1/chats?line_id={b}"), &key).await;
    let chats: Value = response.json().await.unwrap();
    assert!(chats["chats"].as_array().unwrap().iter().any(|c| c["phone"] == "+34650000777"), "{chats}");
    Arc::try_unwrap(app).ok().expect("the tasks are done").shutdown().await;
}

#[tokio::test]
async fn verify_names_the_rows_that_differ_and_a_rebuild_repairs_them() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let b = app.connected_line(&key, "+34600000511").await;
    for i in 0..6 {
        app.post(
            &key,
            &format!("/v1/sandbox/lines/{b}/inbound"),
            json!({"from": format!("+3466{:07}", i % 2), "message": format!("v{i}")}),
        )
        .await;
    }
    settled(&app).await;
    let (same, _) = verify(&app, "chats").await;
    assert!(same);

    // A read model that drifted (a bug, a hand edit): verify names the row, on both sides.
    sqlx::query("UPDATE rm_chats SET unread_count = 99 WHERE phone = '+34660000001'").execute(&app.db.pool).await.unwrap();
    let (same, report) = verify(&app, "chats").await;
    assert!(!same);
    let differences = report["verified"]["differences"].as_array().unwrap();
    assert_eq!(differences.len(), 2, "{report}");
    let live = differences.iter().find(|d| d["side"] == "live").unwrap();
    let replayed = differences.iter().find(|d| d["side"] == "replayed").unwrap();
    assert_eq!((live["row"]["unread_count"].as_i64(), replayed["row"]["unread_count"].as_i64()), (Some(99), Some(3)));

    let run = app.cli(&["projections", "rebuild", "chats", "--json"]).await;
    assert!(run.ok(), "{}", run.stderr());
    assert!(verify(&app, "chats").await.0);
    let unread = count(&app, "SELECT unread_count::bigint FROM rm_chats WHERE phone = '+34660000001'").await;
    assert_eq!(unread, 3);

    let refused = app.cli(&["projections", "rebuild", "webhook_deliveries"]).await;
    assert!(!refused.ok() && refused.stderr().contains("cannot be rebuilt"), "{}", refused.stderr());
    let unknown = app.cli(&["projections", "verify", "nope"]).await;
    assert!(
        !unknown.ok() && unknown.stderr().contains("there are: messages, chats, webhook_deliveries, usage_counters"),
        "{}",
        unknown.stderr()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_interrupted_rebuild_resumes_where_it_stopped() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let b = app.connected_line(&key, "+34600000521").await;
    for i in 0..40 {
        app.post(
            &key,
            &format!("/v1/sandbox/lines/{b}/inbound"),
            json!({"from": format!("+3467{:07}", i % 7), "message": format!("i{i}")}),
        )
        .await;
    }
    settled(&app).await;

    // Interrupted right after its first progress report (as a crash or Ctrl-C would): the bulk
    // load of everything below the horizon, with its checkpoint, is committed by then.
    let pool = app.db.pool.clone();
    let interrupted = tokio::spawn(async move {
        projections::rebuild::rebuild(&pool, &projections::conversations::Messages, 10, |_| panic!("interrupted")).await
    })
    .await;
    assert!(interrupted.unwrap_err().is_panic());
    let kept = count(&app, "SELECT global_position FROM projection_checkpoints WHERE name = 'rebuild:messages'").await;
    assert!(kept > 0, "the first batch was kept");
    let rows = count(&app, "SELECT count(*) FROM rebuild_messages.rm_messages").await;
    let messages_in_batch = count(&app, &format!("SELECT count(*) FROM events WHERE global_position <= {kept} AND event_type IN ('message.queued', 'message.received')")).await;
    assert_eq!(rows, messages_in_batch, "with its rows");

    // The interrupted run's connection, and the lock it held, go away on their own; then it
    // resumes.
    app.eventually("the interrupted run's lock is gone", WAIT, || async {
        count(
            &app,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = x'57420003'::bigint::oid \
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .await
            == 0
    })
    .await;
    let resumed =
        projections::rebuild::rebuild(&app.db.pool, &projections::conversations::Messages, 10, |_| {}).await.expect("it resumes");
    assert!(resumed.resumed);
    let loaded = count(&app, &format!("SELECT count(*) FROM events WHERE global_position <= {kept}")).await;
    assert_eq!(resumed.events as i64 + loaded, count(&app, "SELECT count(*) FROM events").await, "the rest of the log, once");
    assert!(verify(&app, "messages").await.0);
    app.shutdown().await;
}

/// Reads and writes go through while a rebuild is held at two points: while it builds its copy,
/// and inside its switch, with the live runner waiting on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_while_a_rebuild_builds_and_while_it_switches() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let b = app.connected_line(&key, "+34600000541").await;
    for i in 0..8 {
        app.post(
            &key,
            &format!("/v1/sandbox/lines/{b}/inbound"),
            json!({"from": format!("+3468{:07}", i % 3), "message": format!("p{i}")}),
        )
        .await;
    }
    settled(&app).await;

    // The rebuild stops after each of its first two batches until told to go on: the first is its
    // build (one batch holds the whole log), the second the catch-up inside the switch.
    let (held, mut at) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let (go_on, resume) = std::sync::mpsc::channel::<()>();
    let pool = app.db.pool.clone();
    let rebuild = tokio::spawn(async move {
        let mut batches = 0;
        projections::rebuild::rebuild(&pool, &projections::conversations::Chats, 1000, move |_| {
            batches += 1;
            if batches <= 2 {
                held.send(batches).unwrap();
                resume.recv().unwrap();
            }
        })
        .await
    });
    let chats_of_b = || async {
        let response = app.get(&format!("/v1/chats?line_id={b}"), &key).await;
        assert_eq!(response.status(), StatusCode::OK);
        let chats: Value = response.json().await.unwrap();
        chats["chats"].as_array().unwrap().iter().map(|c| c["phone"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let inbound = |phone: &'static str| {
        let (app, key, b) = (&app, &key, &b);
        async move {
            let (status, _) =
                app.post(key, &format!("/v1/sandbox/lines/{b}/inbound"), json!({"from": phone, "message": "held"})).await;
            assert_eq!(status, StatusCode::OK);
        }
    };
    // Held while building: the live runner goes on, and a write is read back at once.
    assert_eq!(at.recv().await, Some(1));
    inbound("+34681111111").await;
    assert!(chats_of_b().await.contains(&"+34681111111".to_owned()));
    go_on.send(()).unwrap();
    // Held inside the switch, with the live runner waiting on it: reads are answered (from the
    // live tables, up to date as of the switch) and writes accepted.
    assert_eq!(at.recv().await, Some(2));
    assert!(chats_of_b().await.contains(&"+34681111111".to_owned()));
    inbound("+34682222222").await;
    go_on.send(()).unwrap();
    let rebuilt = rebuild.await.unwrap().expect("the rebuild ends");
    assert!(!rebuilt.resumed);
    settled(&app).await;
    let chats: Value = app.get(&format!("/v1/chats?line_id={b}"), &key).await.json().await.unwrap();
    for phone in ["+34681111111", "+34682222222"] {
        assert!(chats["chats"].as_array().unwrap().iter().any(|c| c["phone"] == phone), "{phone}: {chats}");
    }
    assert!(verify(&app, "chats").await.0);
    app.shutdown().await;
}

async fn send_one(app: &TestApp, key: &str, line: &str, i: usize) {
    let (status, body) =
        app.post(key, "/v1/messages/send", json!({"line_id": line, "to": "+34699000531", "message": format!("q{i}")})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn drifted_quota_counters_are_found_and_rebuilt_while_sends_go_on() {
    let app = Arc::new(app().await);
    let (_, _, key) = app.account("business").await;
    let line = app.connected_line(&key, "+34600000531").await;
    let send = |i: usize| {
        let (app, key, line) = (app.clone(), key.clone(), line.clone());
        async move {
            let (status, body) = app
                .post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34699000531", "message": format!("q{i}")}))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    for i in 0..5 {
        send(i).await;
    }
    assert!(verify(&app, "usage_counters").await.0);

    // A counter that no longer matches the log (a hand edit, a bug): found, with both versions.
    sqlx::query("UPDATE usage_counters SET used = 999 WHERE metric = 'sent_messages'").execute(&app.db.pool).await.unwrap();
    let (same, report) = verify(&app, "usage_counters").await;
    assert!(!same);
    let mut sides: Vec<(String, i64)> = report["verified"]["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["side"].as_str().unwrap().to_owned(), d["row"]["used"].as_i64().unwrap()))
        .collect();
    sides.sort();
    assert_eq!(sides, [("live".to_owned(), 999), ("replayed".to_owned(), 5)]);

    // Rebuilt while sends go on: none is refused, none is lost from the count.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn({
        let (app, key, line, stop) = (app.clone(), key.clone(), line.clone(), stop.clone());
        async move {
            let mut i = 5;
            while !stop.load(Ordering::Relaxed) {
                send_one(&app, &key, &line, i).await;
                i += 1;
            }
            i
        }
    });
    let run = app.cli(&["projections", "rebuild", "usage_counters", "--json"]).await;
    stop.store(true, Ordering::Relaxed);
    let sent = sender.await.unwrap();
    assert!(run.ok(), "{}", run.stderr());
    assert!(verify(&app, "usage_counters").await.0);
    let used = count(&app, "SELECT used FROM usage_counters WHERE metric = 'sent_messages'").await;
    assert_eq!(used, sent as i64, "every send counted once");
    let usage: Value = app.get("/v1/usage", &key).await.json().await.unwrap();
    assert_eq!(usage["usage"]["sent_messages"]["used"], sent, "{usage}");
    Arc::try_unwrap(app).ok().expect("the tasks are done").shutdown().await;
}

/// A bulk rebuild folds the log in memory and copies the rows in; a verification replays with
/// the projections' own SQL. Over a log with every kind of event the read models fold (quotes,
/// reactions set, changed and removed on both sides, a group, chat reads of some and of all
/// messages, archive policies, archiving and unarchiving), the two agree, and the rebuilt tables
/// are the live ones.
/// Every kind of event the conversations' read models fold, from sends, receipts, inbound
/// messages (in a group too), quotes, reactions (set, changed, removed), reads and archives; returns
/// once every message is delivered and both read models are done.
async fn every_kind_of_conversation(app: &TestApp) {
    let (_, _, key) = app.account("pro").await;
    let a = app.connected_line(&key, "+34600000531").await;
    let b = app.connected_line(&key, "+34600000532").await;
    let post = |path: &'static str, body: Value| {
        let (app, key) = (app, &key);
        async move {
            let (status, answer) = app.post(key, path, body).await;
            assert!(status.is_success(), "{path}: {answer}");
            answer
        }
    };
    let inbound = |line: &str, body: Value| {
        let (app, key, path) = (app, &key, format!("/v1/sandbox/lines/{line}/inbound"));
        async move {
            let (status, answer) = app.post(key, &path, body).await;
            assert!(status.is_success(), "{answer}");
            answer
        }
    };
    for i in 0..6 {
        inbound(&b, json!({"from": format!("+3466{:07}", i % 3), "message": format!("hola {i}")})).await;
    }
    inbound(&b, json!({"from": "+34660000001", "group": "120363041234567890@g.us", "message": "en el grupo"})).await;
    let sent = post(
        "/v1/messages/send",
        json!({"line_id": b, "to": "+34660000000", "message": "¿Qué tal?", "archive_policy": "always"}),
    )
    .await;
    let sent_id = sent["message_id"].as_str().unwrap().to_owned();
    post("/v1/messages/send", json!({"line_id": b, "to": "+34660000001", "message": "x", "archive_policy": "never"})).await;
    post("/v1/messages/send", json!({"line_id": a, "to": "+34600000532", "message": "de línea a línea"})).await;
    settled(app).await;
    inbound(&b, json!({"from": "+34660000000", "message": "Bien", "quoted_message_id": sent_id})).await;
    inbound(&b, json!({"from": "+34660000000", "react_to": sent_id, "emoji": "👍"})).await;
    inbound(&b, json!({"from": "+34660000000", "react_to": sent_id, "emoji": "❤️"})).await;
    let (_, page) = {
        let r = app.get(&format!("/v1/messages?line_id={b}&phone=%2B34660000002"), &key).await;
        ((), r.json::<Value>().await.unwrap())
    };
    let theirs = page["messages"][0]["id"].as_str().or(page["messages"][0]["message_id"].as_str()).unwrap().to_owned();
    post("/v1/messages/react", json!({"line_id": b, "jid": "+34660000002", "message_id": theirs, "emoji": "🙏"})).await;
    post("/v1/messages/reply", json!({"line_id": b, "to": "+34660000002", "message": "Claro", "quoted_message_id": theirs}))
        .await;
    post("/v1/messages/react", json!({"line_id": b, "jid": "+34660000002", "message_id": theirs, "emoji": ""})).await;
    post("/v1/messages/read", json!({"line_id": b, "phone": "+34660000002", "message_ids": [theirs]})).await;
    post("/v1/messages/read", json!({"line_id": b, "phone": "+34660000000"})).await;
    post("/v1/chats/archive", json!({"line_id": b, "phone": "+34660000001"})).await;
    post("/v1/chats/archive", json!({"line_id": b, "phone": "+34660000000", "archive": false})).await;
    post("/v1/chats/archive", json!({"line_id": b, "phone": "120363041234567890@g.us"})).await;
    // Reactions get no receipts: every other message is delivered, and the read models are done.
    app.eventually("the traffic has settled", WAIT, || async {
        let undelivered = count(
            app,
            "SELECT count(*) FROM events q WHERE q.event_type = 'message.queued' \
               AND q.payload->'content'->>'kind' <> 'reaction' AND NOT EXISTS \
               (SELECT 1 FROM events d WHERE d.stream_type = 'message' AND d.stream_id = q.stream_id \
                  AND d.event_type = 'message.delivered')",
        )
        .await;
        let status = projections::runtime::status(&app.db.pool, &["chats", "messages"]).await.unwrap();
        undelivered == 0 && status.iter().all(|s| s.lag == 0)
    })
    .await;
}

#[tokio::test]
async fn a_bulk_rebuild_gives_the_rows_a_replay_with_the_projections_sql_gives() {
    let app = app().await;
    every_kind_of_conversation(&app).await;

    let dump = || async {
        let messages: Value = sqlx::query_scalar("SELECT jsonb_agg(to_jsonb(m) ORDER BY message_id) FROM rm_messages m")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        let chats: Value = sqlx::query_scalar("SELECT jsonb_agg(to_jsonb(c) ORDER BY line_id, phone) FROM rm_chats c")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        (messages, chats)
    };
    let live = dump().await;
    let messages = live.0.as_array().unwrap();
    assert!(messages.iter().any(|m| m["reactions"].as_object().is_some_and(|r| r.len() == 1)), "a reaction stands");
    assert!(messages.iter().any(|m| m["quoted_message_id"].is_string() && m["direction"] == "inbound"), "a quote received");
    assert!(messages.iter().any(|m| m["sender"].is_string()), "a group message");
    for name in ["messages", "chats"] {
        let projection = wazion_bridge::server::async_projections().into_iter().find(|p| p.name() == name).unwrap();
        let rebuilt = projections::rebuild::rebuild(&app.db.pool, projection.as_ref(), 100, |_| {}).await.unwrap();
        assert!(!rebuilt.resumed && rebuilt.events > 0, "{name}");
        let (same, out) = verify(&app, name).await;
        assert!(same, "{name}: the bulk rows against a replay with SQL: {out}");
    }
    assert_eq!(dump().await, live, "the rebuilt tables are the live ones");
    app.shutdown().await;
}

#[tokio::test]
async fn verify_compares_in_a_snapshot_of_its_own_holding_no_transaction_id_while_the_log_goes_on() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000541").await;
    let traffic = |round: usize| {
        let (app, key, line) = (&app, &key, &line);
        async move {
            for i in 0..3 {
                let path = format!("/v1/sandbox/lines/{line}/inbound");
                let (status, body) =
                    app.post(key, &path, json!({"from": format!("+3467{:07}", i), "message": format!("r{round} {i}")})).await;
                assert!(status.is_success(), "{body}");
                send_one(app, key, line, round * 10 + i).await;
            }
        }
    };
    traffic(0).await;
    settled(&app).await;
    let pool = &app.db.pool;
    let all: Vec<_> = wazion_bridge::server::async_projections()
        .into_iter()
        .chain(wazion_bridge::store::EventStore::inline_projections())
        .collect();
    for name in ["messages", "usage_counters"] {
        let projection = all.iter().find(|p| p.name() == name).unwrap();
        let mut frozen = projections::rebuild::freeze(pool, projection.as_ref(), 100, |_| {}).await.unwrap();
        let backends = frozen.backends().await.unwrap();
        let holding: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1) AND backend_xid IS NOT NULL")
                .bind(&backends[..])
                .fetch_one(pool)
                .await
                .unwrap();
        assert_eq!(holding, 0, "{name}: a pending comparison holds no transaction id");

        // New messages in and out while the comparison is pending: the runners read past them (the
        // horizon moves) and apply them (the live runner does not wait), and the counters move.
        let used = || count(&app, "SELECT coalesce(sum(used), 0)::bigint FROM usage_counters WHERE metric = 'sent_messages'");
        let used_before = used().await;
        traffic(1).await;
        settled(&app).await;
        assert_eq!(used().await, used_before + 3);
        if name == "messages" {
            let live = projections::runtime::status(pool, &["messages"]).await.unwrap();
            assert!(live[0].checkpoint.global_position > frozen.checkpoint().global_position, "the live runner went on");
        }

        // The comparison sees the live tables as they were at the frozen position, not as they are.
        let verified = frozen.compare().await.unwrap();
        assert!(verified.differences.is_empty(), "{name}: {:?}", verified.differences);
        assert!(verified.rows_compared > 0, "{name}");
    }
    assert_eq!(count(&app, "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'verify_%'").await, 0, "scratch dropped");
    app.shutdown().await;
}

/// `rm_messages` and `rm_chats` as the live runners' folds make them from the whole log, in
/// `chunk`-sized batches (`None`: the event-by-event SQL), in a transaction that is rolled back.
async fn conversations_folded(app: &TestApp, chunk: Option<usize>) -> (Value, Value) {
    use projections::Projection;
    let mut tx = app.db.pool.begin().await.unwrap();
    sqlx::query("DELETE FROM rm_messages").execute(&mut *tx).await.unwrap();
    sqlx::query("DELETE FROM rm_chats").execute(&mut *tx).await.unwrap();
    let events = projections::log::read_after(&mut *tx, projections::LogPosition::START, 100_000).await.unwrap();
    for projection in [&projections::conversations::Messages as &dyn Projection, &projections::conversations::Chats] {
        match chunk {
            Some(chunk) => {
                for batch in events.chunks(chunk) {
                    projection.apply_batch(&mut tx, batch).await.unwrap();
                }
            }
            None => {
                for event in &events {
                    projection.apply(&mut tx, event).await.unwrap();
                }
            }
        }
    }
    let messages: Value = sqlx::query_scalar("SELECT jsonb_agg(to_jsonb(m) ORDER BY message_id) FROM rm_messages m")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let chats: Value = sqlx::query_scalar("SELECT jsonb_agg(to_jsonb(c) ORDER BY line_id, phone) FROM rm_chats c")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    (messages, chats)
}

#[tokio::test]
async fn the_live_runners_fold_batches_into_the_rows_the_event_by_event_sql_gives() {
    let app = app().await;
    every_kind_of_conversation(&app).await;
    let by_event = conversations_folded(&app, None).await;
    assert!(by_event.0.as_array().is_some_and(|m| m.len() > 10), "{}", by_event.0);
    // Batches of every size put a reaction, a quote or a read in the batch of its target or after it.
    for chunk in [1, 2, 3, 5, 8, 1000] {
        assert_eq!(conversations_folded(&app, Some(chunk)).await, by_event, "batches of {chunk}");
    }
    app.shutdown().await;
}
