//! Webhook registration: the secret shown once and stored only sealed, updates, deletion,
//! rotation, URL checks (scheme and non-public addresses) and tenant isolation.

use crate::common::{redactions, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A public address (literal, so no DNS is needed).
const PUBLIC_URL: &str = "https://93.184.216.34/hooks/wazion";

async fn count_events(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap()
}

#[tokio::test]
async fn the_secret_is_shown_once_and_stored_only_sealed() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("pro").await;
    let (status, created) = app.post(&key, "/v1/webhooks", json!({"url": PUBLIC_URL, "description": "orders"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    redactions().bind(|| insta::assert_json_snapshot!("webhook_created", created));
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("wzb_whsec_"));
    assert_eq!(created["webhook"]["events"], json!(["line.status", "message.received", "message.sent", "message.status"]));
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();

    let listed: Value = app.get("/v1/webhooks", &key).await.json().await.unwrap();
    assert_eq!(listed["webhooks"][0]["id"], id.as_str());
    let one = app.get(&format!("/v1/webhooks/{id}"), &key).await.text().await.unwrap();
    assert!(!one.contains(&secret) && !listed.to_string().contains(&secret), "the secret is never shown again");

    let log = app.whole_log().await;
    assert!(!log.contains(&secret) && !log.contains(secret.trim_start_matches("wzb_whsec_")), "no secret in clear in the log");
    let sealed: String = sqlx::query_scalar("SELECT secret_sealed FROM webhooks").fetch_one(&app.db.pool).await.unwrap();
    let master = &app.server.as_ref().unwrap().state.master_key;
    assert_eq!(master.open(&domain::webhook::SealedSecret(sealed)).unwrap().expose(), secret, "sealed with the master key");
    app.shutdown().await;
}

#[tokio::test]
async fn webhooks_are_updated_rotated_and_deleted() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000501").await;
    let (_, created) =
        app.post(&key, "/v1/webhooks", json!({"url": PUBLIC_URL, "events": ["message.received"], "line_id": line})).await;
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["webhook"]["line_id"], line.as_str());

    let patched: Value = app
        .http
        .patch(app.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&key)
        .json(&json!({"events": ["message.status", "line.status", "message.status"], "enabled": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["webhook"]["events"], json!(["line.status", "message.status"]));
    assert_eq!(patched["webhook"]["enabled"], false);
    assert_eq!(patched["webhook"]["url"], PUBLIC_URL);

    let sealed_before: String = sqlx::query_scalar("SELECT secret_sealed FROM webhooks").fetch_one(&app.db.pool).await.unwrap();
    let (status, rotated) = app.post(&key, &format!("/v1/webhooks/{id}/rotate-secret"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(rotated["secret"], created["secret"]);
    let sealed_after: String = sqlx::query_scalar("SELECT secret_sealed FROM webhooks").fetch_one(&app.db.pool).await.unwrap();
    assert_ne!(sealed_before, sealed_after);

    let deleted = app.http.delete(app.url(&format!("/v1/webhooks/{id}"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(app.get(&format!("/v1/webhooks/{id}"), &key).await.status(), StatusCode::NOT_FOUND);
    let types: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM events WHERE stream_type = 'webhook' ORDER BY global_position")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(types, ["webhook.created", "webhook.updated", "webhook.secret_rotated", "webhook.deleted"]);
    app.shutdown().await;
}

#[tokio::test]
async fn bad_urls_and_events_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("pro").await;
    let (_, _, other_key) = app.account("pro").await;
    let their_line = app.connected_line(&other_key, "+34600000502").await;
    let before = count_events(&app).await;
    let cases = [
        ("plain_http", json!({"url": "http://93.184.216.34/hook"}), "url"),
        ("loopback", json!({"url": "https://127.0.0.1/hook"}), "url"),
        ("localhost_name", json!({"url": "https://localhost/hook"}), "url"),
        ("private", json!({"url": "https://10.1.2.3/hook"}), "url"),
        ("link_local_metadata", json!({"url": "https://169.254.169.254/latest"}), "url"),
        ("cgnat", json!({"url": "https://100.64.0.1/hook"}), "url"),
        ("ipv6_loopback", json!({"url": "https://[::1]/hook"}), "url"),
        ("ipv4_mapped", json!({"url": "https://[::ffff:192.168.0.1]/hook"}), "url"),
        ("user_info", json!({"url": "https://user:pw@93.184.216.34/hook"}), "url"),
        ("unknown_event", json!({"url": PUBLIC_URL, "events": ["message.deleted"]}), "events"),
        ("no_events", json!({"url": PUBLIC_URL, "events": []}), "events"),
        ("missing_url", json!({}), "url"),
    ];
    for (name, body, field) in cases {
        let (status, response) = app.post(&key, "/v1/webhooks", body).await;
        assert_eq!((status, response["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{name}: {response}");
        insta::assert_json_snapshot!(format!("webhook_refused_{name}"), response);
    }
    let (status, response) = app.post(&key, "/v1/webhooks", json!({"url": PUBLIC_URL, "line_id": their_line})).await;
    assert_eq!((status, response["error"].as_str()), (StatusCode::NOT_FOUND, Some("line_not_found")));
    assert_eq!(count_events(&app).await, before);
    app.shutdown().await;
}

#[tokio::test]
async fn plain_http_and_private_addresses_are_accepted_where_the_operator_allows_them() {
    let app = TestApp::spawn_with(|c| c.allow_private_urls = true).await;
    let (_, _, key) = app.account("pro").await;
    let (status, created) = app.post(&key, "/v1/webhooks", json!({"url": "http://127.0.0.1:9999/hook"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    app.shutdown().await;
}

#[tokio::test]
async fn another_accounts_webhook_does_not_exist_for_you() {
    let app = TestApp::spawn().await;
    let (_, _, mine) = app.account("pro").await;
    let (_, _, theirs) = app.account("pro").await;
    let (_, created) = app.post(&theirs, "/v1/webhooks", json!({"url": PUBLIC_URL})).await;
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    let before = count_events(&app).await;

    let get = app.get(&format!("/v1/webhooks/{id}"), &mine).await;
    assert_eq!(get.status(), StatusCode::NOT_FOUND);
    insta::assert_json_snapshot!("webhook_not_found", get.json::<Value>().await.unwrap());
    let patch = app
        .http
        .patch(app.url(&format!("/v1/webhooks/{id}")))
        .bearer_auth(&mine)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), StatusCode::NOT_FOUND);
    let delete = app.http.delete(app.url(&format!("/v1/webhooks/{id}"))).bearer_auth(&mine).send().await.unwrap();
    assert_eq!(delete.status(), StatusCode::NOT_FOUND);
    let (status, _) = app.post(&mine, &format!("/v1/webhooks/{id}/rotate-secret"), json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let listed: Value = app.get("/v1/webhooks", &mine).await.json().await.unwrap();
    assert_eq!(listed["webhooks"], json!([]));
    assert_eq!(count_events(&app).await, before);
    app.shutdown().await;
}
