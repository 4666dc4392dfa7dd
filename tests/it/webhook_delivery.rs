//! Webhook delivery end to end, to a real HTTP receiver: signed events for everything that
//! happens on a sim line, retries, disabling, the test endpoint and delivery log, secret
//! rotation, the webhook_events quota, and refusals of non-public addresses.

use crate::common::proxy_trap::ProxyTrap;
use crate::common::receiver::{Receiver, Reply, Request};
use crate::common::{redactions, TestApp};
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::Duration;
use wazion_bridge::config::Config;

const WAIT: Duration = Duration::from_secs(20);

/// Receivers run on 127.0.0.1, retries come after 50 ms, the sim network is quick.
fn fast(config: &mut Config) {
    config.allow_private_urls = true;
    config.webhooks.retry_schedule_ms = vec![50; 6];
    config.webhooks.retry_jitter = 0.0;
    config.line_send_interval_ms = 50;
    config.line_send_jitter_ms = 0;
    config.sim_delivered_after_ms = 20;
    config.sim_read_after_ms = 40;
}

/// An independent check of the published scheme: HMAC-SHA256 of the bytes received.
fn signed_with(secret: &str, request: &Request) -> bool {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&request.body);
    request.header("x-wazion-bridge-signature") == format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn webhook(app: &TestApp, key: &str, body: Value) -> (String, String) {
    let (status, created) = app.post(key, "/v1/webhooks", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    (created["webhook"]["id"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned())
}

async fn inbound(app: &TestApp, key: &str, line: &str, text: &str) {
    let (status, body) =
        app.post(key, &format!("/v1/sandbox/lines/{line}/inbound"), json!({"from": "+34655500001", "message": text})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn get_json(app: &TestApp, key: &str, path: &str) -> Value {
    let response = app.get(path, key).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

async fn deliveries(app: &TestApp, key: &str, webhook: &str) -> Vec<Value> {
    get_json(app, key, &format!("/v1/webhooks/{webhook}/deliveries")).await["deliveries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn every_event_of_a_sim_line_arrives_signed_in_the_logs_order() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(fast).await;
    let (_, _, key) = app.account("pro").await;
    let (_, secret) = webhook(&app, &key, json!({"url": receiver.url})).await;

    let line = app.connected_line(&key, "+34600000101").await;
    receiver.wait_for_body("line.status connected", WAIT, |b| b["event"] == "line.status").await;
    inbound(&app, &key, &line, "¿Tenéis mesa para dos?").await;
    receiver.wait_for_body("message.received", WAIT, |b| b["event"] == "message.received").await;
    let (status, sent) =
        app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34655500001", "message": "Sí, a las 21h"})).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    receiver.wait_for_body("message.status read", WAIT, |b| b["data"]["status"] == "read").await;
    app.post(&key, &format!("/v1/sandbox/lines/{line}/disconnect"), json!({})).await;
    let requests = receiver.wait_for(6, WAIT).await;

    for r in &requests {
        assert!(signed_with(&secret, r), "signature of {:?}", r.json());
        assert_eq!(r.header("content-type"), "application/json");
        assert_eq!(r.header("x-wazion-bridge-event"), r.json()["event"].as_str().unwrap());
        assert!(r.header("x-wazion-bridge-delivery").starts_with("dlv_"));
        assert!(r.header("x-wazion-bridge-timestamp").parse::<i64>().is_ok());
        assert_eq!(r.json()["line_id"], line.as_str());
    }
    let sent_id = sent["message_id"].as_str().unwrap();
    let about_sent: Vec<&Request> = requests.iter().filter(|r| r.json()["data"]["message_id"] == sent_id).collect();
    assert_eq!(about_sent.len(), 3, "message.sent, then delivered and read");
    let bodies: Vec<Value> = requests.iter().map(Request::json).collect();
    redactions().bind(|| insta::assert_json_snapshot!("webhook_events_of_a_sim_line", bodies));
    app.shutdown().await;
}

#[tokio::test]
async fn failed_attempts_are_retried_with_the_same_event_until_one_succeeds() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Hang, Reply::Status(502), Reply::Status(200)]);
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.webhooks.timeout_ms = 300;
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000102").await;
    let (id, secret) = webhook(&app, &key, json!({"url": receiver.url, "events": ["message.received"]})).await;
    inbound(&app, &key, &line, "hola").await;

    let requests = receiver.wait_for(4, WAIT).await;
    assert!(requests.iter().all(|r| signed_with(&secret, r) && r.body == requests[0].body), "the same bytes every time");
    assert!(requests.iter().all(|r| r.header("x-wazion-bridge-delivery") == requests[0].header("x-wazion-bridge-delivery")));
    app.eventually("the delivery is recorded as delivered", WAIT, || async {
        deliveries(&app, &key, &id).await[0]["status"] == "delivered"
    })
    .await;
    let log = deliveries(&app, &key, &id).await;
    assert_eq!(log[0]["attempts"], 4);
    let codes: Vec<Value> = log[0]["attempt_log"].as_array().unwrap().iter().map(|a| a["status_code"].clone()).collect();
    assert_eq!(codes, [json!(500), Value::Null, json!(502), json!(200)]);
    assert_eq!(log[0]["attempt_log"][1]["error"], "no answer within 300 ms");
    assert_eq!(log[0]["event_id"], requests[0].json()["id"]);
    app.shutdown().await;
}

#[tokio::test]
async fn retry_after_is_honoured_for_429_and_503() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::StatusWith(429, vec![("retry-after", "2".into())])]);
    let app = TestApp::spawn_with(fast).await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000103").await;
    let (id, _) = webhook(&app, &key, json!({"url": receiver.url, "events": ["message.received"]})).await;
    inbound(&app, &key, &line, "hola").await;
    receiver.wait_for(1, WAIT).await;
    app.eventually("the 429 is recorded", WAIT, || async { deliveries(&app, &key, &id).await[0]["status"] == "pending" }).await;
    let pending = &deliveries(&app, &key, &id).await[0];
    let started: chrono::DateTime<chrono::Utc> = pending["attempt_log"][0]["started_at"].as_str().unwrap().parse().unwrap();
    let next: chrono::DateTime<chrono::Utc> = pending["next_attempt_at"].as_str().unwrap().parse().unwrap();
    assert!(next - started >= chrono::Duration::seconds(2), "not before Retry-After: {started} → {next}");
    receiver.wait_for(2, WAIT).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_410_disables_the_webhook_and_says_why_until_it_is_enabled_again() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(410)]);
    let app = TestApp::spawn_with(fast).await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000104").await;
    let (id, _) = webhook(&app, &key, json!({"url": receiver.url, "events": ["message.received"]})).await;
    inbound(&app, &key, &line, "one").await;
    receiver.wait_for(1, WAIT).await;
    app.eventually("the webhook is disabled", WAIT, || async {
        get_json(&app, &key, &format!("/v1/webhooks/{id}")).await["webhook"]["enabled"] == false
    })
    .await;
    let hook = get_json(&app, &key, &format!("/v1/webhooks/{id}")).await;
    assert_eq!(hook["webhook"]["disabled_reason"], "the endpoint answered 410 Gone");
    assert_eq!(deliveries(&app, &key, &id).await[0]["status"], "failed");

    let r = app.http.patch(app.url(&format!("/v1/webhooks/{id}"))).bearer_auth(&key).json(&json!({"enabled": true})).send();
    let enabled: Value = r.await.unwrap().json().await.unwrap();
    assert_eq!(
        (enabled["webhook"]["enabled"].clone(), enabled["webhook"]["disabled_reason"].clone()),
        (json!(true), Value::Null)
    );
    inbound(&app, &key, &line, "two").await;
    receiver.wait_for_body("the next event", WAIT, |b| b["data"]["text"] == "two").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_webhook_that_keeps_failing_is_disabled_with_the_reason() {
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(500));
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.webhooks.retry_schedule_ms = vec![100; 50];
        c.webhooks.disable_after_ms = 300;
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000105").await;
    let (id, _) = webhook(&app, &key, json!({"url": receiver.url, "events": ["message.received"]})).await;
    inbound(&app, &key, &line, "anyone there?").await;
    app.eventually("the webhook is disabled", WAIT, || async {
        get_json(&app, &key, &format!("/v1/webhooks/{id}")).await["webhook"]["enabled"] == false
    })
    .await;
    let reason = get_json(&app, &key, &format!("/v1/webhooks/{id}")).await["webhook"]["disabled_reason"].clone();
    let reason = reason.as_str().unwrap();
    assert!(reason.starts_with("failing since ") && reason.ends_with("last error: HTTP 500 Internal Server Error"), "{reason}");
    assert!(receiver.requests().len() >= 3);
    app.shutdown().await;
}

#[tokio::test]
async fn the_test_endpoint_reports_the_receivers_answer_and_the_log_keeps_every_attempt() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(200), Reply::Status(500)]);
    let app = TestApp::spawn_with(fast).await;
    let (_, _, key) = app.account("pro").await;
    let (id, secret) = webhook(&app, &key, json!({"url": receiver.url, "description": "orders"})).await;

    let (status, ok) = app.post(&key, &format!("/v1/webhooks/{id}/test"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{ok}");
    assert_eq!((ok["delivered"].clone(), ok["status_code"].clone()), (json!(true), json!(200)));
    assert!(ok["latency_ms"].is_u64());
    let (_, failed) = app.post(&key, &format!("/v1/webhooks/{id}/test"), json!({})).await;
    assert_eq!((failed["delivered"].clone(), failed["status_code"].clone()), (json!(false), json!(500)));
    assert_eq!(failed["next_attempt_at"], Value::Null, "test events are not retried");

    let requests = receiver.wait_for(2, WAIT).await;
    assert!(signed_with(&secret, &requests[0]));
    assert_eq!(requests[0].json()["event"], "webhook.test");
    assert_eq!(requests[0].header("x-wazion-bridge-event"), "webhook.test");
    let log = get_json(&app, &key, &format!("/v1/webhooks/{id}/deliveries")).await;
    redactions().bind(|| {
        insta::assert_json_snapshot!("webhook_test_results", json!([ok, failed]));
        insta::assert_json_snapshot!("webhook_delivery_log", log);
    });

    // The failed one, sent again on demand.
    let failed_id = failed["delivery_id"].as_str().unwrap();
    let (status, again) = app.post(&key, &format!("/v1/webhooks/{id}/deliveries/{failed_id}/retry"), json!({})).await;
    assert_eq!((status, again["delivered"].clone()), (StatusCode::OK, json!(true)), "{again}");
    assert_eq!(receiver.requests()[2].body, requests[1].body);

    let page = get_json(&app, &key, &format!("/v1/webhooks/{id}/deliveries?limit=1")).await;
    assert_eq!(page["deliveries"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next = get_json(&app, &key, &format!("/v1/webhooks/{id}/deliveries?limit=1&cursor={cursor}")).await;
    assert_eq!(next["deliveries"][0]["status"], "delivered");
    assert_eq!(next["next_cursor"], Value::Null);
    let delivered = get_json(&app, &key, &format!("/v1/webhooks/{id}/deliveries?status=delivered")).await;
    assert_eq!(delivered["deliveries"].as_array().unwrap().len(), 2);

    let missing = format!("/v1/webhooks/{id}/deliveries/dlv_0000000000000000000000000a/retry");
    let (status, body) = app.post(&key, &missing, json!({})).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("delivery_not_found")));
    let (status, body) = app.post(&key, "/v1/webhooks/wh_0000000000000000000000000a/test", json!({})).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("webhook_not_found")));
    let bad = app.get(&format!("/v1/webhooks/{id}/deliveries?status=lost"), &key).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let (_, _, stranger) = app.account("pro").await;
    let theirs = app.get(&format!("/v1/webhooks/{id}/deliveries"), &stranger).await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    app.shutdown().await;
}

#[tokio::test]
async fn after_rotation_only_the_new_secret_signs() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(fast).await;
    let (_, _, key) = app.account("pro").await;
    let (id, old) = webhook(&app, &key, json!({"url": receiver.url})).await;
    app.post(&key, &format!("/v1/webhooks/{id}/test"), json!({})).await;
    let (_, rotated) = app.post(&key, &format!("/v1/webhooks/{id}/rotate-secret"), json!({})).await;
    let new = rotated["secret"].as_str().unwrap();
    app.post(&key, &format!("/v1/webhooks/{id}/test"), json!({})).await;
    let requests = receiver.wait_for(2, WAIT).await;
    assert!(signed_with(&old, &requests[0]));
    assert!(signed_with(new, &requests[1]));
    assert!(!signed_with(&old, &requests[1]), "the old secret no longer signs");
    app.shutdown().await;
}

#[tokio::test]
async fn past_the_webhook_events_quota_deliveries_are_held_then_released() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.plans.get_mut("free").unwrap().webhook_events = 2;
    })
    .await;
    let (account, _, key) = app.account("free").await;
    let line = app.connected_line(&key, "+34600000106").await;
    let (id, _) = webhook(&app, &key, json!({"url": receiver.url, "events": ["message.received"]})).await;
    for text in ["one", "two", "three"] {
        inbound(&app, &key, &line, text).await;
    }
    receiver.wait_for(2, WAIT).await;
    app.eventually("the third is held", WAIT, || async { deliveries(&app, &key, &id).await[0]["status"] == "held" }).await;
    let held = deliveries(&app, &key, &id).await[0].clone();
    assert!(held["last_error"].as_str().unwrap().contains("webhook_events quota"), "{held}");
    let usage = get_json(&app, &key, "/v1/usage").await;
    assert_eq!(webhook_events_used(&usage), 2, "{usage}");
    let (status, refused) =
        app.post(&key, &format!("/v1/webhooks/{id}/deliveries/{}/retry", held["id"].as_str().unwrap()), json!({})).await;
    assert_eq!((status, refused["metric"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("webhook_events")), "{refused}");
    assert_eq!(refused["error"], "quota_exceeded");
    assert_eq!(receiver.requests().len(), 2, "nothing past the quota went out");

    assert!(app.cli(&["accounts", "set-plan", &account, "starter"]).await.ok());
    let requests = receiver.wait_for(3, WAIT).await;
    let texts: Vec<Value> = requests.iter().map(|r| r.json()["data"]["text"].clone()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    app.eventually("usage counts three", WAIT, || async { webhook_events_used(&get_json(&app, &key, "/v1/usage").await) == 3 })
        .await;
    app.shutdown().await;
}

fn webhook_events_used(usage: &Value) -> i64 {
    usage["usage"]["webhook_events"]["used"].as_i64().unwrap_or_else(|| panic!("webhook_events in {usage}"))
}

#[tokio::test]
async fn every_class_of_non_public_address_is_refused_at_creation() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("pro").await;
    let refused = [
        "https://10.0.0.1/h",
        "https://172.16.5.4/h",
        "https://192.168.1.1/h",
        "https://127.0.0.2/h",
        "https://169.254.169.254/h",
        "https://100.64.0.1/h",
        "https://224.0.0.251/h",
        "https://0.0.0.0/h",
        "https://255.255.255.255/h",
        "https://198.18.0.1/h",
        "https://240.0.0.1/h",
        "https://[::1]/h",
        "https://[::]/h",
        "https://[fe80::1]/h",
        "https://[fc00::1]/h",
        "https://[ff02::1]/h",
        "https://[2001:db8::1]/h",
        "https://[::ffff:127.0.0.1]/h",
        "https://[64:ff9b::a00:1]/h",
        "https://[64:ff9b:1::808:808]/h",
        "https://[::ffff:0:a00:1]/h",
        "https://[2002:a00:1::1]/h",
    ];
    for url in refused {
        let (status, body) = app.post(&key, "/v1/webhooks", json!({"url": url})).await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("url")), "{url}: {body}");
        assert!(body["message"].as_str().unwrap().ends_with("is not a public address."), "{url}: {body}");
    }
    // A host name is refused for what it resolves to, which is never said.
    let (status, body) = app.post(&key, "/v1/webhooks", json!({"url": "https://localhost/h"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["message"], "`url` is refused: localhost resolves to a non-public address.");
    let listed = get_json(&app, &key, "/v1/webhooks").await;
    assert_eq!(listed["webhooks"], json!([]));
    app.shutdown().await;
}

#[tokio::test]
async fn a_non_public_address_is_refused_again_at_delivery_literal_or_by_name() {
    let receiver = Receiver::start().await;
    let mut app = TestApp::spawn_with(fast).await;
    let (_, _, key) = app.account("pro").await;
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    let (literal, _) = webhook(&app, &key, json!({"url": receiver.url})).await;
    let (named, _) = webhook(&app, &key, json!({"url": by_name})).await;
    // The operator stops allowing private addresses: the webhooks already registered stay
    // registered, but nothing is sent to them.
    app.stop_server().await;
    app.start_server(|c| {
        fast(c);
        c.allow_private_urls = false;
    })
    .await;
    // A literal address may be echoed; what a name resolved to is never said, in the answer or in
    // the delivery log.
    for (id, expected) in
        [(literal, "refused: 127.0.0.1 is not a public address"), (named, "refused: localhost resolves to a non-public address")]
    {
        let (status, result) = app.post(&key, &format!("/v1/webhooks/{id}/test"), json!({})).await;
        assert_eq!((status, result["delivered"].clone()), (StatusCode::OK, json!(false)), "{result}");
        assert_eq!(result["error"], expected);
        let log = deliveries(&app, &key, &id).await;
        assert_eq!(log[0]["last_error"], expected);
        assert_eq!(log[0]["attempt_log"][0]["error"], expected);
    }
    assert!(receiver.requests().is_empty(), "nothing reached the private address");
    app.shutdown().await;
}

#[tokio::test]
async fn deliveries_never_go_through_a_proxy_from_the_environment() {
    let receiver = Receiver::start().await;
    let proxy = ProxyTrap::start().await;
    let mut app = TestApp::spawn().await;
    let (_, _, key) = app.account("pro").await;
    app.stop_server().await;
    // `bridge serve` as a process of its own, with every proxy variable pointing at the trap.
    let mut env = vec![("BRIDGE_ALLOW_PRIVATE_URLS", "true"), ("BRIDGE_MASTER_KEY", crate::common::TEST_MASTER_KEY)];
    env.extend(proxy.env());
    let (mut server, base, _) = crate::common::serve_process(&app.db, &env).await;
    app.base = base;
    let (id, secret) = webhook(&app, &key, json!({"url": receiver.url})).await;

    let (status, result) = app.post(&key, &format!("/v1/webhooks/{id}/test"), json!({})).await;
    assert_eq!((status, result["delivered"].clone()), (StatusCode::OK, json!(true)), "{result}");
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "the receiver was called directly");
    assert!(signed_with(&secret, &requests[0]));
    assert_eq!(proxy.connections(), 0, "the proxy was never used");
    server.start_kill().unwrap();
}

#[tokio::test]
async fn a_worker_killed_between_sending_and_recording_delivers_again_with_the_same_id_and_loses_nothing() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Hang]);
    let mut app = TestApp::spawn_with(fast).await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000107").await;
    let (id, secret) = webhook(&app, &key, json!({"url": receiver.url, "events": ["message.received"]})).await;
    app.stop_server().await;

    // `bridge serve` as a process of its own, killed while the receiver holds the first request.
    let master_key = "7e".repeat(32);
    let env = [("BRIDGE_ALLOW_PRIVATE_URLS", "true"), ("BRIDGE_MASTER_KEY", master_key.as_str())];
    let (mut first, base, _) = crate::common::serve_process(&app.db, &env).await;
    for text in ["one", "two", "three"] {
        let r = app.http.post(format!("{base}/v1/sandbox/lines/{line}/inbound")).bearer_auth(&key);
        let r = r.json(&json!({"from": "+34655500001", "message": text})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    receiver.wait_for(1, WAIT).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();

    let (mut second, second_base, _) = crate::common::serve_process(&app.db, &env).await;
    app.base = second_base;
    let requests = receiver.wait_for(4, WAIT).await;
    let ids: Vec<Value> = requests.iter().map(|r| r.json()["id"].clone()).collect();
    assert_eq!(ids[0], ids[1], "the interrupted delivery again, with the same event id");
    assert_eq!(requests[0].header("x-wazion-bridge-delivery"), requests[1].header("x-wazion-bridge-delivery"));
    let texts: Vec<Value> = requests[1..].iter().map(|r| r.json()["data"]["text"].clone()).collect();
    assert_eq!(texts, ["one", "two", "three"], "then the rest, in order");
    assert!(requests.iter().all(|r| signed_with(&secret, r)));

    app.eventually("every delivery is recorded", WAIT, || async {
        let log = deliveries(&app, &key, &id).await;
        log.len() == 3 && log.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    let log = deliveries(&app, &key, &id).await;
    let interrupted = log.iter().find(|d| d["event_id"] == ids[0]).unwrap();
    assert_eq!(interrupted["attempts"], 2);
    assert_eq!(interrupted["attempt_log"].as_array().unwrap().len(), 1, "the killed attempt left no outcome");
    let charged: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'webhook_delivery.charged'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(charged, 3, "each event counted once against the quota");
    second.start_kill().unwrap();
}

#[tokio::test]
async fn two_nodes_share_the_deliveries_without_sending_any_twice_and_keep_each_lines_order() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(fast).await;
    let mut config = crate::common::test_config();
    fast(&mut config);
    config.node_id = "node-b".into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_b = wazion_bridge::server::start(config, app.db.pool.clone(), listener).await.unwrap();
    let (_, _, key) = app.account("pro").await;
    let mut lines = Vec::new();
    for phone in ["+34600000121", "+34600000122", "+34600000123"] {
        lines.push(app.connected_line(&key, phone).await);
    }
    webhook(&app, &key, json!({"url": receiver.url, "events": ["message.received"]})).await;
    const PER_LINE: usize = 8;
    for i in 0..PER_LINE {
        for line in &lines {
            inbound(&app, &key, line, &format!("{i}")).await;
        }
    }
    let total = PER_LINE * lines.len();
    receiver.wait_for(total, WAIT).await;
    app.eventually("every delivery is recorded", WAIT, || async {
        let delivered: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        delivered == total as i64
    })
    .await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), total, "no event was sent twice");
    for line in &lines {
        let texts: Vec<String> = requests
            .iter()
            .map(Request::json)
            .filter(|b| b["line_id"] == line.as_str())
            .map(|b| b["data"]["text"].as_str().unwrap().to_owned())
            .collect();
        let expected: Vec<String> = (0..PER_LINE).map(|i| i.to_string()).collect();
        assert_eq!(texts, expected, "the line's events in the log's order");
    }
    node_b.shutdown().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_delivery_waiting_for_its_retry_does_not_hold_back_the_lines_next_events() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500)]);
    let app = TestApp::spawn_with(|c| {
        fast(c);
        // The retry is not due during the test: it is sent by hand at the end.
        c.webhooks.retry_schedule_ms = vec![3_600_000];
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000108").await;
    let (id, _) = webhook(&app, &key, json!({"url": receiver.url, "events": ["message.received"]})).await;
    inbound(&app, &key, &line, "first").await;
    receiver.wait_for(1, WAIT).await;
    inbound(&app, &key, &line, "second").await;
    let requests = receiver.wait_for(2, WAIT).await;
    let texts: Vec<Value> = requests.iter().map(|r| r.json()["data"]["text"].clone()).collect();
    assert_eq!(texts, ["first", "second"], "the second went out while the first waited for its retry");
    app.eventually("the second is recorded delivered", WAIT, || async {
        deliveries(&app, &key, &id).await.iter().any(|d| d["status"] == "delivered")
    })
    .await;
    let log = deliveries(&app, &key, &id).await;
    let first = log.iter().find(|d| d["status"] == "pending").expect("the first still waits for its retry");
    let (status, retried) =
        app.post(&key, &format!("/v1/webhooks/{id}/deliveries/{}/retry", first["id"].as_str().unwrap()), json!({})).await;
    assert_eq!((status, retried["delivered"].as_bool()), (StatusCode::OK, Some(true)), "{retried}");
    assert_eq!(receiver.requests()[2].json()["data"]["text"], "first");
    app.shutdown().await;
}

#[tokio::test]
async fn a_test_event_to_a_webhook_of_no_line_names_a_line_of_the_account_when_it_has_one() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(fast).await;
    let (_, _, key) = app.account("pro").await;
    let (id, _) = webhook(&app, &key, json!({"url": receiver.url, "events": ["message.received"]})).await;
    let (status, _) = app.post(&key, &format!("/v1/webhooks/{id}/test"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, other) = app.account("pro").await;
    app.connected_line(&other, "+34600000109").await;
    let line = app.connected_line(&key, "+34600000110").await;
    let (status, _) = app.post(&key, &format!("/v1/webhooks/{id}/test"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let requests = receiver.wait_for(2, WAIT).await;
    assert_eq!(requests[0].json()["line_id"], Value::Null, "an account with no line");
    let body = requests[1].json();
    assert_eq!(body["line_id"], line.as_str(), "a line of this account, never another's: {body}");
    redactions().bind(|| insta::assert_json_snapshot!("webhook_test_event", body));
    app.shutdown().await;
}

#[tokio::test]
async fn a_failure_stops_a_window_and_what_it_held_back_goes_out_in_order_uncounted() {
    let receiver = Receiver::start().await;
    // The first event's attempt hangs until the rest are in the log, so the lane takes them up
    // in one window; in it, the third event's first attempt fails. Retries wait long enough not
    // to come between.
    receiver.script([Reply::Hang, Reply::Status(200), Reply::Status(500)]);
    let app = TestApp::spawn_with(|c| {
        fast(c);
        c.webhooks.timeout_ms = 1_000;
        c.webhooks.retry_schedule_ms = vec![1_500; 6];
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000131").await;
    let (id, _) = webhook(&app, &key, json!({"url": receiver.url, "events": ["message.received"]})).await;
    inbound(&app, &key, &line, "0").await;
    receiver.wait_for(1, WAIT).await;
    for text in ["1", "2", "3", "4", "5"] {
        inbound(&app, &key, &line, text).await;
    }
    app.eventually("every delivery is delivered", WAIT, || async {
        let log = deliveries(&app, &key, &id).await;
        log.len() == 6 && log.iter().all(|d| d["status"] == "delivered")
    })
    .await;

    let texts: Vec<String> = receiver.requests().iter().map(|r| r.json()["data"]["text"].as_str().unwrap().to_owned()).collect();
    let mut first_arrivals: Vec<&str> = Vec::new();
    for t in &texts {
        if !first_arrivals.contains(&t.as_str()) {
            first_arrivals.push(t);
        }
    }
    assert_eq!(first_arrivals, ["0", "1", "2", "3", "4", "5"], "each event first arrived in the log's order: {texts:?}");
    let times = |t: &str| texts.iter().filter(|x| *x == t).count();
    assert_eq!((times("0"), times("2")), (2, 2), "the two failures were retried: {texts:?}");
    assert!(["1", "3", "4", "5"].iter().all(|t| times(t) == 1), "the rest went once each: {texts:?}");

    for d in deliveries(&app, &key, &id).await {
        let attempts = d["attempts"].as_i64().unwrap();
        assert_eq!(attempts, d["attempt_log"].as_array().unwrap().len() as i64, "an attempt counted is an attempt made: {d}");
    }
    let usage = get_json(&app, &key, "/v1/usage").await;
    assert_eq!(webhook_events_used(&usage), 6, "each event counted once: {usage}");
    app.shutdown().await;
}

/// The webhook deliveries and message data the projector makes from the whole log, folded in
/// `chunk`-sized batches, in a transaction that is rolled back.
async fn projected(app: &TestApp, chunk: usize) -> Vec<(String, String, String, String, String)> {
    use projections::Projection;
    let mut tx = app.db.pool.begin().await.unwrap();
    for table in ["webhook_deliveries", "webhook_message_data", "webhook_subscriptions", "webhook_line_phones"] {
        sqlx::query(&format!("DELETE FROM {table}")).execute(&mut *tx).await.unwrap();
    }
    let events = projections::log::read_after(&mut *tx, projections::LogPosition::START, 100_000).await.unwrap();
    let projector = projections::webhook_deliveries::WebhookDeliveries::default();
    for batch in events.chunks(chunk) {
        projector.apply_batch(&mut tx, batch).await.unwrap();
    }
    let rows = made(&mut tx).await;
    tx.rollback().await.unwrap();
    rows
}

async fn made(conn: &mut sqlx::PgConnection) -> Vec<(String, String, String, String, String)> {
    sqlx::query_as("SELECT webhook_id, event_id, event_type, line_key, body FROM webhook_deliveries ORDER BY seq")
        .fetch_all(&mut *conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_projector_makes_the_same_deliveries_whether_it_folds_the_log_in_batches_or_one_event_at_a_time() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(fast).await;
    let (_, _, key) = app.account("pro").await;
    webhook(&app, &key, json!({"url": receiver.url})).await;
    let line = app.connected_line(&key, "+34600000132").await;
    webhook(&app, &key, json!({"url": receiver.url, "events": ["message.status"], "line_id": line})).await;
    inbound(&app, &key, &line, "¿Abrís el domingo?").await;
    let (status, sent) =
        app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34655500001", "message": "Sí, de 9 a 14"})).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    let sent_id = sent["message_id"].as_str().unwrap();
    // What is quoted must have gone out first.
    receiver.wait_for_body("message.sent", WAIT, |b| b["event"] == "message.sent" && b["data"]["message_id"] == sent_id).await;
    let (status, reply) = app
        .post(
            &key,
            "/v1/messages/reply",
            json!({"line_id": line, "to": "+34655500001", "message": "¿Reservo?", "quoted_message_id": sent_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, body) = app
        .post(
            &key,
            &format!("/v1/sandbox/lines/{line}/inbound"),
            json!({"from": "+34655500001", "message": "Sí, gracias", "quoted_message_id": sent_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply_id = reply["message_id"].as_str().unwrap();
    receiver
        .wait_for_body("the reply read", WAIT, |b| b["data"]["message_id"] == reply_id && b["data"]["status"] == "read")
        .await;
    app.post(&key, &format!("/v1/sandbox/lines/{line}/disconnect"), json!({})).await;
    receiver
        .wait_for_body("the line disconnected", WAIT, |b| b["event"] == "line.status" && b["data"]["status"] != "connected")
        .await;

    let live = made(&mut app.db.pool.acquire().await.unwrap()).await;
    let in_one_batch = projected(&app, 100_000).await;
    let one_by_one = projected(&app, 1).await;
    assert!(live.len() >= 12, "every kind of event made deliveries: {}", live.len());
    let bodies: Vec<Value> = live.iter().map(|d| serde_json::from_str(&d.4).unwrap()).collect();
    assert!(bodies.iter().any(|b| b["data"]["quoted_whatsapp_id"].is_string()), "the reply names what it quotes");
    assert!(
        bodies.iter().any(|b| b["event"] == "message.received" && b["data"]["quoted_message_id"] == sent_id),
        "the inbound quote is found by its WhatsApp id"
    );
    assert_eq!(in_one_batch, one_by_one, "one batch or one event at a time");
    assert_eq!(in_one_batch, live, "and as the running projector made them");
    app.shutdown().await;
}
