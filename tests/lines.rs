//! Lines over REST on the sim engine: creation against the plan's limit, QR codes, linking by a
//! simulated scan, disconnection, logout, tenant isolation and bad input.

mod common;

use common::{redactions, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap()
}

async fn create_line(app: &TestApp, key: &str) -> String {
    let (status, body) = app.post(key, "/v1/lines", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["line"]["line_id"].as_str().unwrap().to_owned()
}

fn line_redactions() -> insta::Settings {
    let mut s = redactions();
    s.add_filter(r"line_[0-9a-z]{26}", "line_[id]");
    s
}

#[tokio::test]
async fn a_line_is_created_shows_a_qr_code_and_connects_when_scanned() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("pro").await;

    let (status, created) = app.post(&key, "/api/bridge/v1/lines", json!({"engine": "sim"})).await;
    assert_eq!(status, StatusCode::CREATED);
    line_redactions().bind(|| insta::assert_json_snapshot!("line_created", created));
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
    line_redactions().bind(|| insta::assert_json_snapshot!("line_connected", detail));
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
