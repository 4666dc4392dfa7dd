//! Hostile input: NUL characters in text, malformed paths, oversized bodies and bad operator
//! cursors are refused with `validation_error` in the flat envelope, never a 500 or plain text,
//! and a refused request appends nothing.

use crate::common::mcp_client;
use crate::common::{redactions, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

const OPERATOR_TOKEN: &str = "operator-token-for-the-hostile-input-tests";

async fn app() -> TestApp {
    TestApp::spawn_with(|c| c.operator_token = Some(wazion_bridge::config::Secret::new(OPERATOR_TOKEN))).await
}

async fn count_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap()
}

/// A JSON body as sent on the wire: `json!` turns a NUL into the escape `\u0000`.
fn with_nul(text: &str) -> String {
    format!("{text}\u{0}")
}

async fn refused_with_nul(app: &TestApp, key: &str, path: &str, body: Value, field: &str) {
    let before = count_events(app).await;
    let raw = serde_json::to_string(&body).unwrap();
    assert!(raw.contains(r"\u0000"), "the body carries the escape: {raw}");
    let (status, answer) = app.post(key, path, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
    assert_eq!(answer["error"], "validation_error", "{answer}");
    assert_eq!(answer["field"], field, "{answer}");
    assert_eq!(count_events(app).await, before, "{path}: a refused request appends nothing");
}

#[tokio::test]
async fn a_nul_character_in_a_sent_message_is_a_validation_error_and_appends_nothing() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000901").await;
    let body = json!({"line_id": line, "to": "+34699000901", "message": with_nul("a")});
    refused_with_nul(&app, &key, "/v1/messages/send", body.clone(), "message").await;
    let (_, answer) = app.post(&key, "/v1/messages/send", body).await;
    redactions().bind(|| insta::assert_json_snapshot!("nul_in_message", answer));

    let media =
        json!({"line_id": line, "to": "+34699000901", "media_url": "https://93.184.216.34/a.jpg", "caption": with_nul("c")});
    refused_with_nul(&app, &key, "/v1/messages/send-media", media, "caption").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_nul_character_in_a_webhook_description_is_a_validation_error_and_appends_nothing() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let body = json!({"url": "https://93.184.216.34/hooks", "description": with_nul("orders")});
    refused_with_nul(&app, &key, "/v1/webhooks", body, "description").await;
    let body = json!({"url": "https://93.184.216.34/hooks", "events": ["message.received", with_nul("line.status")]});
    refused_with_nul(&app, &key, "/v1/webhooks", body, "events[1]").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_nul_character_in_sandbox_input_is_a_validation_error_and_appends_nothing() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000902").await;
    let inbound = format!("/v1/sandbox/lines/{line}/inbound");
    refused_with_nul(&app, &key, &inbound, json!({"from": "+34699000902", "message": with_nul("hi")}), "message").await;
    // The disconnect body is optional and read as raw bytes: the same rule.
    let disconnect = format!("/v1/sandbox/lines/{line}/disconnect");
    refused_with_nul(&app, &key, &disconnect, json!({"reason": with_nul("gone")}), "reason").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_nul_character_in_an_mcp_tool_argument_is_a_validation_error_and_appends_nothing() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000903").await;
    let client = mcp_client::connect(&app, &key).await;
    let before = count_events(&app).await;
    let args = json!({"line_id": line, "to": "+34699000903", "message": with_nul("a")});
    let result = mcp_client::call(&client, "bridge_send_message", args).await;
    assert_eq!(result.is_error, Some(true), "{result:?}");
    let body = mcp_client::body(&result);
    assert_eq!(body["error"], "validation_error", "{body}");
    assert_eq!(body["field"], "message", "{body}");
    assert_eq!(count_events(&app).await, before, "nothing appended");
    client.cancel().await.ok();
    app.shutdown().await;
}

#[tokio::test]
async fn a_nul_character_in_a_query_parameter_is_a_validation_error() {
    let app = app().await;
    let (account, _, _) = app.account("pro").await;
    let url = app.url(&format!("/operator/v1/accounts/{account}/events?stream=lines%00"));
    let r = app.http.get(url).bearer_auth(OPERATOR_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!((&body["error"], &body["field"]), (&json!("validation_error"), &json!("stream")), "{body}");
    app.shutdown().await;
}

/// The answer must be JSON in the flat envelope with `validation_error`.
async fn flat_validation_error(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: not JSON: {text}"));
    assert_eq!(body["error"], "validation_error", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    (status, body)
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_is_a_validation_error_in_the_flat_envelope() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let (status, body) = flat_validation_error(app.get("/v1/lines/%FF", &key).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    insta::assert_json_snapshot!("path_not_utf8", body);
    for path in ["/api/bridge/v1/lines/%FF/qr", "/v1/webhooks/%C3%28", "/v1/webhooks/wh_x/deliveries/%FF/retry"] {
        let method = if path.ends_with("retry") { reqwest::Method::POST } else { reqwest::Method::GET };
        let r = app.http.request(method, app.url(path)).bearer_auth(&key).send().await.unwrap();
        assert_eq!(flat_validation_error(r).await.0, StatusCode::BAD_REQUEST, "{path}");
    }
    let r = app.http.post(app.url("/v1/sandbox/lines/%FF/scan")).bearer_auth(&key).json(&json!({"phone": "+34600000909"}));
    assert_eq!(flat_validation_error(r.send().await.unwrap()).await.0, StatusCode::BAD_REQUEST);
    let r = app.http.get(app.url("/operator/v1/accounts/%FF/state")).bearer_auth(OPERATOR_TOKEN).send().await.unwrap();
    assert_eq!(flat_validation_error(r).await.0, StatusCode::BAD_REQUEST);
    app.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_validation_error_in_the_flat_envelope_on_every_route() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000904").await;
    let limit = wazion_bridge::config::Config::defaults().max_body_bytes;
    let big = format!("{{\"reason\": \"{}\"}}", "x".repeat(limit + 1));
    let before = count_events(&app).await;
    for path in [format!("/v1/sandbox/lines/{line}/disconnect"), "/api/bridge/mcp".to_owned()] {
        let r = app
            .http
            .post(app.url(&path))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        let (status, body) = flat_validation_error(r).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {body}");
        assert_eq!(body["limit_bytes"], limit, "{path}: {body}");
    }
    assert_eq!(count_events(&app).await, before, "nothing appended");
    app.shutdown().await;
}

#[tokio::test]
async fn a_bad_operator_cursor_or_limit_is_a_validation_error() {
    let app = app().await;
    let (account, _, _) = app.account("pro").await;
    for (query, field) in [("cursor=-1.5", Some("cursor")), ("cursor=1.-5", Some("cursor")), ("limit=many", None)] {
        let url = app.url(&format!("/operator/v1/accounts/{account}/events?{query}"));
        let r = app.http.get(url).bearer_auth(OPERATOR_TOKEN).send().await.unwrap();
        let (status, body) = flat_validation_error(r).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        if let Some(field) = field {
            assert_eq!(body["field"], field, "{query}: {body}");
        }
    }
    app.shutdown().await;
}
