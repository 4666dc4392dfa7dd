//! Lines over REST on the sim engine: creation against the plan's limit, QR codes, linking by a
//! simulated scan, disconnection, logout, tenant isolation and bad input.

use crate::common::{redactions, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap()
}

async fn create_line(app: &TestApp, key: &str) -> String {
    let (status, body) = app.post(key, "/v1/lines", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["line"]["line_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_line_is_created_shows_a_qr_code_and_connects_when_scanned() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("pro").await;

    let (status, created) = app.post(&key, "/api/bridge/v1/lines", json!({"engine": "sim"})).await;
    assert_eq!(status, StatusCode::CREATED);
    redactions().bind(|| insta::assert_json_snapshot!("line_created", created));
    let line_id = created["line"]["line_id"].as_str().unwrap().to_owned();

    let qr: Value = app.get(&format!("/v1/lines/{line_id}/qr"), &key).await.json().await.unwrap();
    assert!(qr["qr"].as_str().unwrap().starts_with("2@sim"), "{qr}");
    let svg = app.get(&format!("/v1/lines/{line_id}/qr?format=svg"), &key).await;
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(svg.text().await.unwrap().contains("<svg"));

    let (status, scanned) =
        app.post(&key, &format!("/v1/sandbox/lines/{line_id}/scan"), json!({"phone": "+34 600 000 001"})).await;
    assert_eq!(status, StatusCode::OK, "{scanned}");
    assert_eq!(scanned["line"]["status"], "connected");
    assert_eq!(scanned["line"]["phone"], "+34600000001");

    let detail: Value = app.get(&format!("/v1/lines/{line_id}"), &key).await.json().await.unwrap();
    redactions().bind(|| insta::assert_json_snapshot!("line_connected", detail));
    let listed: Value = app.get("/v1/lines", &key).await.json().await.unwrap();
    assert_eq!(listed["lines"].as_array().unwrap().len(), 1);
    assert_eq!(listed["lines"][0], detail["line"]);

    // Linked: no QR code any more.
    let no_qr = app.get(&format!("/v1/lines/{line_id}/qr"), &key).await;
    assert_eq!(no_qr.status(), StatusCode::CONFLICT);
    let usage: Value = app.get("/v1/usage", &key).await.json().await.unwrap();
    assert_eq!(usage["usage"]["lines"]["used"], 1);

    let types: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM events WHERE stream_type = 'line' ORDER BY global_position")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(types, ["line.created", "line.connected"]);
    app.shutdown().await;
}

#[tokio::test]
async fn disconnect_and_logout_are_state_changes_with_published_errors() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("free").await;
    let line_id = create_line(&app, &key).await;
    let disconnect = format!("/v1/sandbox/lines/{line_id}/disconnect");

    let (status, body) = app.post(&key, &disconnect, json!({})).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::CONFLICT, Some("line_not_connected")));
    app.post(&key, &format!("/v1/sandbox/lines/{line_id}/scan"), json!({"phone": "+34600000001"})).await;
    let (status, body) = app.post(&key, &disconnect, json!({"reason": "phone offline"})).await;
    assert_eq!((status, body["line"]["status"].as_str()), (StatusCode::OK, Some("disconnected")));

    // Another phone cannot take over a linked line.
    let (status, body) = app.post(&key, &format!("/v1/sandbox/lines/{line_id}/scan"), json!({"phone": "+34600000002"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let out = app.http.delete(app.url(&format!("/v1/lines/{line_id}"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    assert_eq!(out.json::<Value>().await.unwrap()["line"]["status"], "logged_out");
    // A logged-out line no longer counts: the free plan's single slot is free again.
    create_line(&app, &key).await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_line_limit_is_enforced_with_details_and_nothing_appended() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("free").await;
    create_line(&app, &key).await;
    let before = event_count(&app).await;

    let (status, body) = app.post(&key, "/v1/lines", json!({})).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    insta::assert_json_snapshot!("line_limit_reached", body);
    assert_eq!(event_count(&app).await, before);
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_creations_never_exceed_the_line_limit() {
    let app = TestApp::spawn().await;
    let (account_id, _, key) = app.account("pro").await; // 3 lines
    let attempts = (0..12).map(|_| {
        let (http, url, key) = (app.http.clone(), app.url("/v1/lines"), key.clone());
        tokio::spawn(async move { http.post(url).bearer_auth(key).json(&json!({})).send().await.unwrap().status() })
    });
    let mut statuses = Vec::new();
    for a in attempts.collect::<Vec<_>>() {
        statuses.push(a.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 3, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::TOO_MANY_REQUESTS));
    let lines: i64 = sqlx::query_scalar("SELECT count(*) FROM lines WHERE account_id = $1")
        .bind(&account_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(lines, 3);
    app.shutdown().await;
}

#[tokio::test]
async fn another_accounts_line_does_not_exist_for_you() {
    let app = TestApp::spawn().await;
    let (_, _, mine) = app.account("pro").await;
    let (_, _, theirs) = app.account("pro").await;
    let line_id = create_line(&app, &theirs).await;
    let before = event_count(&app).await;

    for path in [format!("/v1/lines/{line_id}"), format!("/v1/lines/{line_id}/qr"), "/v1/lines/line_bogus".to_owned()] {
        let r = app.get(&path, &mine).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "line_not_found");
        insta::assert_json_snapshot!("line_not_found", body);
    }
    let (status, _) = app.post(&mine, &format!("/v1/sandbox/lines/{line_id}/scan"), json!({"phone": "+34600000009"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let out = app.http.delete(app.url(&format!("/v1/lines/{line_id}"))).bearer_auth(&mine).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::NOT_FOUND);
    let listed: Value = app.get("/v1/lines", &mine).await.json().await.unwrap();
    assert_eq!(listed["lines"], json!([]));
    assert_eq!(event_count(&app).await, before, "nothing was appended for the other tenant's line");
    app.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_a_validation_error_that_changes_nothing() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("pro").await;
    let line_id = create_line(&app, &key).await;
    let scan = app.url(&format!("/v1/sandbox/lines/{line_id}/scan"));
    let before = event_count(&app).await;

    let cases: Vec<(&str, reqwest::RequestBuilder)> = vec![
        ("malformed_json", app.http.post(&scan).header("content-type", "application/json").body("{\"phone\": ")),
        ("wrong_type", app.http.post(&scan).json(&json!({"phone": 34600000001_u64}))),
        ("missing_field", app.http.post(&scan).json(&json!({}))),
        ("unknown_field", app.http.post(&scan).json(&json!({"phone": "+34600000001", "pin": 1}))),
        ("not_json", app.http.post(&scan).header("content-type", "text/plain").body("phone=+34600000001")),
        ("invalid_phone", app.http.post(&scan).json(&json!({"phone": "600000001"}))),
        ("unknown_engine", app.http.post(app.url("/v1/lines")).json(&json!({"engine": "whatsapp-web-9000"}))),
    ];
    for (name, request) in cases {
        let response = request.bearer_auth(&key).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "validation_error", "{name}");
        insta::assert_json_snapshot!(format!("validation_{name}"), body);
    }

    let huge = json!({"phone": "+34600000001", "padding": "x".repeat(300 * 1024)});
    let response = app.http.post(&scan).bearer_auth(&key).json(&huge).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(response.headers().contains_key("x-request-id"));
    insta::assert_json_snapshot!("validation_body_too_large", response.json::<Value>().await.unwrap());

    assert_eq!(event_count(&app).await, before, "no rejected request appended anything");
    let line: Value = app.get(&format!("/v1/lines/{line_id}"), &key).await.json().await.unwrap();
    assert_eq!(line["line"]["status"], "pending_qr");
    app.shutdown().await;
}

/// Receivers on loopback, a quick sim network.
fn quick(c: &mut wazion_bridge::config::Config) {
    c.allow_private_urls = true;
    c.line_send_interval_ms = 20;
    c.line_send_jitter_ms = 0;
    c.sim_delivered_after_ms = 20;
    c.sim_read_after_ms = 40;
}

#[tokio::test]
async fn a_number_linked_to_a_line_is_that_lines_alone_on_the_simulated_network() {
    use crate::common::receiver::Receiver;
    let app = TestApp::spawn_with(quick).await;
    let (_, _, owner) = app.account("pro").await;
    let (_, _, intruder) = app.account("pro").await;
    let (owners_hooks, intruders_hooks) = (Receiver::start().await, Receiver::start().await);
    for (key, receiver) in [(&owner, &owners_hooks), (&intruder, &intruders_hooks)] {
        let (status, body) = app.post(key, "/v1/webhooks", json!({"url": receiver.url, "events": ["message.received"]})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let owners_line = app.connected_line(&owner, "+34600000777").await;

    // Another account scans the number: refused, and nothing is written.
    let intruders_line = create_line(&app, &intruder).await;
    let before = event_count(&app).await;
    let scan = format!("/v1/sandbox/lines/{intruders_line}/scan");
    let (status, refused) = app.post(&intruder, &scan, json!({"phone": "+34 600 000 777"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    insta::assert_json_snapshot!("sim_number_in_use", refused);
    assert_eq!(event_count(&app).await, before, "a refused scan appends nothing");
    let detail: Value = app.get(&format!("/v1/lines/{intruders_line}"), &intruder).await.json().await.unwrap();
    assert_eq!(detail["line"]["status"], "pending_qr");
    // Nor can a second line of the same account take it.
    let second = create_line(&app, &owner).await;
    let (status, _) = app.post(&owner, &format!("/v1/sandbox/lines/{second}/scan"), json!({"phone": "+34600000777"})).await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A message to that number reaches the owner's line and the owner's webhook only.
    let sender = app.connected_line(&intruder, "+34600000778").await;
    let (status, _) =
        app.post(&intruder, "/v1/messages/send", json!({"line_id": sender, "to": "+34600000777", "message": "hola"})).await;
    assert_eq!(status, StatusCode::OK);
    let arrived =
        owners_hooks.wait_for_body("message.received", Duration::from_secs(20), |b| b["event"] == "message.received").await;
    assert_eq!(arrived.json()["line_id"], owners_line.as_str());
    let on_owner: Value =
        app.get(&format!("/v1/messages?line_id={owners_line}&phone=%2B34600000778"), &owner).await.json().await.unwrap();
    assert_eq!(on_owner["messages"][0]["text"], "hola");
    let received: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'message.received'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(received, 1, "stored on one line only");
    assert!(intruders_hooks.requests().is_empty(), "the intruder's webhook heard nothing");

    // Once the owner logs the line out, the number is free again.
    let logout = app.http.delete(app.url(&format!("/v1/lines/{owners_line}"))).bearer_auth(&owner).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    let (status, body) = app.post(&intruder, &scan, json!({"phone": "+34600000777"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn concurrent_scans_of_one_number_link_it_once() {
    let app = TestApp::spawn().await;
    let mut scans = Vec::new();
    for _ in 0..6 {
        let (_, _, key) = app.account("pro").await;
        let line = create_line(&app, &key).await;
        scans.push((key, line));
    }
    let shared = &app;
    let answers = futures_util::future::join_all(scans.iter().map(|(key, line)| async move {
        shared.post(key, &format!("/v1/sandbox/lines/{line}/scan"), json!({"phone": "+34600000779"})).await
    }))
    .await;
    let won = answers.iter().filter(|(status, _)| *status == StatusCode::OK).count();
    let refused =
        answers.iter().filter(|(status, body)| *status == StatusCode::CONFLICT && body["error"] == "line_conflict").count();
    assert_eq!((won, refused), (1, 5), "{answers:?}");
    let connected: i64 =
        sqlx::query_scalar("SELECT count(*) FROM lines WHERE phone = '+34600000779'").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(connected, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn receipts_do_not_tell_whether_a_number_is_another_tenants_line() {
    let app = TestApp::spawn_with(quick).await;
    let (_, _, theirs) = app.account("pro").await;
    let (_, _, mine) = app.account("pro").await;
    app.connected_line(&theirs, "+34600000781").await;
    let line = app.connected_line(&mine, "+34600000782").await;
    for to in ["+34600000781", "+34699000781"] {
        let (status, _) = app.post(&mine, "/v1/messages/send", json!({"line_id": line, "to": to, "message": "hola"})).await;
        assert_eq!(status, StatusCode::OK);
    }
    // Both are read on the simulated schedule: the one to another tenant's line as much as the one
    // to an ordinary simulated phone (that tenant never marked anything read).
    app.eventually("both messages are read", Duration::from_secs(20), || async {
        let statuses: Vec<String> =
            sqlx::query_scalar("SELECT status FROM rm_messages WHERE direction = 'outbound' AND line_id = $1")
                .bind(&line)
                .fetch_all(&app.db.pool)
                .await
                .unwrap();
        statuses == ["read", "read"]
    })
    .await;
    app.shutdown().await;
}
