//! Running as a cluster: nodes with roles, their heartbeats and `bridge nodes list`, lines shared
//! among the dispatch nodes and handed over when one leaves, health checks and the metrics an
//! operator scrapes.

use crate::common::receiver::Receiver;
use crate::common::{TestApp, TestDb};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use wazion_bridge::config::{Config, Secret};
use wazion_bridge::server::RunningServer;

const WAIT: Duration = Duration::from_secs(30);
const OPERATOR_TOKEN: &str = "operator-token-for-the-cluster-tests-0123456789";

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

fn quick(c: &mut Config) {
    c.line_lease_secs = 3;
    c.line_send_interval_ms = 20;
    c.line_send_jitter_ms = 0;
    c.sim_delivered_after_ms = 20;
}

/// Another node on the test's database.
async fn node(db: &TestDb, configure: impl FnOnce(&mut Config)) -> (RunningServer, String) {
    crate::common::node_on(&db.pool, configure).await
}

#[tokio::test]
async fn a_node_without_the_api_role_serves_only_health_checks_and_says_what_it_does() {
    let db = TestDb::new().await;
    let (server, base) = node(&db, |c| {
        c.node_id = "node-d".into();
        c.roles = vec!["dispatch".into(), "webhooks".into()];
    })
    .await;
    let http = reqwest::Client::new();
    let me = http.get(format!("{base}/v1/me")).send().await.unwrap();
    assert_eq!(me.status(), StatusCode::NOT_FOUND, "no API on a dispatch node");
    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "ok", "node": "node-d"}));
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    insta::assert_json_snapshot!("dispatch_node_ready", ready);

    let listed = crate::common::cli(&db, &["nodes", "list", "--json"]).await.json();
    let nodes = listed["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{listed}");
    assert_eq!(nodes[0]["node_id"], "node-d");
    assert_eq!(nodes[0]["roles"], json!(["dispatch", "webhooks"]));
    assert_eq!(nodes[0]["status"], "live");

    server.shutdown().await;
    let listed = crate::common::cli(&db, &["nodes", "list", "--json"]).await.json();
    assert_eq!(listed["nodes"], json!([]), "a node that stopped cleanly leaves the list");
}

#[tokio::test]
async fn readiness_fails_with_the_reason_when_the_database_is_ahead_of_the_binary() {
    let app = TestApp::spawn().await;
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    // A newer binary migrated the database: this one must not take traffic.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101, 'from a newer release', true, '\\x00', 1)",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert!(body["checks"]["migrations"].as_str().unwrap().contains("99990101"), "{body}");
    assert_eq!(body["checks"]["database"], "ok", "{body}");
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the process itself is fine");
    app.shutdown().await;
}

/// Every sample line of a scrape: `name{labels}` and its value. Panics on a line that is not
/// in the text format.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number in: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "bad metric name in: {line}");
        assert!(!series.contains('{') || series.ends_with('}'), "unclosed labels in: {line}");
        out.insert(series.to_owned(), value);
    }
    out
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no sample {series} in:\n{}", samples.keys().cloned().collect::<Vec<_>>().join("\n")))
}

fn has_series(samples: &BTreeMap<String, f64>, name: &str) -> bool {
    samples.keys().any(|k| k == name || k.starts_with(&format!("{name}{{")))
}

#[tokio::test]
async fn metrics_are_scraped_with_every_series_an_operator_alerts_on() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(|c| {
        quick(c);
        c.node_id = "node-m".into();
        c.allow_private_urls = true;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c.operator_token = Some(Secret::new(OPERATOR_TOKEN));
    })
    .await;
    let metrics_url = format!("http://{}/metrics", app.server.as_ref().unwrap().metrics_addr.expect("a metrics listener"));
    let (_, _, key) = app.account("pro").await;
    let (status, hook) = app.post(&key, "/v1/webhooks", json!({"url": receiver.url})).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let line = app.connected_line(&key, "+34600000601").await;
    let (status, sent) =
        app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34699000601", "message": "hi"})).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let message_id = sent["message_id"].as_str().unwrap().to_owned();
    receiver
        .wait_for_body("the message's sent webhook", WAIT, |b| {
            b["event"] == "message.sent" && b["data"]["message_id"] == message_id.as_str()
        })
        .await;
    // The delivery is recorded after the receiver answers: wait for it, and for the projections.
    app.eventually("the deliveries are recorded", WAIT, || async {
        count(&app.db, "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'").await >= 1
    })
    .await;

    let scrape = reqwest::get(&metrics_url).await.unwrap();
    assert_eq!(scrape.status(), StatusCode::OK);
    assert!(scrape.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = scrape.text().await.unwrap();
    let s = samples(&text);
    // HTTP requests and latency, per route and status (the pattern, not the path).
    assert!(value(&s, r#"bridge_http_requests_total{method="POST",route="/v1/messages/send",status="200"}"#) >= 1.0);
    assert!(value(&s, r#"bridge_http_requests_total{method="POST",route="/v1/lines",status="201"}"#) >= 1.0);
    assert!(!text.contains(&line), "no series names a line id");
    assert!(value(&s, r#"bridge_http_request_duration_seconds_count{method="POST",route="/v1/messages/send"}"#) >= 1.0);
    assert!(has_series(&s, "bridge_http_request_duration_seconds_bucket"));
    // Appends and their batch sizes.
    assert!(value(&s, "bridge_append_duration_seconds_count") >= 1.0);
    assert!(value(&s, r#"bridge_append_batch_size_bucket{le="+Inf"}"#) >= 1.0);
    // Projection lag, in events and seconds, per projection.
    for projection in ["messages", "chats", "webhook_deliveries"] {
        assert!(value(&s, &format!(r#"bridge_projection_lag_events{{projection="{projection}"}}"#)) >= 0.0);
        assert!(value(&s, &format!(r#"bridge_projection_lag_seconds{{projection="{projection}"}}"#)) >= 0.0);
    }
    // The dispatcher: queue depth and send outcomes, per node.
    assert!(has_series(&s, "bridge_dispatch_queue_depth"));
    assert_eq!(value(&s, r#"bridge_dispatch_sends_total{node="node-m",outcome="sent"}"#), 1.0);
    // Lines by status.
    assert_eq!(value(&s, r#"bridge_lines{engine="sim",status="connected"}"#), 1.0);
    // Webhook deliveries by outcome, with latency.
    assert!(value(&s, r#"bridge_webhook_deliveries_total{outcome="delivered"}"#) >= 1.0);
    assert!(value(&s, r#"bridge_webhook_delivery_duration_seconds_count{outcome="delivered"}"#) >= 1.0);
    // The database pool, and the node itself.
    assert!(value(&s, r#"bridge_db_pool_connections{state="in_use"}"#) >= 0.0);
    assert!(value(&s, r#"bridge_db_pool_connections{state="idle"}"#) >= 0.0);
    assert_eq!(value(&s, "bridge_db_pool_max_connections"), f64::from(app.db.pool.options().get_max_connections()));
    assert_eq!(value(&s, "bridge_database_up"), 1.0);
    assert_eq!(value(&s, "bridge_node_heartbeat_fresh"), 1.0);
    assert!(has_series(&s, "bridge_node_info"));
    // Every sample's family is declared once, with its type.
    let declared: HashSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap()).collect();
    for series in s.keys() {
        let name = series.split('{').next().unwrap();
        let family =
            ["_bucket", "_sum", "_count"].iter().find_map(|suffix| name.strip_suffix(suffix)).filter(|f| declared.contains(f));
        assert!(declared.contains(name) || family.is_some(), "{name} has no # TYPE line");
    }

    // On the API's listener, /metrics is the operator's.
    let open = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(open.status(), StatusCode::UNAUTHORIZED);
    let with_key = app.http.get(app.url("/metrics")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(with_key.status(), StatusCode::UNAUTHORIZED, "a tenant key does not open the metrics");
    let operator = app.http.get(app.url("/metrics")).bearer_auth(OPERATOR_TOKEN).send().await.unwrap();
    assert_eq!(operator.status(), StatusCode::OK);
    assert!(operator.text().await.unwrap().contains("bridge_dispatch_sends_total"));
    app.shutdown().await;
}

/// Lines that `node` holds an unexpired lease of.
async fn lines_of(db: &TestDb, node: &str) -> i64 {
    count(db, &format!("SELECT count(*) FROM line_leases WHERE owner = '{node}' AND expires_at > now()")).await
}

#[tokio::test]
async fn dispatch_nodes_share_the_lines_and_a_draining_node_hands_its_lines_to_the_others() {
    let app = TestApp::spawn_with(|c| {
        quick(c);
        c.node_id = "node-a".into();
        c.operator_token = Some(Secret::new(OPERATOR_TOKEN));
    })
    .await;
    let (second, _) = node(&app.db, |c| {
        quick(c);
        c.node_id = "node-b".into();
        // Lines stay with their worker while idle: ownership, not idleness, moves them here.
        c.roles = vec!["dispatch".into()];
    })
    .await;
    let (_, _, key) = app.account("business").await;
    let mut lines = Vec::new();
    for i in 0..10 {
        lines.push(app.connected_line(&key, &format!("+3460000070{i}")).await);
    }
    // Both dispatchers must count each other before the sends, or the first would take every
    // line (each reads the list at its scans).
    app.eventually("both dispatchers see two live nodes", WAIT, || async {
        let text = app.http.get(app.url("/metrics")).bearer_auth(OPERATOR_TOKEN).send().await.unwrap().text().await.unwrap();
        let s = samples(&text);
        ["node-a", "node-b"].iter().all(|n| s.get(&format!(r#"bridge_dispatch_live_nodes{{node="{n}"}}"#)) == Some(&2.0))
    })
    .await;
    let mut accepted = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let (status, sent) =
            app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34699000700", "message": format!("m{i}")})).await;
        assert_eq!(status, StatusCode::OK, "{sent}");
        accepted.push(sent["message_id"].as_str().unwrap().to_owned());
    }
    app.eventually("every message is sent", WAIT, || async {
        count(&app.db, "SELECT count(*) FROM events WHERE event_type = 'message.sent'").await == 10
    })
    .await;
    let (a, b) = (lines_of(&app.db, "node-a").await, lines_of(&app.db, "node-b").await);
    assert_eq!(a + b, 10, "every line is held by one of the two");
    // Each line is held by the node the rendezvous hash names for it.
    crate::common::assert_lines_on_their_nodes(&app.db.pool, &lines, &["node-a", "node-b"]).await;
    let listed = app.cli(&["nodes", "list", "--json"]).await.json();
    let owned: BTreeMap<String, i64> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["node_id"].as_str().unwrap().into(), n["lines_owned"].as_i64().unwrap()))
        .collect();
    assert_eq!(owned, BTreeMap::from([("node-a".into(), a), ("node-b".into(), b)]), "nodes list shows who holds what");

    // node-b drains: its lines are released at once, and the next messages on them go out
    // through node-a.
    second.shutdown().await;
    assert_eq!(lines_of(&app.db, "node-b").await, 0, "a drained node holds no lease");
    for (i, line) in lines.iter().enumerate() {
        let (status, sent) =
            app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34699000700", "message": format!("n{i}")})).await;
        assert_eq!(status, StatusCode::OK, "{sent}");
    }
    app.eventually("every message is sent by the node that stayed", WAIT, || async {
        count(&app.db, "SELECT count(*) FROM events WHERE event_type = 'message.sent'").await == 20
    })
    .await;
    assert_eq!(lines_of(&app.db, "node-a").await, 10, "node-a serves every line now");
    assert_eq!(count(&app.db, "SELECT count(*) FROM sim_deliveries").await, 20, "each message reached the network once");
    app.shutdown().await;
}

#[tokio::test]
async fn json_logs_name_the_request_the_account_and_the_line() {
    let db = TestDb::new().await;
    let (account_id, key) = crate::common::account_on(&db.url, "pro").await;
    let (mut child, base, log) = crate::common::serve_process(&db, &[("BRIDGE_LOG_FORMAT", "json")]).await;
    let http = reqwest::Client::new();
    let created: Value =
        http.post(format!("{base}/v1/lines")).bearer_auth(&key).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let line = created["line"]["line_id"].as_str().unwrap().to_owned();
    let sent = http
        .post(format!("{base}/v1/messages/send"))
        .bearer_auth(&key)
        .header("x-request-id", "req-logs-1")
        .json(&json!({"line_id": line, "to": "+34699000111", "message": "hi"}))
        .send()
        .await
        .unwrap();
    // Not connected: a refusal is logged like any answer.
    assert_eq!(sent.status(), StatusCode::CONFLICT);
    let access = |text: &str| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "request" && l["span"]["request_id"] == "req-logs-1")
    };
    db.await_condition("the request's log line is written", WAIT, || async {
        access(&std::fs::read_to_string(&log).unwrap_or_default()).is_some()
    })
    .await;
    let entry = access(&std::fs::read_to_string(&log).unwrap()).unwrap();
    assert_eq!(entry["span"]["account_id"], account_id.as_str(), "{entry}");
    assert_eq!(entry["span"]["line_id"], line.as_str(), "{entry}");
    assert_eq!(entry["route"], "/v1/messages/send");
    assert_eq!(entry["status"], 409);
    assert_eq!(entry["level"], "INFO");
    let whole = std::fs::read_to_string(&log).unwrap();
    assert!(!whole.contains(&key), "the API key never appears in the logs");
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[tokio::test]
async fn a_node_sent_sigterm_drains_hands_its_lines_to_the_other_and_exits_cleanly() {
    let db = TestDb::new().await;
    let (_, key) = crate::common::account_on(&db.url, "business").await;
    let env = |node: &'static str| {
        vec![
            ("BRIDGE_NODE_ID", node),
            ("BRIDGE_LINE_LEASE_SECS", "3"),
            ("BRIDGE_LINE_SEND_INTERVAL_MS", "20"),
            ("BRIDGE_LINE_SEND_JITTER_MS", "0"),
            ("BRIDGE_SIM_DELIVERED_AFTER_MS", "20"),
        ]
    };
    let (mut a, _, _) = crate::common::serve_process(&db, &env("node-a")).await;
    let (mut b, base_b, _) = crate::common::serve_process(&db, &env("node-b")).await;
    let http = reqwest::Client::new();
    db.await_condition("both nodes are live", WAIT, || async {
        count(&db, "SELECT count(*) FROM nodes WHERE NOT draining AND heartbeat_at > now() - interval '3 seconds'").await == 2
    })
    .await;
    let lines = crate::common::sim_lines(std::slice::from_ref(&base_b), &key, 6, "+3460000097").await;
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let send_all = |round: &'static str| {
        let (http, key, lines, base, accepted) = (http.clone(), key.clone(), lines.clone(), base_b.clone(), accepted.clone());
        async move {
            for line in &lines {
                let r = http
                    .post(format!("{base}/v1/messages/send"))
                    .bearer_auth(&key)
                    .json(&json!({"line_id": line, "to": "+34699000970", "message": round}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    };
    // Wait until node-b's dispatcher counts node-a too (else it takes every line itself).
    db.await_condition("node-a holds lines", WAIT, || async {
        send_all("warm-up").await;
        count(&db, "SELECT count(*) FROM line_leases WHERE owner = 'node-a' AND expires_at > now()").await > 0
    })
    .await;

    // SIGTERM to node-a: it drains, releases its leases, leaves the node list and exits 0.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(a.id().unwrap() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(WAIT, a.wait()).await.expect("node-a exits after draining").unwrap();
    assert!(status.success(), "node-a exits cleanly: {status}");
    assert_eq!(count(&db, "SELECT count(*) FROM line_leases WHERE owner = 'node-a' AND expires_at > now()").await, 0);
    let listed = crate::common::cli(&db, &["nodes", "list", "--json"]).await.json();
    let ids: Vec<&str> = listed["nodes"].as_array().unwrap().iter().map(|n| n["node_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["node-b"], "{listed}");
    // Every queued message, and the next ones, go out through node-b.
    send_all("after").await;
    let accepted = accepted.load(std::sync::atomic::Ordering::SeqCst);
    db.await_condition("everything accepted is sent, the rest through node-b", WAIT, || async {
        count(&db, "SELECT count(*) FROM events WHERE event_type = 'message.sent'").await == accepted
    })
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM sim_deliveries").await, accepted, "each once");
    assert_eq!(count(&db, "SELECT count(*) FROM line_leases WHERE owner = 'node-b' AND expires_at > now()").await, 6);
    b.start_kill().unwrap();
    let _ = b.wait().await;
}

#[tokio::test]
async fn readiness_fails_while_a_projection_this_node_runs_is_too_far_behind_and_recovers() {
    let db = TestDb::new().await;
    // Something else holds the messages projection's lock (a stuck runner elsewhere): this
    // node's runner stands by, and the projection falls behind.
    let (class, key) = projections::runtime::advisory_lock("messages");
    let mut holder = db.pool.acquire().await.unwrap().detach();
    sqlx::query("SELECT pg_advisory_lock($1, $2)").bind(class).bind(key).execute(&mut holder).await.unwrap();
    let (server, base) = node(&db, |c| {
        c.ready_max_projection_lag_secs = 30;
        c.roles = vec!["projections".into()];
    })
    .await;
    // An event the projection has not applied, two minutes old.
    sqlx::query(
        "INSERT INTO events (tenant_id, stream_type, stream_id, stream_version, event_id, event_type, schema_version, payload, recorded_at) \
         VALUES ('acc_x', 'bench', 's1', 1, 'evt_lag_1', 'bench.e', 1, '{}', now() - interval '2 minutes')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = ready.json().await.unwrap();
    let why = body["checks"]["projections"].as_str().unwrap();
    assert!(why.starts_with("messages is 1") && why.ends_with(" s behind"), "{body}");

    // The lock is let go: the runner takes over, catches up, and the node is ready again.
    sqlx::query("SELECT pg_advisory_unlock($1, $2)").bind(class).bind(key).execute(&mut holder).await.unwrap();
    db.await_condition("the node is ready again", WAIT, || async {
        http.get(format!("{base}/readyz")).send().await.unwrap().status() == StatusCode::OK
    })
    .await;
    server.shutdown().await;
}
