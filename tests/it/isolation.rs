//! Tenant isolation, route by route: another account's ids reach nothing. The table below has an
//! entry for every REST route of the router and every MCP tool; a route or tool added without one
//! fails the test, so nobody can add a door without saying how it keeps tenants apart.

use crate::common::mcp_client::{self, body};
use crate::common::receiver::Receiver;
use crate::common::TestApp;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// What the victim account owns, by id.
struct Victim {
    line: String,
    chat: String,
    message: String,
    webhook: String,
    delivery: String,
}

/// How the attacker's request to a route is made, and what it must get.
struct Probe {
    path: String,
    body: Option<Value>,
    /// The status and error code answered (`None` for routes that act on the caller's own
    /// resources only; their answers must not name the victim's ids).
    refused: Option<(StatusCode, &'static str)>,
}

fn refused(path: String, body: Option<Value>, status: StatusCode, code: &'static str) -> Probe {
    Probe { path, body, refused: Some((status, code)) }
}

fn own_only(path: &str, body: Option<Value>) -> Probe {
    Probe { path: path.to_owned(), body, refused: None }
}

/// The probe of each route, keyed by method and path as the router declares them.
fn probe(method: &Method, path: &str, v: &Victim, attacker_webhook: &str) -> Option<Probe> {
    const NOT_FOUND: StatusCode = StatusCode::NOT_FOUND;
    let (line, wh) = (&v.line, &v.webhook);
    let on_line = |p: String, b: Value| refused(p, Some(b), NOT_FOUND, "line_not_found");
    let text = json!({"line_id": line, "to": v.chat, "message": "hi"});
    Some(match (method.as_str(), path) {
        ("GET", "/me") => own_only("/v1/me", None),
        ("GET", "/usage") => own_only("/v1/usage", None),
        ("GET", "/lines") => own_only("/v1/lines", None),
        ("POST", "/lines") => own_only("/v1/lines", Some(json!({}))),
        ("GET", "/lines/{line_id}") => refused(format!("/v1/lines/{line}"), None, NOT_FOUND, "line_not_found"),
        ("DELETE", "/lines/{line_id}") => refused(format!("/v1/lines/{line}"), None, NOT_FOUND, "line_not_found"),
        ("GET", "/lines/{line_id}/qr") => refused(format!("/v1/lines/{line}/qr"), None, NOT_FOUND, "line_not_found"),
        ("POST", "/lines/{line_id}/pairing-code") => {
            on_line(format!("/v1/lines/{line}/pairing-code"), json!({"phone": "+34600000999"}))
        }
        ("POST", "/sandbox/lines/{line_id}/scan") => {
            on_line(format!("/v1/sandbox/lines/{line}/scan"), json!({"phone": "+34600000999"}))
        }
        ("POST", "/sandbox/lines/{line_id}/disconnect") => on_line(format!("/v1/sandbox/lines/{line}/disconnect"), json!({})),
        ("POST", "/sandbox/lines/{line_id}/inbound") => {
            on_line(format!("/v1/sandbox/lines/{line}/inbound"), json!({"from": v.chat, "message": "hi"}))
        }
        ("POST", "/sandbox/lines/{line_id}/fault") => on_line(format!("/v1/sandbox/lines/{line}/fault"), json!({"mode": "fail"})),
        ("GET", "/chats") => refused(format!("/v1/chats?line_id={line}"), None, NOT_FOUND, "line_not_found"),
        ("POST", "/chats/archive") => on_line("/v1/chats/archive".into(), json!({"line_id": line, "phone": v.chat})),
        ("POST", "/messages/send") => on_line("/v1/messages/send".into(), text),
        ("POST", "/messages/send-media") => on_line(
            "/v1/messages/send-media".into(),
            json!({"line_id": line, "to": v.chat, "media_url": "https://example.com/a.jpg"}),
        ),
        ("POST", "/messages/reply") => on_line(
            "/v1/messages/reply".into(),
            json!({"line_id": line, "to": v.chat, "message": "hi", "quoted_message_id": v.message}),
        ),
        ("POST", "/messages/react") => {
            on_line("/v1/messages/react".into(), json!({"line_id": line, "jid": v.chat, "message_id": v.message, "emoji": "👍"}))
        }
        ("POST", "/messages/read") => on_line("/v1/messages/read".into(), json!({"line_id": line, "phone": v.chat})),
        ("GET", "/messages") => {
            refused(format!("/v1/messages?line_id={line}&phone=%2B{}", &v.chat[1..]), None, NOT_FOUND, "line_not_found")
        }
        ("GET", "/messages/{message_id}/media") => {
            refused(format!("/v1/messages/{}/media", v.message), None, NOT_FOUND, "not_found")
        }
        ("GET", "/webhooks") => own_only("/v1/webhooks", None),
        ("POST", "/webhooks") => on_line("/v1/webhooks".into(), json!({"url": "https://example.com/h", "line_id": line})),
        ("GET", "/webhooks/{id}") => refused(format!("/v1/webhooks/{wh}"), None, NOT_FOUND, "webhook_not_found"),
        ("PATCH", "/webhooks/{id}") => {
            refused(format!("/v1/webhooks/{wh}"), Some(json!({"enabled": false})), NOT_FOUND, "webhook_not_found")
        }
        ("DELETE", "/webhooks/{id}") => refused(format!("/v1/webhooks/{wh}"), None, NOT_FOUND, "webhook_not_found"),
        ("POST", "/webhooks/{id}/rotate-secret") => {
            refused(format!("/v1/webhooks/{wh}/rotate-secret"), Some(json!({})), NOT_FOUND, "webhook_not_found")
        }
        ("POST", "/webhooks/{id}/test") => {
            refused(format!("/v1/webhooks/{wh}/test"), Some(json!({})), NOT_FOUND, "webhook_not_found")
        }
        ("GET", "/webhooks/{id}/deliveries") => {
            refused(format!("/v1/webhooks/{wh}/deliveries"), None, NOT_FOUND, "webhook_not_found")
        }
        // Through the victim's webhook, and through the attacker's own webhook with the victim's
        // delivery id: neither reaches it.
        ("POST", "/webhooks/{id}/deliveries/{delivery_id}/retry") => refused(
            format!("/v1/webhooks/{attacker_webhook}/deliveries/{}/retry", v.delivery),
            Some(json!({})),
            NOT_FOUND,
            "delivery_not_found",
        ),
        ("GET", "/openapi.json") => own_only("/v1/openapi.json", None),
        _ => return None,
    })
}

/// The probe of each MCP tool: the arguments aimed at the victim's line and chat.
fn tool_probe(tool: &str, v: &Victim) -> Option<(Value, Option<&'static str>)> {
    let (line, chat, message) = (&v.line, &v.chat, &v.message);
    Some(match tool {
        "bridge_list_lines" => (json!({}), None),
        "bridge_send_message" => (json!({"line_id": line, "to": chat, "message": "hi"}), Some("line_not_found")),
        "bridge_send_media" => {
            (json!({"line_id": line, "to": chat, "media_url": "https://example.com/a.jpg"}), Some("line_not_found"))
        }
        "bridge_reply_message" => {
            (json!({"line_id": line, "to": chat, "message": "hi", "quoted_message_id": message}), Some("line_not_found"))
        }
        "bridge_react_message" => {
            (json!({"line_id": line, "jid": chat, "message_id": message, "emoji": "👍"}), Some("line_not_found"))
        }
        "bridge_get_chats" => (json!({"line_id": line}), Some("line_not_found")),
        "bridge_get_messages" => (json!({"line_id": line, "phone": chat}), Some("line_not_found")),
        "bridge_archive_chat" => (json!({"line_id": line, "phone": chat}), Some("line_not_found")),
        _ => return None,
    })
}

/// Every event of the victim's account, as text: what must not change.
async fn victims_log(app: &TestApp, account: &str) -> String {
    sqlx::query_scalar(
        "SELECT COALESCE(string_agg(global_position::text || event_type, ',' ORDER BY global_position), '') FROM events WHERE tenant_id = $1",
    )
    .bind(account)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn another_accounts_ids_reach_nothing_through_any_route_or_tool() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(|c| c.allow_private_urls = true).await;
    let (victim_account, _, victim_key) = app.account("pro").await;
    let (_, _, key) = app.account("pro").await;

    // The victim: a connected line with a chat and a message, a webhook with a delivery.
    let line = app.connected_line(&victim_key, "+34600000901").await;
    let chat = "+34600000902".to_owned();
    let (status, received) =
        app.post(&victim_key, &format!("/v1/sandbox/lines/{line}/inbound"), json!({"from": chat, "message": "hola"})).await;
    assert_eq!(status, StatusCode::OK, "{received}");
    // Subscribed to line status changes only, so nothing is delivered to it in the background
    // while the probes run (the victim's log must stay still).
    let (status, created) = app.post(&victim_key, "/v1/webhooks", json!({"url": receiver.url, "events": ["line.status"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let webhook = created["webhook"]["id"].as_str().unwrap().to_owned();
    let (status, tested) = app.post(&victim_key, &format!("/v1/webhooks/{webhook}/test"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{tested}");
    let victim = Victim {
        line,
        chat,
        message: received["message_id"].as_str().unwrap().to_owned(),
        webhook,
        delivery: tested["delivery_id"].as_str().unwrap().to_owned(),
    };
    // The attacker has a webhook of its own (to name the victim's delivery through it).
    let (_, own) = app.post(&key, "/v1/webhooks", json!({"url": "http://127.0.0.1:9/", "events": ["message.status"]})).await;
    let attacker_webhook = own["webhook"]["id"].as_str().unwrap().to_owned();
    let secrets = [victim.line.as_str(), &victim.message, &victim.webhook, &victim.delivery, &victim_account];
    let before = victims_log(&app, &victim_account).await;

    let routes = wazion_bridge::http::v1::routes();
    let missing: Vec<String> = routes
        .iter()
        .filter(|r| probe(&r.method, r.path, &victim, &attacker_webhook).is_none())
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(missing.is_empty(), "routes with no entry in the isolation table: {missing:?}");
    let mut seen = BTreeSet::new();
    for route in &routes {
        let probe = probe(&route.method, route.path, &victim, &attacker_webhook).unwrap();
        let mut request = app.http.request(route.method.clone(), app.url(&probe.path)).bearer_auth(&key);
        if let Some(body) = &probe.body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let what = format!("{} {}", route.method, probe.path);
        match probe.refused {
            Some((expected, code)) => {
                assert_eq!(status, expected, "{what}: {text}");
                assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["error"], code, "{what}: {text}");
            }
            None => assert!(status.is_success(), "{what}: {status} {text}"),
        }
        for id in secrets {
            assert!(!text.contains(id), "{what} answered the victim's {id}: {text}");
        }
        seen.insert(what);
    }
    assert_eq!(seen.len(), routes.len());

    // MCP: every tool, the same way.
    let client = mcp_client::connect(&app, &key).await;
    let tools = client.list_all_tools().await.unwrap();
    let missing: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).filter(|name| tool_probe(name, &victim).is_none()).collect();
    assert!(missing.is_empty(), "MCP tools with no entry in the isolation table: {missing:?}");
    for tool in &tools {
        let (args, code) = tool_probe(&tool.name, &victim).unwrap();
        let result = mcp_client::call(&client, &tool.name, args).await;
        let answer = body(&result);
        match code {
            Some(code) => {
                assert_eq!(result.is_error, Some(true), "{}: {answer}", tool.name);
                assert_eq!(answer["error"], code, "{}: {answer}", tool.name);
            }
            None => assert_ne!(result.is_error, Some(true), "{}: {answer}", tool.name),
        }
        for id in secrets {
            assert!(!answer.to_string().contains(id), "{} answered the victim's {id}: {answer}", tool.name);
        }
    }
    client.cancel().await.ok();

    // Nothing of the victim's changed: no event was appended to its account, and its line, chat
    // and webhook are as they were.
    assert_eq!(victims_log(&app, &victim_account).await, before, "the victim's log changed");
    let line = app.get(&format!("/v1/lines/{}", victim.line), &victim_key).await.json::<Value>().await.unwrap();
    assert_eq!(line["line"]["status"], "connected");
    let webhook = app.get(&format!("/v1/webhooks/{}", victim.webhook), &victim_key).await.json::<Value>().await.unwrap();
    assert_eq!(webhook["webhook"]["enabled"], true);
    app.shutdown().await;
}
