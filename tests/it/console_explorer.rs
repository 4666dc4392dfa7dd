//! The console's API explorer over real HTTP: every operation of the published document can be
//! picked and opens a form made from its parameters and body; the API key field is never part of
//! a form submission; another account's lines are not offered. (Sending from the page needs a
//! browser: tests/it/console_browser.rs.)

use crate::common::console::{user, Visitor};
use crate::common::TestApp;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test]
async fn every_operation_of_the_document_opens_a_form_made_from_its_parameters_and_body() {
    let app = TestApp::spawn().await;
    let (account, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000001").await;
    let dev = user(&app, &account, "dev@example.com", "developer").await;
    assert_eq!(Visitor::new(&app).get("/console/explorer").await.headers()[LOCATION], "/console/sign-in");

    let page = dev.get("/console/explorer").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("<noscript>") && html.contains("needs JavaScript"), "{html}");
    let doc: Value = app.get("/v1/openapi.json", &key).await.json().await.unwrap();
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations.push((method.to_uppercase(), path.clone(), op["operationId"].as_str().unwrap().to_owned()));
        }
    }
    assert!(operations.len() > 20);
    for (method, path, id) in &operations {
        assert!(html.contains(&format!("<option value=\"{id}\"")), "{id} can be picked");
        let form = dev.get(&format!("/console/explorer?op={id}")).await;
        assert_eq!(form.status(), StatusCode::OK, "{id}");
        let form = form.text().await.unwrap();
        assert!(
            form.contains(&format!("data-method=\"{method}\" data-path=\"{path}\" data-base=\"/api/bridge\"")),
            "{id}: {form}"
        );
        for name in path.split('{').skip(1).map(|p| p.split('}').next().unwrap()) {
            assert!(form.contains(&format!("id=\"f-path-{name}\"")), "{id} has a field for its path parameter {name}");
        }
        // The key is typed in, but has no name: no form submission ever carries it.
        assert!(form.contains("<input id=\"explorer-key\" type=\"password\" autocomplete=\"off\""), "{id}");
        assert!(!form.contains("name=\"api_key\"") && !form.contains("name=\"key\""));
    }

    let send = dev.get("/console/explorer?op=sendMessage").await.text().await.unwrap();
    for field in ["f-body-line_id", "f-body-to", "f-body-message", "f-header-Idempotency-Key", "f-body-archive_policy"] {
        assert!(send.contains(&format!("id=\"{field}\"")), "{field}: {send}");
    }
    assert!(send.contains("data-body=\"fields\"") && send.contains("<option value=\"preserve_if_previously_archived\">"));
    assert!(send.contains(&format!("<option value=\"{line}\">")), "the account's lines are offered: {send}");
    let chats = dev.get("/console/explorer?op=listChats").await.text().await.unwrap();
    assert!(chats.contains("id=\"f-query-archived\" data-in=\"query\" data-name=\"archived\" data-kind=\"boolean\""), "{chats}");
    assert!(chats.contains("data-body=\"none\"") && chats.contains("data-kind=\"integer\""));
    let inbound = dev.get("/console/explorer?op=sandboxInbound").await.text().await.unwrap();
    assert!(inbound.contains("data-body=\"raw\"") && inbound.contains("id=\"f-body\""), "a choice of shapes is typed as JSON");
    assert!(inbound.contains("&#34;from&#34;: &#34;+34600000001&#34;"), "starting from the example: {inbound}");

    let unknown = dev.get("/console/explorer?op=dropTables").await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let script = dev.get("/console/assets/explorer.js").await;
    assert_eq!(script.headers()[CONTENT_TYPE], "text/javascript; charset=utf-8");
    let script = script.text().await.unwrap();
    assert!(script.contains("fetch(") && !script.contains("localStorage") && !script.contains("sessionStorage"));
    app.shutdown().await;
}

#[tokio::test]
async fn the_explorer_offers_only_the_accounts_own_lines() {
    let app = TestApp::spawn().await;
    let (_, _, victim_key) = app.account("pro").await;
    let (attacker, _, _) = app.account("pro").await;
    let victims = app.connected_line(&victim_key, "+34600000001").await;
    let owner = user(&app, &attacker, "attacker@example.com", "owner").await;
    let form = owner.get("/console/explorer?op=sendMessage").await.text().await.unwrap();
    assert!(form.contains("<datalist id=\"explorer-lines\">") && !form.contains(&victims), "{form}");
    app.shutdown().await;
}
