//! Connection limits: a connection that does not send its header in time is closed; connections
//! beyond the cap wait; a request that takes too long is answered `server_error`.

mod common;

use common::receiver::{Receiver, Reply};
use common::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
