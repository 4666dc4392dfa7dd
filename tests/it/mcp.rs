//! The MCP server driven by real MCP clients over HTTP: the `rmcp` client here, and the Python
//! `mcp` package's streamable HTTP client (tests/mcp_python/client_test.py).

use crate::common::mcp_client::{body, call, connect};
use crate::common::TestApp;
use reqwest::StatusCode;
use rmcp::model::CallToolResult;
use serde_json::{json, Value};
use std::time::Duration;

fn ok(tool: &str, result: &CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "{tool} failed: {}", body(result));
    body(result)
}

#[tokio::test]
async fn an_agent_initializes_lists_the_eight_tools_and_uses_each_on_the_sim_engine() {
    let app = TestApp::spawn_with(|c| {
        c.line_send_interval_ms = 50;
        c.line_send_jitter_ms = 0;
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000201").await;
    let client = connect(&app, &key).await;

    let info = client.peer_info().expect("the server's initialize result");
    let server = info.server_info.clone().expect("server info");
    assert_eq!((server.name.as_str(), server.version.as_str()), ("wazion-bridge", env!("CARGO_PKG_VERSION")));

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names.len(), 8, "{names:?}");
    let listed: Vec<Value> = tools
        .iter()
        .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema, "annotations": t.annotations}))
        .collect();
    let mut sorted = listed.clone();
    sorted.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    insta::assert_json_snapshot!("mcp_tools", sorted);

    let lines = ok("bridge_list_lines", &call(&client, "bridge_list_lines", json!({})).await);
    assert_eq!(lines["lines"][0]["line_id"], line.as_str());

    let sent = ok(
        "bridge_send_message",
        &call(&client, "bridge_send_message", json!({"line_id": line, "to": "+34655500201", "message": "Hola desde un agente"}))
            .await,
    );
    assert_eq!(sent["status"], "queued");
    let media = call(
        &client,
        "bridge_send_media",
        json!({"line_id": line, "to": "+34655500201", "media_url": "https://cdn.example.com/menu.pdf", "media_type": "document", "caption": "La carta"}),
    )
    .await;
    assert_eq!(ok("bridge_send_media", &media)["status"], "queued");

    // An inbound message to answer and react to.
    let (status, _) = app
        .post(&key, &format!("/v1/sandbox/lines/{line}/inbound"), json!({"from": "+34655500201", "message": "¿Abrís hoy?"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let inbound = app
        .db
        .condition_within(Duration::from_secs(10), || async {
            let got = call(&client, "bridge_get_messages", json!({"line_id": line, "phone": "+34655500201"})).await;
            body(&got)["messages"].as_array().is_some_and(|m| m.iter().any(|m| m["direction"] == "inbound"))
        })
        .await;
    assert!(inbound, "the inbound message is readable through bridge_get_messages");
    let messages = ok(
        "bridge_get_messages",
        &call(&client, "bridge_get_messages", json!({"line_id": line, "phone": "+34655500201", "limit": 10})).await,
    );
    let received = messages["messages"].as_array().unwrap().iter().find(|m| m["direction"] == "inbound").unwrap();
    let received_id = received["message_id"].as_str().unwrap();
    let reply = call(
        &client,
        "bridge_reply_message",
        json!({"line_id": line, "to": "+34655500201", "message": "Sí, hasta las 23h", "quoted_message_id": received_id}),
    )
    .await;
    assert_eq!(ok("bridge_reply_message", &reply)["status"], "queued");
    let react = call(
        &client,
        "bridge_react_message",
        json!({"line_id": line, "jid": "34655500201@s.whatsapp.net", "message_id": received_id, "emoji": "👍"}),
    )
    .await;
    assert_eq!(ok("bridge_react_message", &react)["status"], "queued");

    let archived =
        ok("bridge_archive_chat", &call(&client, "bridge_archive_chat", json!({"line_id": line, "phone": "+34655500201"})).await);
    assert_eq!(archived["archived"], true);
    let chats =
        ok("bridge_get_chats", &call(&client, "bridge_get_chats", json!({"line_id": line, "archived": true, "limit": 5})).await);
    assert_eq!(chats["chats"][0]["phone"], "+34655500201");

    // The same message, once, whichever way it is read: the tool's answer is the REST answer.
    let rest: Value =
        app.get(&format!("/v1/messages?line_id={line}&phone=%2B34655500201&limit=10"), &key).await.json().await.unwrap();
    let ids = |v: &Value| v["messages"].as_array().unwrap().iter().map(|m| m["message_id"].clone()).collect::<Vec<_>>();
    assert!(ids(&rest).contains(&sent["message_id"]));
    client.cancel().await.unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn business_errors_are_tool_results_with_the_rest_codes() {
    let app = TestApp::spawn_with(|c| c.plans.get_mut("free").unwrap().sent_messages = 1).await;
    let (_, _, key) = app.account("free").await;
    let line = app.connected_line(&key, "+34600000202").await;
    let client = connect(&app, &key).await;

    let missing = call(
        &client,
        "bridge_send_message",
        json!({"line_id": "line_0000000000000000000000000a", "to": "+34655500202", "message": "x"}),
    )
    .await;
    assert_eq!((missing.is_error, body(&missing)["error"].clone()), (Some(true), json!("line_not_found")));
    let invalid = call(&client, "bridge_send_message", json!({"line_id": line, "to": "not a phone", "message": "x"})).await;
    assert_eq!((invalid.is_error, body(&invalid)["error"].clone()), (Some(true), json!("validation_error")));
    assert_eq!(body(&invalid)["field"], "to");

    let first = call(
        &client,
        "bridge_send_message",
        json!({"line_id": line, "to": "+34655500202", "message": "uno", "idempotency_key": "order-1"}),
    )
    .await;
    let replayed = call(
        &client,
        "bridge_send_message",
        json!({"line_id": line, "to": "+34655500202", "message": "uno", "idempotency_key": "order-1"}),
    )
    .await;
    assert_eq!(ok("first", &first)["message_id"], ok("replayed", &replayed)["message_id"], "the idempotent retry");
    let over = call(&client, "bridge_send_message", json!({"line_id": line, "to": "+34655500202", "message": "dos"})).await;
    assert_eq!(over.is_error, Some(true));
    let over = body(&over);
    assert_eq!(
        (over["error"].as_str(), over["metric"].as_str(), over["used"].as_i64(), over["limit"].as_i64(), over["plan"].as_str()),
        (Some("quota_exceeded"), Some("sent_messages"), Some(1), Some(1), Some("free"))
    );
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'message.queued'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(events, 1, "refused calls appended nothing");
    client.cancel().await.unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn without_a_valid_key_the_endpoint_answers_401_before_any_mcp_exchange() {
    let app = TestApp::spawn().await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}}});
    for path in ["/api/bridge/mcp", "/mcp"] {
        let post = || app.http.post(app.url(path)).header("accept", "application/json, text/event-stream").json(&initialize);
        let none = post().send().await.unwrap();
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
        let envelope: Value = none.json().await.unwrap();
        assert_eq!((envelope["ok"].clone(), envelope["error"]["code"].clone()), (json!(false), json!("unauthorized")));
        let bad = post().bearer_auth("wzb_live_0000000000000000000000000000000000000000").send().await.unwrap();
        assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    }
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/api/bridge/mcp",
    ] {
        let r = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_host_not_in_public_hosts_is_refused() {
    let app = TestApp::spawn_with(|c| c.public_hosts = vec!["bridge.example.com".into()]).await;
    let (_, _, key) = app.account("pro").await;
    let initialize = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}}});
    let post = |host: &str| {
        app.http
            .post(app.url("/api/bridge/mcp"))
            .header("host", host)
            .header("accept", "application/json, text/event-stream")
            .bearer_auth(&key)
            .json(&initialize)
            .send()
    };
    let refused = post("evil.example.net").await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.expect("the refusal is JSON");
    assert_eq!(body["error"], "host_not_allowed", "{body}");
    assert!(body["message"].as_str().unwrap().contains("public_hosts"), "it names the setting: {body}");
    assert_eq!(post("bridge.example.com").await.unwrap().status(), StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn serve_says_when_it_listens_beyond_loopback_but_public_hosts_are_all_local() {
    let db = crate::common::TestDb::new().await;
    let (_beyond, _, log) = crate::common::serve_process(&db, &[("BRIDGE_LISTEN", "0.0.0.0:0")]).await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("public_hosts names only local hosts"), "{logged}");
    let (_named, _, log) = crate::common::serve_process(
        &db,
        &[("BRIDGE_LISTEN", "0.0.0.0:0"), ("BRIDGE_NODE_ID", "node-b"), ("BRIDGE_PUBLIC_HOSTS", "bridge.example.com")],
    )
    .await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("public_hosts names only local hosts"), "{logged}");
}

#[tokio::test]
async fn the_python_mcp_client_works_too() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000203").await;
    let python = std::env::var("BRIDGE_TEST_PYTHON")
        .unwrap_or_else(|_| format!("{}/target/mcp-venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    assert!(
        std::path::Path::new(&python).exists(),
        "{python} does not exist: run ops/test (it creates the venv with the `mcp` package), or set BRIDGE_TEST_PYTHON"
    );
    let script = format!("{}/tests/mcp_python/client_test.py", env!("CARGO_MANIFEST_DIR"));
    let out =
        tokio::process::Command::new(&python).args([&script, &app.url("/api/bridge/mcp"), &key, &line]).output().await.unwrap();
    assert!(
        out.status.success(),
        "the Python client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    app.shutdown().await;
}

#[tokio::test]
async fn arguments_that_do_not_fit_are_validation_errors_like_rest_not_protocol_errors() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000204").await;
    let client = connect(&app, &key).await;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap();
    for (tool, args) in [
        ("bridge_send_message", json!({"line_id": line, "to": "+34699000204", "message": "hi", "archive_policy": "sometimes"})),
        (
            "bridge_send_media",
            json!({"line_id": line, "to": "+34699000204", "media_url": "https://example.com/a.jpg", "media_type": "hologram"}),
        ),
        ("bridge_get_chats", json!({"line_id": line, "limit": -3})),
        ("bridge_get_messages", json!({"line_id": line, "phone": "+34699000204", "limit": "ten"})),
        ("bridge_send_message", json!({"line_id": line, "message": "no recipient"})),
        ("bridge_archive_chat", json!({"line_id": line, "phone": "+34699000204", "archive": "yes"})),
    ] {
        let result = call(&client, tool, args.clone()).await;
        assert_eq!(result.is_error, Some(true), "{tool} {args}: {result:?}");
        let body = body(&result);
        assert_eq!(body["error"], "validation_error", "{tool} {args}: {body}");
        assert!(body["message"].as_str().unwrap().starts_with("The arguments do not match"), "{body}");
    }
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(after, before, "nothing appended");
    client.cancel().await.ok();
    app.shutdown().await;
}
