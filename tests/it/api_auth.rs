//! Authentication, the two error envelopes, request ids, CORS and routing, over real HTTP.

use crate::common::{redactions, TestApp};
use domain::api_key::{ApiKey, ApiKeyEvent, ApiKeySecret};
use domain::ids::{AccountId, KeyId};
use domain::Aggregate;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use std::time::Duration;
use wazion_bridge::store::{Actor, Append, EventStore, Metadata, StreamAppend};

async fn body(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

#[tokio::test]
async fn both_auth_headers_authenticate() {
    let app = TestApp::spawn().await;
    let (account_id, key_id, key) = app.account("pro").await;

    let bearer =
        app.http.get(app.url("/api/bridge/v1/me")).header("Authorization", format!("Bearer {key}")).send().await.unwrap();
    assert_eq!(bearer.status(), StatusCode::OK);
    let me = body(bearer).await;
    assert_eq!(me["account"]["id"], account_id.as_str());
    assert_eq!(me["key_id"], key_id.as_str());

    let header = app.http.get(app.url("/v1/me")).header("X-Bridge-Key", &key).send().await.unwrap();
    assert_eq!(header.status(), StatusCode::OK);
    assert_eq!(body(header).await["account"]["id"], account_id.as_str());
    app.shutdown().await;
}

#[tokio::test]
async fn missing_malformed_and_unknown_keys_get_401_in_the_standard_envelope() {
    let app = TestApp::spawn().await;
    let unknown = format!("wzb_live_{}", "A".repeat(40));
    let cases: [(&str, Option<(&str, String)>); 5] = [
        ("missing", None),
        ("not_bearer", Some(("Authorization", "Basic dXNlcjpwYXNz".to_owned()))),
        ("malformed", Some(("Authorization", "Bearer not-a-key".to_owned()))),
        ("unknown", Some(("Authorization", format!("Bearer {unknown}")))),
        ("unknown_x_bridge_key", Some(("X-Bridge-Key", unknown.clone()))),
    ];
    for (name, header) in cases {
        let mut request = app.http.get(app.url("/v1/me"));
        if let Some((h, v)) = header {
            request = request.header(h, v);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert!(response.headers().contains_key("x-request-id"), "{name}");
        let body = body(response).await;
        assert_eq!(body["ok"], false);
        assert_eq!(body["error"]["code"], "unauthorized");
        redactions().bind(|| insta::assert_json_snapshot!(format!("unauthorized_{name}"), body));
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_revoked_key_stops_working_and_other_keys_do_not() {
    let app = TestApp::spawn().await;
    let (account_id, key_id, key) = app.account("pro").await;
    let other = app.cli(&["keys", "create", "--account", &account_id, "--json"]).await.json();
    let other_key = other["api_key"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v1/me", &key).await.status(), StatusCode::OK); // now cached

    let revoked = app.cli(&["keys", "revoke", &key_id, "--json"]).await.json();
    assert_eq!(revoked["changed"], true);
    // The CLI is another process: its append reaches this server's key cache over NOTIFY.
    app.eventually("the revoked key is refused", Duration::from_secs(5), || async {
        app.get("/v1/me", &key).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    let refused = body(app.get("/v1/me", &key).await).await;
    assert_eq!(refused["error"]["message"], "Invalid or revoked API key.");
    assert_eq!(app.get("/v1/me", &other_key).await.status(), StatusCode::OK);

    let again = app.cli(&["keys", "revoke", &key_id, "--json"]).await.json();
    assert_eq!(again["changed"], false, "revoking twice changes nothing");
    app.shutdown().await;
}

#[tokio::test]
async fn rotation_without_grace_ends_the_old_secret_at_once() {
    let app = TestApp::spawn().await;
    let (_, key_id, old) = app.account("pro").await;
    assert_eq!(app.get("/v1/me", &old).await.status(), StatusCode::OK);

    let rotated = app.cli(&["keys", "rotate", &key_id, "--json"]).await.json();
    let new = rotated["api_key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(rotated["key_id"], key_id.as_str(), "rotation keeps the key's id");
    assert_eq!(rotated["previous_valid_until"], Value::Null);

    assert_eq!(app.get("/v1/me", &new).await.status(), StatusCode::OK);
    app.eventually("the rotated-out secret is refused", Duration::from_secs(5), || async {
        app.get("/v1/me", &old).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn rotation_with_grace_keeps_the_old_secret_until_the_grace_ends() {
    let app = TestApp::spawn().await;
    let (_, key_id, old) = app.account("pro").await;

    let rotated = app.cli(&["keys", "rotate", &key_id, "--grace", "24h", "--json"]).await.json();
    let new = rotated["api_key"].as_str().unwrap().to_owned();
    assert!(rotated["previous_valid_until"].is_string());
    assert_eq!(app.get("/v1/me", &new).await.status(), StatusCode::OK);
    assert_eq!(app.get("/v1/me", &old).await.status(), StatusCode::OK, "old secret works during the grace period");

    // A short grace: the old secret stops by itself when the grace ends, and not before.
    let again = app.cli(&["keys", "rotate", &key_id, "--grace", "2s", "--json"]).await.json();
    let newest = again["api_key"].as_str().unwrap().to_owned();
    let until: chrono::DateTime<chrono::Utc> = again["previous_valid_until"].as_str().unwrap().parse().unwrap();
    app.eventually("the graced secret expires", Duration::from_secs(15), || async {
        app.get("/v1/me", &new).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(chrono::Utc::now() >= until, "refused only once its grace had ended ({until})");
    assert_eq!(app.get("/v1/me", &newest).await.status(), StatusCode::OK);
    // The first secret keeps its own 24h grace: rotating again does not cut it short.
    assert_eq!(app.get("/v1/me", &old).await.status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn suspension_answers_402_except_on_me_and_usage() {
    let app = TestApp::spawn().await;
    let (account_id, _, key) = app.account("starter").await;
    app.cli(&["accounts", "suspend", &account_id, "--json"]).await.json();
    app.eventually("the suspension reaches the server", Duration::from_secs(5), || async {
        body(app.get("/v1/me", &key).await).await["subscription"]["status"] == "suspended"
    })
    .await;

    assert_eq!(app.get("/v1/usage", &key).await.status(), StatusCode::OK);
    let me = app.get("/v1/me", &key).await;
    assert_eq!(me.status(), StatusCode::OK);

    let body_of = |r: reqwest::Response| async move { r.json::<Value>().await.unwrap() };
    let gets = [
        "/v1/lines",
        "/api/bridge/v1/lines",
        "/v1/lines/line_00000000000000000000000000",
        "/v1/chats?line_id=x",
        "/v1/messages?line_id=x&phone=y",
    ];
    for path in gets {
        let response = app.get(path, &key).await;
        assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED, "{path}");
        let body = body_of(response).await;
        assert_eq!(body["error"]["code"], "subscription_required");
        insta::assert_json_snapshot!("subscription_required", body);
    }
    let posts = [
        "/v1/lines",
        "/v1/messages/send",
        "/v1/messages/send-media",
        "/v1/messages/reply",
        "/v1/messages/react",
        "/v1/messages/read",
        "/v1/chats/archive",
    ];
    for path in posts {
        let response = app.http.post(app.url(path)).bearer_auth(&key).json(&serde_json::json!({})).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED, "{path}");
    }
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type NOT LIKE 'account.%' AND event_type NOT LIKE 'api_key.%'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(events, 0, "a suspended account changed nothing");

    app.cli(&["accounts", "activate", &account_id]).await;
    app.eventually("reactivation reaches the server", Duration::from_secs(5), || async {
        app.get("/v1/lines", &key).await.status() == StatusCode::OK
    })
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn me_and_usage_describe_the_account_plan_and_cycle() {
    let app = TestApp::spawn().await;
    let (account_id, _, key) = app.account("pro").await;

    let me = body(app.get("/v1/me", &key).await).await;
    assert_eq!(me["account"]["id"], account_id.as_str());
    assert_eq!(me["plan"]["limits"]["sent_messages"], 10000);
    redactions().bind(|| insta::assert_json_snapshot!("me", me));

    let usage = body(app.get("/api/bridge/v1/usage", &key).await).await;
    assert_eq!(usage["period"], me["billing_cycle"], "usage covers the current billing cycle");
    redactions().bind(|| insta::assert_json_snapshot!("usage", usage));

    // A plan change shows at once in the limits.
    app.cli(&["accounts", "set-plan", &account_id, "business"]).await;
    app.eventually("the new plan's limits", Duration::from_secs(5), || async {
        body(app.get("/v1/usage", &key).await).await["usage"]["sent_messages"]["limit"] == 100000
    })
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn request_ids_are_echoed_when_well_formed_and_generated_otherwise() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("free").await;

    let echoed = app.http.get(app.url("/v1/me")).bearer_auth(&key).header("X-Request-Id", "client-abc-123").send().await.unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "client-abc-123");

    let on_error = app.http.get(app.url("/v1/me")).header("X-Request-Id", "trace:42").send().await.unwrap();
    assert_eq!(on_error.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(on_error.headers()["x-request-id"], "trace:42");

    let bad = app
        .http
        .get(app.url("/v1/me"))
        .bearer_auth(&key)
        .header("X-Request-Id", "has spaces and \"quotes\"")
        .send()
        .await
        .unwrap();
    let generated = bad.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(generated.starts_with("req_"), "{generated}");

    let a = app.get("/v1/me", &key).await.headers()["x-request-id"].clone();
    let b = app.get("/v1/me", &key).await.headers()["x-request-id"].clone();
    assert_ne!(a, b, "each request gets its own id");
    app.shutdown().await;
}

#[tokio::test]
async fn cors_preflight_and_headers() {
    let app = TestApp::spawn().await;
    let preflight = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/api/bridge/v1/messages/send"))
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization, content-type, idempotency-key")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    for header in ["authorization", "content-type", "idempotency-key", "x-bridge-key"] {
        assert!(allowed.contains(header), "{header} in {allowed}");
    }
    assert!(h.contains_key("x-request-id"));

    // An MCP client in a browser.
    let mcp = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/api/bridge/mcp"))
        .header("Origin", "https://agent.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization, content-type, mcp-session-id, mcp-protocol-version")
        .send()
        .await
        .unwrap();
    assert!(mcp.status().is_success());
    let allowed = mcp.headers()["access-control-allow-headers"].to_str().unwrap().to_owned();
    for header in ["mcp-session-id", "mcp-protocol-version"] {
        assert!(allowed.contains(header), "{header} in {allowed}");
    }

    let simple = app.http.get(app.url("/v1/me")).header("Origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(simple.headers()["access-control-allow-origin"], "*");
    let exposed = simple.headers()["access-control-expose-headers"].to_str().unwrap();
    for header in ["x-request-id", "idempotent-replayed", "mcp-session-id"] {
        assert!(exposed.contains(header), "{header} in {exposed}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = TestApp::spawn().await;
    let missing = app.http.get(app.url("/api/bridge/v1/nothing-here")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.headers().contains_key("x-request-id"));
    insta::assert_json_snapshot!("not_found", body(missing).await);

    let wrong_method = app.http.delete(app.url("/v1/me")).send().await.unwrap();
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    insta::assert_json_snapshot!("method_not_allowed", body(wrong_method).await);
    app.shutdown().await;
}

#[tokio::test]
async fn internal_errors_are_opaque_and_retryable() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("pro").await;
    // Break the database under the server: the cause must be logged, not sent.
    sqlx::query("DROP TABLE usage_counters CASCADE").execute(&app.db.pool).await.unwrap();
    let response = app.get("/v1/usage", &key).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(response.headers().contains_key("x-request-id"));
    let text = response.text().await.unwrap();
    assert!(!text.contains("usage_counters") && !text.contains("relation"), "the cause leaked: {text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    insta::assert_json_snapshot!("server_error", body);
    app.shutdown().await;
}

#[tokio::test]
async fn rotation_without_grace_also_ends_a_secret_still_in_an_earlier_grace() {
    let app = TestApp::spawn().await;
    let (_, key_id, first) = app.account("pro").await;
    let graced = app.cli(&["keys", "rotate", &key_id, "--grace", "24h", "--json"]).await.json();
    let second = graced["api_key"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v1/me", &first).await.status(), StatusCode::OK, "in its grace");
    assert_eq!(app.get("/v1/me", &second).await.status(), StatusCode::OK);

    let rotated = app.cli(&["keys", "rotate", &key_id, "--json"]).await.json();
    let third = rotated["api_key"].as_str().unwrap().to_owned();
    assert_eq!(app.get("/v1/me", &third).await.status(), StatusCode::OK);
    // The rotation's announcement drops every cached secret of the account at once: once the
    // secret it replaced is refused, the one still in the earlier grace is read again too.
    app.eventually("the replaced secret is refused", Duration::from_secs(5), || async {
        app.get("/v1/me", &second).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    assert_eq!(app.get("/v1/me", &first).await.status(), StatusCode::UNAUTHORIZED, "its grace ended with the rotation");
    assert_eq!(app.get("/v1/me", &third).await.status(), StatusCode::OK);
    app.shutdown().await;
}

/// A server whose unknown keys are remembered for an hour: only a key's creation can end that.
async fn remembering_unknown_keys() -> TestApp {
    TestApp::spawn_with(|c| c.unknown_key_cache_ms = 3_600_000).await
}

#[tokio::test]
async fn an_unknown_key_tried_again_and_again_reaches_the_database_once() {
    let app = remembering_unknown_keys().await;
    let auth = app.server.as_ref().unwrap().state.auth.clone();
    let unknown = format!("wzb_live_{}", "C".repeat(40));
    for _ in 0..20 {
        assert_eq!(app.get("/v1/me", &unknown).await.status(), StatusCode::UNAUTHORIZED);
    }
    // Nothing is appended here, so nothing makes the server forget the answer; except that its
    // first `Reset` (when it starts listening) may come while the first lookup is under way, and
    // then that answer is not kept.
    let lookups = auth.lookups();
    assert!((1..=2).contains(&lookups), "one lookup, then answered from memory; got {lookups}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_created_just_after_it_was_tried_works_as_soon_as_the_server_hears_of_it() {
    let app = remembering_unknown_keys().await;
    let (account_id, _, _) = app.account("pro").await;
    let secret = ApiKeySecret::parse(&format!("wzb_live_{}", uuid::Uuid::new_v4().simple())).unwrap();
    assert_eq!(app.get("/v1/me", secret.expose()).await.status(), StatusCode::UNAUTHORIZED);

    // The key is created with that very secret (the CLI would draw a new one), by another writer.
    let store = EventStore::new(app.db.pool.clone(), EventStore::inline_projections());
    let key_id = KeyId::new();
    let created = ApiKeyEvent::Created {
        key_id: key_id.clone(),
        account_id: AccountId::parse(&account_id).unwrap(),
        name: None,
        key_hash: secret.hash(),
    };
    let append = Append {
        tenant_id: account_id.clone(),
        metadata: Metadata::new(Actor::Operator { name: "test".into() }),
        streams: vec![StreamAppend::new(ApiKey::STREAM_TYPE, key_id.as_str(), 0, &[created])],
    };
    store.append(&append).await.unwrap();
    app.eventually("the new key works", Duration::from_secs(20), || async {
        app.get("/v1/me", secret.expose()).await.status() == StatusCode::OK
    })
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_send_from_an_account_suspended_behind_the_key_cache_is_refused_and_appends_nothing() {
    let app = TestApp::spawn().await;
    let (account_id, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000311").await;
    // Suspend the account in the read model only: no event, so no NOTIFY, and this server's key
    // cache goes on holding it as active, as any node's does between a suspension's commit and
    // its announcement.
    sqlx::query("UPDATE accounts SET status = 'suspended' WHERE account_id = $1")
        .bind(&account_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let me = body(app.get("/v1/me", &key).await).await;
    assert_eq!(me["subscription"]["status"], "active", "the key cache has not heard");

    let count = || async { sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap() };
    let before = count().await;
    let send = serde_json::json!({"line_id": line, "to": "+34600000312", "message": "hola"});
    let response = app.http.post(app.url("/v1/messages/send")).bearer_auth(&key).json(&send).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
    insta::assert_json_snapshot!("subscription_required", body(response).await);
    assert_eq!(count().await, before, "nothing appended");
    app.shutdown().await;
}

#[tokio::test]
async fn a_revocation_made_while_the_servers_listener_is_down_is_seen_once_it_listens_again() {
    let mut app = TestApp::spawn().await;
    let (_, key_id, key) = app.account("pro").await;
    app.stop_server().await;
    // `bridge serve` as a process of its own, so that its connections are not the test's.
    let (mut server, base, _) =
        crate::common::serve_process(&app.db, &[("BRIDGE_MASTER_KEY", crate::common::TEST_MASTER_KEY)]).await;
    app.base = base;
    assert_eq!(app.get("/v1/me", &key).await.status(), StatusCode::OK); // now cached

    // Connections of the test's own, opened now, do everything while the database takes no new
    // connections: the server loses every connection (its LISTEN too) and cannot reconnect.
    let options = app.db.pool.connect_options().as_ref().clone();
    let revoker = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect_with(options.clone()).await.unwrap();
    let mut admin = PgConnection::connect_with(&options.database("postgres")).await.unwrap();
    let database = format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS", app.db.name);
    sqlx::query(&format!("{database} false")).execute(&mut admin).await.unwrap();
    let others = "FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()";
    // Each termination is awaited (up to 20 s) by PostgreSQL itself: a NOTIFY must not reach a
    // backend still on its way out.
    let ended: Vec<bool> =
        sqlx::query_scalar(&format!("SELECT pg_terminate_backend(pid, 20000) {others}")).fetch_all(&revoker).await.unwrap();
    assert!(!ended.is_empty() && ended.iter().all(|e| *e), "the server's connections did not end: {ended:?}");
    let left: i64 = sqlx::query_scalar(&format!("SELECT count(*) {others}")).fetch_one(&revoker).await.unwrap();
    assert_eq!(left, 0, "the server's connections are gone");
    // The revocation's NOTIFY reaches nobody.
    let store = EventStore::new(revoker.clone(), EventStore::inline_projections());
    let operator = Metadata::new(Actor::Operator { name: "test".into() });
    let (owned, _) =
        wazion_bridge::queries::keys::for_operator(&revoker, &KeyId::parse(&key_id).unwrap()).await.unwrap().unwrap();
    assert!(wazion_bridge::commands::keys::revoke(&store, &operator, &owned).await.unwrap());
    sqlx::query(&format!("{database} true")).execute(&mut admin).await.unwrap();

    app.eventually("the revoked key is refused once the server listens again", Duration::from_secs(20), || async {
        app.get("/v1/me", &key).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    server.start_kill().unwrap();
}
