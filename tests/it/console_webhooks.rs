//! The console's Webhooks page over real HTTP: register (the secret shown once), edit the URL,
//! events, line and description, enable and disable, send a test event inline, read the delivery
//! log by status, send a delivery again; bad input shown next to its field with nothing recorded;
//! a suspended account reading but not acting; and another account's ids answering 404 on every
//! route of the section, changing nothing.

use crate::common::console::{user, user_id, Visitor};
use crate::common::receiver::{Receiver, Reply};
use crate::common::TestApp;
use reqwest::header::LOCATION;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wazion_bridge::config::Config;

/// Receivers listen on 127.0.0.1.
fn private_urls(config: &mut Config) {
    config.allow_private_urls = true;
}

/// A form POST as console.js sends a `data-inline` form (fetch: `Sec-Fetch-Dest: empty`).
async fn post_inline(v: &Visitor<'_>, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let request = v
        .http
        .post(v.app.url(path))
        .header("Origin", &v.app.base)
        .header("Sec-Fetch-Site", "same-origin")
        .header("Sec-Fetch-Dest", "empty");
    v.with_cookie(request).form(fields).send().await.unwrap()
}

/// The value of the first `attr="…"` after `marker` in `html`.
fn attr_after(html: &str, marker: &str, attr: &str) -> String {
    let at = html.find(marker).unwrap_or_else(|| panic!("{marker} not in {html}"));
    let rest = &html[at..];
    let start = rest.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
    rest[start..start + rest[start..].find('"').unwrap()].to_owned()
}

async fn rest(app: &TestApp, key: &str, path: &str) -> Value {
    let response = app.get(path, key).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}

/// The types and actors of the webhook stream's events, in order.
async fn webhook_events(app: &TestApp, webhook: &str) -> Vec<(String, Value, Value)> {
    sqlx::query_as("SELECT event_type, payload, metadata FROM events WHERE stream_type = 'webhook' AND stream_id = $1 ORDER BY stream_version")
        .bind(webhook)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

/// A webhook registered through REST; its id.
async fn registered(app: &TestApp, key: &str, body: Value) -> String {
    let (status, created) = app.post(key, "/v1/webhooks", body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["webhook"]["id"].as_str().unwrap().to_owned()
}

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap()
}

#[tokio::test]
async fn a_developer_registers_edits_tests_and_retries_a_webhook_from_the_console() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(private_urls).await;
    let (account, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000101").await;
    let dev = user(&app, &account, "dev@example.com", "developer").await;
    let dev_id = user_id(&app, "dev@example.com").await;
    let csrf = dev.csrf().await;

    let page = dev.get("/console/webhooks").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("id=\"webhook-create\"") && html.contains("No webhooks yet."), "{html}");

    // Register: the secret is on this page only.
    let created = dev
        .post(
            "/console/webhooks",
            &[
                ("_csrf", &csrf),
                ("url", &receiver.url),
                ("events", "message.received"),
                ("events", "line.status"),
                ("line", ""),
                ("description", "Orders"),
            ],
        )
        .await;
    assert_eq!(created.status(), StatusCode::OK);
    let html = created.text().await.unwrap();
    let secret = attr_after(&html, "data-test=\"webhook-secret\"", "value");
    assert!(secret.starts_with("wzb_whsec_"), "{secret}");
    let listed = rest(&app, &key, "/v1/webhooks").await;
    let webhook = listed["webhooks"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(listed["webhooks"][0]["events"], json!(["line.status", "message.received"]));
    assert_eq!(listed["webhooks"][0]["description"], "Orders");
    let detail = dev.get(&format!("/console/webhooks/{webhook}")).await.text().await.unwrap();
    assert!(!detail.contains(&secret), "the secret is shown once");
    assert!(detail.contains("HTTP_X_WAZION_BRIDGE_SIGNATURE") && detail.contains("crypto.timingSafeEqual"));

    // Edit: events, line and description in one event; the URL left as it was is not sent.
    let edited = dev
        .post(
            &format!("/console/webhooks/{webhook}"),
            &[
                ("_csrf", &csrf),
                ("url", &receiver.url),
                ("events", "message.received"),
                ("line", &line),
                ("description", "Orders v2"),
            ],
        )
        .await;
    assert_eq!(edited.status(), StatusCode::SEE_OTHER);
    assert_eq!(edited.headers()[LOCATION], format!("/console/webhooks/{webhook}").as_str());
    let now = rest(&app, &key, &format!("/v1/webhooks/{webhook}")).await["webhook"].clone();
    assert_eq!(
        (now["events"].clone(), now["line_id"].as_str(), now["description"].as_str()),
        (json!(["message.received"]), Some(line.as_str()), Some("Orders v2"))
    );
    // Back to every line.
    let widened = dev
        .post(
            &format!("/console/webhooks/{webhook}"),
            &[
                ("_csrf", &csrf),
                ("url", &receiver.url),
                ("events", "message.received"),
                ("line", ""),
                ("description", "Orders v2"),
            ],
        )
        .await;
    assert_eq!(widened.status(), StatusCode::SEE_OTHER);
    assert_eq!(rest(&app, &key, &format!("/v1/webhooks/{webhook}")).await["webhook"]["line_id"], Value::Null);

    // Disable and enable.
    let disabled = dev.post(&format!("/console/webhooks/{webhook}/enabled"), &[("_csrf", &csrf), ("enabled", "false")]).await;
    assert_eq!(disabled.status(), StatusCode::SEE_OTHER);
    assert_eq!(rest(&app, &key, &format!("/v1/webhooks/{webhook}")).await["webhook"]["enabled"], false);
    let page = dev.get(&format!("/console/webhooks/{webhook}")).await.text().await.unwrap();
    assert!(page.contains(">disabled<") && page.contains(">Enable</button>"), "{page}");
    dev.post(&format!("/console/webhooks/{webhook}/enabled"), &[("_csrf", &csrf), ("enabled", "true")]).await;
    assert_eq!(rest(&app, &key, &format!("/v1/webhooks/{webhook}")).await["webhook"]["enabled"], true);

    let events = webhook_events(&app, &webhook).await;
    let types: Vec<&str> = events.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(types, ["webhook.created", "webhook.updated", "webhook.updated", "webhook.updated", "webhook.updated"]);
    assert!(events.iter().all(|(_, _, m)| m["actor"] == json!({"kind": "console_user", "user_id": dev_id})), "{events:?}");
    assert_eq!(
        events[1].1,
        json!({"url": null, "events": ["message.received"], "enabled": null, "description": "Orders v2", "line": {"line_id": line}})
    );
    assert_eq!(events[2].1["line"], json!({"line_id": null}));

    // A test event, inline: the receiver's answer, in a fragment.
    receiver.script([Reply::Status(500)]);
    let tested = post_inline(&dev, &format!("/console/webhooks/{webhook}/test"), &[("_csrf", &csrf)]).await;
    assert_eq!(tested.status(), StatusCode::OK);
    let fragment = tested.text().await.unwrap();
    assert!(!fragment.contains("<html"), "inline answers are fragments: {fragment}");
    assert!(fragment.contains("data-test=\"attempt-status\">500<") && fragment.contains("not delivered"), "{fragment}");
    let got = receiver.wait_for(1, std::time::Duration::from_secs(10)).await;
    assert_eq!(got[0].json()["event"], "webhook.test");
    let delivery =
        rest(&app, &key, &format!("/v1/webhooks/{webhook}/deliveries")).await["deliveries"][0]["id"].as_str().unwrap().to_owned();
    assert!(fragment.contains(&delivery));

    // The log, by status, with every attempt.
    let failed = rest(&app, &key, &format!("/v1/webhooks/{webhook}/deliveries")).await["deliveries"][0]["status"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = dev.get(&format!("/console/webhooks/{webhook}/deliveries?status={failed}")).await.text().await.unwrap();
    assert!(log.contains(&format!("data-delivery=\"{delivery}\"")) && log.contains(": status 500,"), "{log}");
    let log = dev.get(&format!("/console/webhooks/{webhook}/deliveries?status=delivered")).await.text().await.unwrap();
    assert!(log.contains("data-test=\"no-deliveries\""), "{log}");
    let bad = dev.get(&format!("/console/webhooks/{webhook}?status=lost")).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(bad.text().await.unwrap().contains("data-test=\"status-error\""));

    // Retry it, as a plain form (no script): the page with the result.
    let retried = dev.post(&format!("/console/webhooks/{webhook}/deliveries/{delivery}/retry"), &[("_csrf", &csrf)]).await;
    assert_eq!(retried.status(), StatusCode::OK);
    let page = retried.text().await.unwrap();
    assert!(page.contains("<html") && page.contains("data-test=\"attempt-status\">200<"), "{page}");
    let log = dev.get(&format!("/console/webhooks/{webhook}/deliveries?status=delivered")).await.text().await.unwrap();
    assert!(
        log.contains(&format!("data-delivery=\"{delivery}\"")) && log.contains(": status 500,") && log.contains(": status 200,"),
        "{log}"
    );
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn bad_input_is_shown_next_to_its_field_and_records_nothing() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(private_urls).await;
    let (account, _, key) = app.account("pro").await;
    let (_, _, other_key) = app.account("pro").await;
    let others_line = app.connected_line(&other_key, "+34600000102").await;
    let dev = user(&app, &account, "dev@example.com", "developer").await;
    let csrf = dev.csrf().await;
    let before = event_count(&app).await;

    let long = "x".repeat(501);
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[("url", "")], "url-error"),
        (&[("url", "ftp://example.com/hook"), ("events", "message.sent")], "url-error"),
        (&[("url", &receiver.url)], "events-error"),
        (&[("url", &receiver.url), ("events", "message.sent"), ("line", &others_line)], "line-error"),
        (&[("url", &receiver.url), ("events", "message.sent"), ("description", &long)], "description-error"),
    ];
    for (fields, error) in cases {
        let mut form = vec![("_csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let response = dev.post("/console/webhooks", &form).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{error}");
        let html = response.text().await.unwrap();
        assert!(html.contains(&format!("data-test=\"{error}\"")), "{error}: {html}");
        assert!(!html.contains("data-test=\"webhook-secret\""));
        if let Some((_, url)) = fields.iter().find(|(n, _)| *n == "url") {
            assert!(html.contains(&format!("value=\"{url}\"")), "the typed URL is kept");
        }
    }
    assert_eq!(event_count(&app).await, before, "nothing was recorded");

    // An edit with one bad field changes nothing, not even the good fields.
    let webhook = registered(&app, &key, json!({"url": receiver.url, "description": "kept"})).await;
    let before = event_count(&app).await;
    let response = dev
        .post(
            &format!("/console/webhooks/{webhook}"),
            &[("_csrf", &csrf), ("url", "not a url"), ("events", "message.sent"), ("description", "changed")],
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = response.text().await.unwrap();
    assert!(
        html.contains("data-test=\"url-error\"") && html.contains("value=\"not a url\"") && html.contains("value=\"changed\"")
    );
    let response = dev
        .post(&format!("/console/webhooks/{webhook}"), &[("_csrf", &csrf), ("url", &receiver.url), ("line", &others_line)])
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(response.text().await.unwrap().contains("data-test=\"line-error\""));
    assert_eq!(event_count(&app).await, before);
    assert_eq!(rest(&app, &key, &format!("/v1/webhooks/{webhook}")).await["webhook"]["description"], "kept");

    // Without the form token: refused.
    let response = dev.post("/console/webhooks", &[("url", &receiver.url)]).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(event_count(&app).await, before);
}

#[tokio::test]
async fn a_suspended_account_reads_its_webhooks_but_cannot_act() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(private_urls).await;
    let (account, _, key) = app.account("pro").await;
    let webhook = registered(&app, &key, json!({"url": receiver.url})).await;
    let dev = user(&app, &account, "dev@example.com", "developer").await;
    let csrf = dev.csrf().await;
    app.cli(&["accounts", "suspend", &account, "--json"]).await.json();
    let before = event_count(&app).await;

    assert_eq!(dev.get("/console/webhooks").await.status(), StatusCode::OK);
    assert_eq!(dev.get(&format!("/console/webhooks/{webhook}")).await.status(), StatusCode::OK);
    for (path, fields) in [
        (
            "/console/webhooks".to_owned(),
            vec![("_csrf", csrf.as_str()), ("url", receiver.url.as_str()), ("events", "message.sent")],
        ),
        (format!("/console/webhooks/{webhook}/enabled"), vec![("_csrf", csrf.as_str()), ("enabled", "false")]),
        (format!("/console/webhooks/{webhook}/test"), vec![("_csrf", csrf.as_str())]),
    ] {
        let response = dev.post(&path, &fields).await;
        assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED, "{path}");
        assert!(response.text().await.unwrap().contains("subscription of this account is not active"));
    }
    assert_eq!(event_count(&app).await, before);
    assert!(receiver.requests().is_empty());
}

/// The isolation table's entries for this section: every route, with another account's ids.
#[tokio::test]
async fn another_accounts_webhook_is_not_found_on_every_route_and_nothing_changes() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(private_urls).await;
    let (_, _, owner_key) = app.account("pro").await;
    let webhook = registered(&app, &owner_key, json!({"url": receiver.url})).await;
    let (status, tested) = app.post(&owner_key, &format!("/v1/webhooks/{webhook}/test"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{tested}");
    let delivery = tested["delivery_id"].as_str().unwrap().to_owned();

    let (intruder_account, _, _) = app.account("pro").await;
    let intruder = user(&app, &intruder_account, "intruder@example.com", "owner").await;
    let csrf = intruder.csrf().await;
    let own = registered(&app, &rest_key(&app, &intruder_account).await, json!({"url": receiver.url})).await;
    let before =
        (event_count(&app).await, receiver.requests().len(), rest(&app, &owner_key, &format!("/v1/webhooks/{webhook}")).await);

    let gets = [
        format!("/console/webhooks/{webhook}"),
        format!("/console/webhooks/{webhook}/deliveries"),
        format!("/console/webhooks/{webhook}/deliveries?status=lost"),
    ];
    for path in &gets {
        let response = intruder.get(path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET {path}");
        assert!(!response.text().await.unwrap().contains(&delivery));
    }
    let posts: [(String, Vec<(&str, &str)>); 5] = [
        (
            format!("/console/webhooks/{webhook}"),
            vec![("url", receiver.url.as_str()), ("events", "message.sent"), ("description", "mine")],
        ),
        (format!("/console/webhooks/{webhook}/enabled"), vec![("enabled", "false")]),
        (format!("/console/webhooks/{webhook}/test"), vec![]),
        (format!("/console/webhooks/{webhook}/deliveries/{delivery}/retry"), vec![]),
        (format!("/console/webhooks/wh_00000000000000000000000000/deliveries/{delivery}/retry"), vec![]),
    ];
    for (path, fields) in &posts {
        let mut form = vec![("_csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        assert_eq!(intruder.post(path, &form).await.status(), StatusCode::NOT_FOUND, "POST {path}");
        assert_eq!(post_inline(&intruder, path, &form).await.status(), StatusCode::NOT_FOUND, "inline POST {path}");
    }
    // Its own webhook with the other account's delivery id: no such delivery.
    let path = format!("/console/webhooks/{own}/deliveries/{delivery}/retry");
    assert_eq!(intruder.post(&path, &[("_csrf", csrf.as_str())]).await.status(), StatusCode::NOT_FOUND);
    // The intruder's list shows only its own webhook.
    let list = intruder.get("/console/webhooks").await.text().await.unwrap();
    assert!(!list.contains(&webhook) && list.contains(&own));

    let after =
        (event_count(&app).await, receiver.requests().len(), rest(&app, &owner_key, &format!("/v1/webhooks/{webhook}")).await);
    assert_eq!(after, before, "nothing changed");
}

/// A new API key of the account (the intruder's, to register a webhook of its own).
async fn rest_key(app: &TestApp, account: &str) -> String {
    let key = app.cli(&["keys", "create", "--account", account, "--name", "own", "--json"]).await.json();
    key["api_key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_webhook_narrowed_to_a_line_in_the_console_receives_only_that_lines_events() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(private_urls).await;
    let (account, _, key) = app.account("pro").await;
    let (chosen, other) = (app.connected_line(&key, "+34600000111").await, app.connected_line(&key, "+34600000112").await);
    let webhook = registered(&app, &key, json!({"url": receiver.url, "events": ["message.received"]})).await;
    let dev = user(&app, &account, "dev@example.com", "developer").await;
    let csrf = dev.csrf().await;
    let narrowed = dev
        .post(
            &format!("/console/webhooks/{webhook}"),
            &[("_csrf", &csrf), ("url", &receiver.url), ("events", "message.received"), ("line", &chosen)],
        )
        .await;
    assert_eq!(narrowed.status(), StatusCode::SEE_OTHER);

    for (line, text) in [(&other, "to the other line"), (&chosen, "to the chosen line")] {
        let (status, body) =
            app.post(&key, &format!("/v1/sandbox/lines/{line}/inbound"), json!({"from": "+34655500001", "message": text})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let got = receiver
        .wait_for_body("the chosen line's message", std::time::Duration::from_secs(20), |b| b["line_id"] == chosen.as_str())
        .await;
    assert_eq!(got.json()["event"], "message.received");
    // Deliveries are made in the log's order: the other line's message came first and has none.
    let deliveries =
        rest(&app, &key, &format!("/v1/webhooks/{webhook}/deliveries")).await["deliveries"].as_array().unwrap().clone();
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    assert!(receiver.requests().iter().all(|r| r.json()["line_id"] == chosen.as_str()));
}
