//! send-media: the file is downloaded and handed to the engine; a file that cannot be fetched (or
//! must not be) fails the message with a clear reason, and nothing hangs.

use crate::common::proxy_trap::ProxyTrap;
use crate::common::TestApp;
use axum::http::header;
use axum::routing::get;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// A file server of our own on loopback.
async fn files() -> String {
    let app = axum::Router::new()
        .route("/photo.jpg", get(|| async { ([(header::CONTENT_TYPE, "image/jpeg")], vec![0xFFu8; 1000]) }))
        .route("/report.pdf", get(|| async { ([(header::CONTENT_TYPE, "application/pdf")], vec![b'%'; 300]) }))
        .route("/page", get(|| async { ([(header::CONTENT_TYPE, "text/html")], "<html></html>") }))
        .route("/big.png", get(|| async { ([(header::CONTENT_TYPE, "image/png")], vec![0u8; 2 * 1024 * 1024]) }))
        .route("/moved", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/photo.jpg")]) }))
        .route("/slow.jpg", get(std::future::pending::<&'static str>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn setup(allow_private: bool) -> (TestApp, String, String) {
    let app = TestApp::spawn_with(|c| {
        c.allow_private_urls = allow_private;
        c.media_max_bytes = 1024 * 1024;
        c.media_timeout_ms = 700;
        c.line_send_interval_ms = 20;
        c.line_send_jitter_ms = 0;
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let created: Value =
        app.http.post(app.url("/v1/lines")).bearer_auth(&key).json(&json!({})).send().await.unwrap().json().await.unwrap();
    let line = created["line"]["line_id"].as_str().unwrap().to_owned();
    app.http
        .post(app.url(&format!("/v1/sandbox/lines/{line}/scan")))
        .bearer_auth(&key)
        .json(&json!({"phone": "+34600000401"}))
        .send()
        .await
        .unwrap();
    (app, key, line)
}

/// Send `url` as `media_type` and wait for the message's outcome: (status, failure reason).
async fn outcome(app: &TestApp, key: &str, line: &str, url: &str, media_type: &str) -> (String, Option<String>) {
    let r = app
        .http
        .post(app.url("/v1/messages/send-media"))
        .bearer_auth(key)
        .json(&json!({"line_id": line, "to": "+34699000401", "media_url": url, "media_type": media_type, "caption": "mira"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = r.json::<Value>().await.unwrap()["message_id"].as_str().unwrap().to_owned();
    let last = || async {
        sqlx::query_as::<_, (String, Value)>(
            "SELECT event_type, payload FROM events WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1",
        )
        .bind(&id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
    };
    app.eventually("the send has an outcome", Duration::from_secs(20), || async {
        matches!(last().await.0.as_str(), "message.sent" | "message.failed")
    })
    .await;
    let (kind, payload) = last().await;
    (kind, payload["reason"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn the_file_is_downloaded_and_handed_to_the_engine() {
    let base = files().await;
    let (app, key, line) = setup(true).await;
    assert_eq!(outcome(&app, &key, &line, &format!("{base}/photo.jpg"), "image").await, ("message.sent".into(), None));
    assert_eq!(outcome(&app, &key, &line, &format!("{base}/report.pdf"), "document").await.0, "message.sent");
    let received: Vec<(i32, String)> =
        sqlx::query_as("SELECT media_bytes, media_content_type FROM sim_deliveries ORDER BY delivered_at")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(received, [(1000, "image/jpeg".to_owned()), (300, "application/pdf".to_owned())]);
    let page: Value = app.get(&format!("/v1/messages?line_id={line}&phone=%2B34699000401"), &key).await.json().await.unwrap();
    assert_eq!(page["messages"][1]["type"], "image");
    assert_eq!(page["messages"][1]["caption"], "mira");
    app.shutdown().await;
}

#[tokio::test]
async fn a_file_that_cannot_be_fetched_fails_the_message_with_the_reason() {
    let base = files().await;
    let (app, key, line) = setup(true).await;
    let cases = [
        ("/missing.jpg", "image", "HTTP 404"),
        ("/page", "image", "content type `text/html`"),
        ("/photo.jpg", "video", "content type `image/jpeg`"),
        ("/big.png", "image", "larger than 1048576 bytes"),
        ("/moved", "image", "redirects are not followed"),
        ("/slow.jpg", "image", "did not answer within"),
    ];
    for (path, media_type, expected) in cases {
        let (kind, reason) = outcome(&app, &key, &line, &format!("{base}{path}"), media_type).await;
        assert_eq!(kind, "message.failed", "{path}");
        assert!(reason.as_deref().unwrap_or("").contains(expected), "{path}: {reason:?}");
    }
    // Nothing reached the network.
    let carried: i64 = sqlx::query_scalar("SELECT count(*) FROM sim_deliveries").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(carried, 0);
    // A port where nobody listens fails too.
    let (kind, reason) = outcome(&app, &key, &line, "http://127.0.0.1:9/x.jpg", "image").await;
    assert_eq!(kind, "message.failed");
    assert!(reason.unwrap().contains("could not be fetched"));
    app.shutdown().await;
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let base = files().await; // http://127.0.0.1:PORT
    let port = base.rsplit(':').next().unwrap().to_owned();
    let (app, key, line) = setup(false).await;
    // A literal address may be echoed; what a host name resolved to is never said.
    for (url, refused) in [
        (format!("{base}/photo.jpg"), "127.0.0.1 is not a public address"),
        (format!("http://localhost:{port}/photo.jpg"), "localhost resolves to a non-public address"),
        ("http://[::1]/a.jpg".to_owned(), "::1 is not a public address"),
        ("http://169.254.169.254/latest/meta-data".to_owned(), "169.254.169.254 is not a public address"),
        ("http://[::ffff:10.0.0.1]/a.jpg".to_owned(), "::ffff:10.0.0.1 is not a public address"),
    ] {
        let (kind, reason) = outcome(&app, &key, &line, &url, "image").await;
        assert_eq!(kind, "message.failed", "{url}");
        let expected = format!("media_url is refused: {refused} (private, loopback and link-local addresses are never fetched)");
        assert_eq!(reason.as_deref(), Some(expected.as_str()), "{url}");
    }
    // The reason a tenant reads in GET /v1/messages is the same.
    let page: Value = app.get(&format!("/v1/messages?line_id={line}&phone=%2B34699000401"), &key).await.json().await.unwrap();
    let named = page["messages"].as_array().unwrap().iter().find(|m| m["media_url"].as_str().unwrap().contains("localhost"));
    assert_eq!(
        named.unwrap()["failure_reason"],
        "media_url is refused: localhost resolves to a non-public address (private, loopback and link-local addresses are never fetched)"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn downloads_never_go_through_a_proxy_from_the_environment() {
    let base = files().await;
    let proxy = ProxyTrap::start().await;
    let (mut app, key, _) = setup(true).await;
    app.stop_server().await;
    // `bridge serve` as a process of its own, with every proxy variable pointing at the trap.
    let mut env = vec![
        ("BRIDGE_ALLOW_PRIVATE_URLS", "true"),
        ("BRIDGE_MASTER_KEY", crate::common::TEST_MASTER_KEY),
        ("BRIDGE_LINE_SEND_INTERVAL_MS", "20"),
        ("BRIDGE_LINE_SEND_JITTER_MS", "0"),
    ];
    env.extend(proxy.env());
    let (mut server, process_base, _) = crate::common::serve_process(&app.db, &env).await;
    app.base = process_base;
    let line = app.connected_line(&key, "+34600000402").await;

    let (kind, reason) = outcome(&app, &key, &line, &format!("{base}/photo.jpg"), "image").await;
    assert_eq!((kind.as_str(), reason), ("message.sent", None), "the file server was called directly");
    assert_eq!(proxy.connections(), 0, "the proxy was never used");
    server.start_kill().unwrap();
}
