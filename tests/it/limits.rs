//! Connection and rate limits: a key over its rate gets 429 `rate_limited` with `Retry-After`
//! (other keys are unaffected), as do a webhook's test endpoint and a sandbox line's inbound; a
//! connection that does not send its header in time is closed; connections beyond the cap wait;
//! a request that takes too long is answered `server_error`.

use crate::common::receiver::{Receiver, Reply};
use crate::common::{redactions, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wazion_bridge::config::RateLimit;

/// One request allowed every 1000 s after a burst of `burst`: the burst is all a test gets.
fn tiny(burst: u32) -> RateLimit {
    RateLimit { per_second: 0.001, burst }
}

async fn count_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap()
}

/// A 429 `rate_limited` in the flat envelope, with `Retry-After` in whole seconds; its body.
async fn rate_limited(r: reqwest::Response) -> Value {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = r.headers().get("retry-after").expect("a Retry-After header").to_str().unwrap().to_owned();
    let seconds: u64 = retry_after.parse().unwrap_or_else(|_| panic!("whole seconds: {retry_after}"));
    assert!((1..=1000).contains(&seconds), "Retry-After {seconds}");
    let body: Value = r.json().await.unwrap();
    assert_eq!((&body["error"], &body["retryable"]), (&json!("rate_limited"), &json!(true)), "{body}");
    body
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_another_key_is_unaffected() {
    let app = TestApp::spawn_with(|c| c.rate_limits.api_key = tiny(3)).await;
    let (account, _, key) = app.account("pro").await;
    let other =
        app.cli(&["keys", "create", "--account", &account, "--json"]).await.json()["api_key"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(app.get("/v1/me", &key).await.status(), StatusCode::OK);
    }
    let body = rate_limited(app.get("/v1/lines", &key).await).await;
    redactions().bind(|| insta::assert_json_snapshot!("rate_limited", body));
    // The same key on the MCP endpoint: the limit is the key's, whichever door it uses.
    let mcp = app
        .http
        .post(app.url("/api/bridge/mcp"))
        .bearer_auth(&key)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap();
    rate_limited(mcp).await;

    assert_eq!(app.get("/v1/me", &other).await.status(), StatusCode::OK, "another key of the same account is unaffected");
    app.shutdown().await;
}

#[tokio::test]
async fn the_webhook_test_endpoint_is_limited_per_webhook() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(|c| {
        c.allow_private_urls = true;
        c.rate_limits.webhook_test = tiny(1);
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (status, created) = app.post(&key, "/v1/webhooks", json!({"url": receiver.url})).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        ids.push(created["webhook"]["id"].as_str().unwrap().to_owned());
    }
    let test = |id: &str| app.http.post(app.url(&format!("/v1/webhooks/{id}/test"))).bearer_auth(&key).send();
    assert_eq!(test(&ids[0]).await.unwrap().status(), StatusCode::OK);
    rate_limited(test(&ids[0]).await.unwrap()).await;
    assert_eq!(test(&ids[1]).await.unwrap().status(), StatusCode::OK, "another webhook is unaffected");
    assert_eq!(receiver.requests().len(), 2, "the refused test called nobody");
    app.shutdown().await;
}

#[tokio::test]
async fn sandbox_inbound_is_limited_per_line() {
    let app = TestApp::spawn_with(|c| c.rate_limits.sandbox_inbound = tiny(2)).await;
    let (_, _, key) = app.account("pro").await;
    let (a, b) = (app.connected_line(&key, "+34600000911").await, app.connected_line(&key, "+34600000912").await);
    let inbound = |line: &str| {
        app.http
            .post(app.url(&format!("/v1/sandbox/lines/{line}/inbound")))
            .bearer_auth(&key)
            .json(&json!({"from": "+34699000911", "message": "hi"}))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(inbound(&a).await.unwrap().status(), StatusCode::OK);
    }
    let before = count_events(&app).await;
    rate_limited(inbound(&a).await.unwrap()).await;
    assert_eq!(count_events(&app).await, before, "a refused inbound appends nothing");
    assert_eq!(inbound(&b).await.unwrap().status(), StatusCode::OK, "another line is unaffected");
    app.shutdown().await;
}

/// Await the server closing the connection: EOF or a reset. What it wrote before.
async fn closed_by_server(stream: &mut TcpStream) -> String {
    let mut written = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut written))
        .await
        .expect("the server closes the connection (waited 30 s)");
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    String::from_utf8_lossy(&written).into_owned()
}

const HALF_A_HEADER: &[u8] = b"GET /v1/me HTTP/1.1\r\nHost: localhost\r\nAuthor";

#[tokio::test]
async fn a_connection_that_sends_half_a_header_is_closed_after_the_header_timeout() {
    let app = TestApp::spawn_with(|c| c.http.header_read_timeout_ms = 300).await;
    let addr = app.server.as_ref().unwrap().addr;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(HALF_A_HEADER).await.unwrap();
    closed_by_server(&mut slow).await;
    // A keep-alive connection left idle after its answer is closed the same way.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /v1/me HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let answered = closed_by_server(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 401"), "answered first: {answered}");
    app.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = TestApp::spawn_with(|c| {
        c.http.max_connections = 1;
        c.http.header_read_timeout_ms = 1000;
    })
    .await;
    let addr = app.server.as_ref().unwrap().addr;
    // The one slot, held by a client that sends half a header…
    let mut holder = TcpStream::connect(addr).await.unwrap();
    holder.write_all(HALF_A_HEADER).await.unwrap();
    // …so a whole request on a second connection is not answered until the first one is closed.
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting.write_all(b"GET /v1/me HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut first = [0u8; 1];
    tokio::select! {
        biased;
        _ = closed_by_server(&mut holder) => {}
        _ = waiting.read(&mut first) => panic!("the second connection was served while the first held the only slot"),
    }
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), waiting.read_to_end(&mut answer)).await.expect("answered").unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 401"), "then it is served: {answer}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_request_that_takes_longer_than_the_request_timeout_is_answered_server_error() {
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Hang);
    let app = TestApp::spawn_with(|c| {
        c.allow_private_urls = true;
        // The receiver never answers; the request timeout cuts the wait long before this.
        c.webhooks.timeout_ms = 20_000;
        c.http.request_timeout_ms = 500;
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let (_, created) = app.post(&key, "/v1/webhooks", json!({"url": receiver.url})).await;
    let id = created["webhook"]["id"].as_str().unwrap();
    let r = app.http.post(app.url(&format!("/v1/webhooks/{id}/test"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.headers().contains_key("x-request-id"));
    let body: Value = r.json().await.unwrap();
    insta::assert_json_snapshot!("request_timeout", body);
    app.shutdown().await;
}
