//! What keeps nodes that share one database from stepping on each other: a line's lease lives as
//! long as its send, two live processes never share a node id, and every node uses one master key.

use crate::common::receiver::{Receiver, Reply};
use crate::common::{TestApp, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use wazion_bridge::config::{Config, Secret};

const WAIT: Duration = Duration::from_secs(20);

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

fn quick_leases(c: &mut Config) {
    c.allow_private_urls = true;
    c.line_lease_secs = 2;
    c.media_timeout_ms = 120_000;
    c.line_send_interval_ms = 20;
    c.line_send_jitter_ms = 0;
    c.sim_delivered_after_ms = 20;
}

#[tokio::test]
async fn a_send_that_outlives_the_lease_ttl_is_not_taken_over_and_sent_again_by_another_node() {
    let (media_url, mut requests, release) = crate::common::held_file().await;
    let app = TestApp::spawn_with(quick_leases).await;
    // A second node on the same database, scanning for lines no worker serves.
    let mut config = crate::common::test_config();
    quick_leases(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = wazion_bridge::server::start(config, app.db.pool.clone(), listener).await.expect("a second node starts");
    assert_ne!(second.node_id(), app.server.as_ref().unwrap().node_id(), "each process has its own node id");

    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000501").await;
    let (status, sent) =
        app.post(&key, "/v1/messages/send-media", json!({"line_id": line, "to": "+34699000501", "media_url": media_url})).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let message_id = sent["message_id"].as_str().unwrap().to_owned();

    // The owning node is downloading the file, which does not come.
    tokio::time::timeout(WAIT, requests.wait_for(|n| *n >= 1)).await.expect("the download starts").unwrap();
    // Without a heartbeat the lease would run out 2 s after it was taken, and the other node,
    // which looks for unserved lines every 2 s, would take the line over and send the message
    // again. Watch for three TTLs and a scan: nothing of the kind may happen.
    let taken_over = app
        .db
        .condition_within(Duration::from_secs(8), || async {
            count(&app.db, "SELECT count(*) FROM line_leases WHERE epoch > 1").await > 0 || *requests.borrow() > 1
        })
        .await;
    assert!(!taken_over, "another node took the line over mid-send: {} download(s)", *requests.borrow());

    release.notify_waiters();
    app.eventually("the message is sent", WAIT, || async {
        count(&app.db, &format!("SELECT count(*) FROM events WHERE stream_id = '{message_id}' AND event_type = 'message.sent'"))
            .await
            == 1
    })
    .await;
    let started = count(
        &app.db,
        &format!("SELECT count(*) FROM events WHERE stream_id = '{message_id}' AND event_type = 'message.dispatch_started'"),
    )
    .await;
    assert_eq!(started, 1, "one attempt, by one node");
    assert_eq!(*requests.borrow(), 1, "the file was fetched once");
    assert_eq!(count(&app.db, "SELECT count(*) FROM sim_deliveries").await, 1);
    assert_eq!(count(&app.db, "SELECT max(epoch) FROM line_leases").await, 1, "the lease never changed hands");
    second.shutdown().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_process_whose_node_id_a_live_process_holds_refuses_to_start_and_leaves_its_claims_alone() {
    let db = TestDb::new().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Hang);
    let (_first, base, log) = crate::common::serve_process(&db, &[("BRIDGE_ALLOW_PRIVATE_URLS", "true")]).await;
    let account = crate::common::cli(&db, &["accounts", "create", "--name", "Twin", "--plan", "pro", "--json"]).await.json();
    let account_id = account["account_id"].as_str().unwrap();
    let key = crate::common::cli(&db, &["keys", "create", "--account", account_id, "--json"]).await.json()["api_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{base}/v1/webhooks"))
        .bearer_auth(&key)
        .json(&json!({"url": receiver.url, "events": ["line.status"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let line: Value =
        http.post(format!("{base}/v1/lines")).bearer_auth(&key).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let line_id = line["line"]["line_id"].as_str().unwrap();
    let scanned = http
        .post(format!("{base}/v1/sandbox/lines/{line_id}/scan"))
        .bearer_auth(&key)
        .json(&json!({"phone": "+34600000511"}))
        .send()
        .await
        .unwrap();
    assert_eq!(scanned.status(), StatusCode::OK);
    // node-a is now sending the line.status event to a receiver that does not answer.
    receiver.wait_for(1, WAIT).await;

    let twin = crate::common::bridge(&db)
        .arg("serve")
        .env("BRIDGE_LISTEN", "127.0.0.1:0")
        .env("BRIDGE_NODE_ID", "node-a")
        .env("BRIDGE_ALLOW_PRIVATE_URLS", "true")
        .output();
    let twin = tokio::time::timeout(Duration::from_secs(30), twin).await.unwrap_or_else(|_| {
        panic!("a second process with node id node-a started; the first one's log:\n{}", std::fs::read_to_string(&log).unwrap())
    });
    let twin = twin.unwrap();
    let stderr = String::from_utf8_lossy(&twin.stderr);
    assert!(!twin.status.success(), "the twin must not start: {stderr}");
    assert!(stderr.contains("node_id `node-a` is in use by another live process"), "{stderr}");

    // The twin released nothing of node-a's: the delivery is still in flight, on its first attempt.
    let (state, attempts, claimed_by): (String, i32, Option<String>) =
        sqlx::query_as("SELECT state, attempts, claimed_by FROM webhook_deliveries").fetch_one(&db.pool).await.unwrap();
    assert_eq!((state.as_str(), attempts, claimed_by.as_deref()), ("in_flight", 1, Some("node-a")));
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn a_node_with_another_master_key_does_not_start() {
    let app = TestApp::spawn().await;
    let mut config = crate::common::test_config();
    config.master_key = Some(Secret::new("11".repeat(32)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = wazion_bridge::server::start(config, app.db.pool.clone(), listener).await;
    let error = format!("{:#}", refused.err().expect("a node with another master key must not start"));
    assert!(error.contains("master key is not the one this database was set up with"), "{error}");
    assert!(!error.contains(&"11".repeat(32)), "the key itself is never shown");
    // Nor do the commands that sign or check digests with it.
    let other = "11".repeat(32);
    for args in [&["audit", "digest"][..], &["audit", "verify"]] {
        let run = crate::common::bridge(&app.db).args(args).env("BRIDGE_MASTER_KEY", &other).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success() && stderr.contains("master key is not the one this database was set up with"), "{stderr}");
    }
    // The same key starts fine.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let same = wazion_bridge::server::start(crate::common::test_config(), app.db.pool.clone(), listener).await.expect("starts");
    same.shutdown().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_webhook_secret_that_does_not_open_fails_its_attempts_with_a_reason_and_blocks_nothing() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(|c| {
        c.allow_private_urls = true;
        c.webhooks.retry_schedule_ms = vec![50, 50];
        c.webhooks.retry_jitter = 0.0;
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let (status, created) = app.post(&key, "/v1/webhooks", json!({"url": receiver.url, "events": ["line.status"]})).await;
    assert_eq!(status, StatusCode::CREATED);
    let webhook = created["webhook"]["id"].as_str().unwrap().to_owned();
    // A secret sealed under another master key, as after a restore under the wrong key.
    let other = wazion_bridge::secrets::MasterKey::from_secret(&Secret::new("22".repeat(32))).unwrap();
    sqlx::query("UPDATE webhooks SET secret_sealed = $1")
        .bind(other.seal("wzb_whsec_elsewhere").0)
        .execute(&app.db.pool)
        .await
        .unwrap();

    let line = app.connected_line(&key, "+34600000521").await;
    let deliveries = |webhook: String| {
        let (app, key) = (&app, &key);
        async move {
            let r = app.get(&format!("/v1/webhooks/{webhook}/deliveries"), key).await;
            r.json::<Value>().await.unwrap()["deliveries"].as_array().unwrap().clone()
        }
    };
    app.eventually("the delivery is given up after its retries", WAIT, || async {
        deliveries(webhook.clone()).await.first().is_some_and(|d| d["status"] == "failed")
    })
    .await;
    let failed = &deliveries(webhook.clone()).await[0];
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert_eq!(
        failed["last_error"], "not sent: the webhook's signing secret cannot be opened with this node's master key",
        "{failed}"
    );
    assert!(receiver.requests().is_empty(), "nothing is sent unsigned");

    // A new secret mends it, and the line's next events flow.
    let (status, _) = app.post(&key, &format!("/v1/webhooks/{webhook}/rotate-secret"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.post(&key, &format!("/v1/sandbox/lines/{line}/disconnect"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let delivered = receiver.wait_for_body("line.status disconnected", WAIT, |b| b["data"]["status"] == "disconnected").await;
    assert_eq!(delivered.json()["line_id"], line.as_str());
    app.shutdown().await;
}

#[tokio::test]
async fn one_renewer_keeps_every_lease_of_a_node_and_tells_the_worker_whose_line_was_taken_over() {
    use wazion_bridge::dispatch::lease;
    let db = TestDb::new().await;
    let ttl = Duration::from_secs(3);
    let lines: Vec<domain::ids::LineId> = (0..3).map(|_| domain::ids::LineId::new()).collect();
    let renewer = lease::Renewer::start(db.pool.clone(), ttl);
    let mut keepers = Vec::new();
    for line in &lines {
        let taken = lease::acquire(&db.pool, line, "node-a", ttl).await.unwrap().expect("free");
        keepers.push(renewer.keep(taken));
    }
    let expiry = |line: &domain::ids::LineId| {
        let (pool, line) = (db.pool.clone(), line.to_string());
        async move {
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>("SELECT expires_at FROM line_leases WHERE line_id = $1")
                .bind(line)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // Until the renewal round after this one has moved the line's expiry on.
    let renewed = |line: &domain::ids::LineId| {
        let (db, line) = (&db, line.clone());
        async move {
            let before = expiry(&line).await;
            db.await_condition("a renewal round to move a held lease on", 2 * ttl, || async { expiry(&line).await > before })
                .await;
        }
    };

    // Line 0 is taken over by another node (its lease ran out there); line 1's worker ends.
    sqlx::query("UPDATE line_leases SET owner = 'node-b', epoch = epoch + 1 WHERE line_id = $1")
        .bind(lines[0].as_str())
        .execute(&db.pool)
        .await
        .unwrap();
    drop(keepers.remove(1));
    tokio::time::timeout(2 * ttl, keepers[0].lost()).await.expect("the next renewal finds the lease taken");
    assert!(!keepers[1].is_lost(), "the node's other lease is still held");

    // Two rounds renew line 2 (the second began after line 1 was let go); one more leaves line 1 as it was.
    renewed(&lines[2]).await;
    renewed(&lines[2]).await;
    let let_go = expiry(&lines[1]).await;
    renewed(&lines[2]).await;
    assert_eq!(expiry(&lines[1]).await, let_go, "a lease let go is not renewed");
    assert!(!keepers[1].is_lost());
}
