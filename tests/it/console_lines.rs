//! The console's Lines pages over real HTTP: create a sim line, its QR code and live status, the
//! sandbox actions, logging out after a confirmation; bad input shown next to its field with
//! nothing stored; a suspended account reads but does not act; another account's line is a 404
//! on every route.

use crate::common::console::{user, user_id, Visitor};
use crate::common::TestApp;
use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap()
}

/// The line as `GET /v1/lines/{id}` answers it.
async fn line_over_rest(app: &TestApp, key: &str, line_id: &str) -> Value {
    let response = app.get(&format!("/v1/lines/{line_id}"), key).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Value>().await.unwrap()["line"].clone()
}

/// Post a console form with the session's token; the response.
async fn act(visitor: &Visitor<'_>, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let csrf = visitor.csrf().await;
    let mut all = vec![("_csrf", csrf.as_str())];
    all.extend_from_slice(fields);
    visitor.post(path, &all).await
}

/// Create a sim line from the Lines page; its id.
async fn create_line(visitor: &Visitor<'_>) -> String {
    let created = act(visitor, "/console/lines", &[("engine", "sim")]).await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let location = created.headers()[LOCATION].to_str().unwrap().to_owned();
    location.strip_prefix("/console/lines/").expect("to the line's page").to_owned()
}

/// The actor of the line's events of type `event_type`.
async fn actors(app: &TestApp, line_id: &str, event_type: &str) -> Vec<Value> {
    sqlx::query_scalar("SELECT metadata -> 'actor' FROM events WHERE stream_id = $1 AND event_type = $2 ORDER BY global_position")
        .bind(line_id)
        .bind(event_type)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_developer_creates_scans_messages_disconnects_and_logs_out_a_sim_line() {
    let app = TestApp::spawn().await;
    let (account, _, key) = app.account("pro").await;
    let dev = user(&app, &account, "dev@example.com", "developer").await;
    let dev_id = user_id(&app, "dev@example.com").await;
    let console_user = serde_json::json!({"kind": "console_user", "user_id": dev_id});

    let empty = dev.get("/console/lines").await;
    assert_eq!(empty.status(), StatusCode::OK);
    assert!(empty.text().await.unwrap().contains("id=\"create-line\""));
    let line = create_line(&dev).await;
    assert_eq!(line_over_rest(&app, &key, &line).await["status"], "pending_qr");
    assert_eq!(actors(&app, &line, "line.created").await, vec![console_user.clone()]);
    let list = dev.get("/console/lines").await.text().await.unwrap();
    assert!(list.contains(&format!("data-line=\"{line}\"")), "{list}");

    // Waiting for a scan: the QR code as an image, its expiry, and a live part that polls.
    let page = dev.get(&format!("/console/lines/{line}")).await.text().await.unwrap();
    assert!(page.contains(&format!("data-poll=\"/console/lines/{line}/live\"")), "{page}");
    assert!(page.contains("data-test=\"qr\"") && page.contains("data-test=\"qr-expires\""), "{page}");
    assert!(page.contains("id=\"scan-form\"") && page.contains("id=\"inbound-form\"") && page.contains("id=\"disconnect-form\""));
    let qr = dev.get(&format!("/console/lines/{line}/qr.svg")).await;
    assert_eq!(qr.status(), StatusCode::OK);
    assert_eq!(qr.headers()[CONTENT_TYPE], "image/svg+xml");
    assert!(qr.text().await.unwrap().contains("<svg"));
    let live = dev.get(&format!("/console/lines/{line}/live")).await.text().await.unwrap();
    assert!(live.contains(">pending_qr<") && live.contains("data-test=\"qr\"") && !live.contains("<html"), "{live}");

    // A phone scans: the line connects, and the live part says so without its QR code.
    let scanned = act(&dev, &format!("/console/lines/{line}/scan"), &[("phone", "+34600000001")]).await;
    assert_eq!(scanned.status(), StatusCode::SEE_OTHER);
    assert_eq!(scanned.headers()[LOCATION], format!("/console/lines/{line}").as_str());
    let rest = line_over_rest(&app, &key, &line).await;
    assert_eq!((rest["status"].as_str(), rest["phone"].as_str()), (Some("connected"), Some("+34600000001")));
    assert_eq!(actors(&app, &line, "line.connected").await, vec![console_user.clone()]);
    let live = dev.get(&format!("/console/lines/{line}/live")).await.text().await.unwrap();
    assert!(live.contains(">connected<") && !live.contains("data-test=\"qr\""), "{live}");
    assert_eq!(dev.get(&format!("/console/lines/{line}/qr.svg")).await.status(), StatusCode::NOT_FOUND);

    // A message arrives: the page names it, and the API lists it.
    let received = act(&dev, &format!("/console/lines/{line}/inbound"), &[("from", "+34600000002"), ("message", "Hola")]).await;
    assert_eq!(received.status(), StatusCode::SEE_OTHER);
    let location = received.headers()[LOCATION].to_str().unwrap().to_owned();
    let message_id = location.split_once("?received=").expect("the message named").1.to_owned();
    let page = dev.get(&location).await.text().await.unwrap();
    assert!(page.contains("data-test=\"received\"") && page.contains(&message_id), "{page}");
    let messages: Value = app.get(&format!("/v1/messages?line_id={line}&phone=%2B34600000002"), &key).await.json().await.unwrap();
    assert_eq!(messages["messages"][0]["message_id"], message_id.as_str(), "{messages}");
    let spoofed = dev.get(&format!("/console/lines/{line}?received=%3Cscript%3E")).await.text().await.unwrap();
    assert!(!spoofed.contains("data-test=\"received\""), "only a message id is echoed");

    // The session drops.
    let dropped = act(&dev, &format!("/console/lines/{line}/disconnect"), &[("reason", "network")]).await;
    assert_eq!(dropped.status(), StatusCode::SEE_OTHER);
    assert_eq!(line_over_rest(&app, &key, &line).await["status"], "disconnected");

    // Logging out asks first; the question changes nothing.
    let before = event_count(&app).await;
    let question = dev.get(&format!("/console/lines/{line}/logout")).await;
    assert_eq!(question.status(), StatusCode::OK);
    assert!(question.text().await.unwrap().contains("data-test=\"logout-confirm\""));
    assert_eq!(event_count(&app).await, before);
    let confirmed = act(&dev, &format!("/console/lines/{line}/logout"), &[]).await;
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
    assert_eq!(line_over_rest(&app, &key, &line).await["status"], "logged_out");
    assert_eq!(actors(&app, &line, "line.logged_out").await, vec![console_user]);
    let page = dev.get(&format!("/console/lines/{line}")).await.text().await.unwrap();
    assert!(page.contains(">logged_out<") && !page.contains("data-poll") && !page.contains("id=\"scan-form\""), "{page}");
    app.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_shown_next_to_its_field_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let (account, _, key) = app.account("free").await;
    let owner = user(&app, &account, "owner@example.com", "owner").await;
    let before = event_count(&app).await;

    let bogus = act(&owner, "/console/lines", &[("engine", "bogus")]).await;
    assert_eq!(bogus.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = bogus.text().await.unwrap();
    assert!(html.contains("id=\"engine-error\"") && html.contains("Unknown engine `bogus`"), "{html}");
    assert_eq!(event_count(&app).await, before);

    let line = create_line(&owner).await;
    let before = event_count(&app).await;
    let over = act(&owner, "/console/lines", &[("engine", "sim")]).await;
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS, "the free plan has one line");
    assert!(over.text().await.unwrap().contains("data-test=\"create-error\""));

    let bad_phone = act(&owner, &format!("/console/lines/{line}/scan"), &[("phone", "not a phone")]).await;
    assert_eq!(bad_phone.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = bad_phone.text().await.unwrap();
    assert!(html.contains("id=\"scan-error\"") && html.contains("value=\"not a phone\""), "the value is kept: {html}");

    let not_connected =
        act(&owner, &format!("/console/lines/{line}/inbound"), &[("from", "+34600000002"), ("message", "Hola")]).await;
    assert_eq!(not_connected.status(), StatusCode::CONFLICT);
    let html = not_connected.text().await.unwrap();
    assert!(
        html.contains("id=\"inbound-error\"") && html.contains("not connected") && html.contains(">Hola</textarea>"),
        "{html}"
    );

    assert_eq!(event_count(&app).await, before, "nothing stored by refused actions");

    let (status, _) = app.post(&key, &format!("/v1/sandbox/lines/{line}/scan"), json!({"phone": "+34600000001"})).await;
    assert_eq!(status, StatusCode::OK);
    let before = event_count(&app).await;
    let inbound = format!("/console/lines/{line}/inbound");
    let no_sender = act(&owner, &inbound, &[("from", ""), ("message", "Hola")]).await;
    assert_eq!(no_sender.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(no_sender.text().await.unwrap().contains("id=\"inbound-from-error\""));
    let too_long = "x".repeat(4097);
    for text in ["", too_long.as_str()] {
        let refused = act(&owner, &inbound, &[("from", "+34600000002"), ("message", text)]).await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = refused.text().await.unwrap();
        assert!(html.contains("id=\"inbound-message-error\"") && html.contains("value=\"+34600000002\""), "{html}");
    }
    assert_eq!(event_count(&app).await, before, "nothing stored by refused messages");
    app.shutdown().await;
}

#[tokio::test]
async fn a_suspended_account_sees_its_lines_but_cannot_act_on_them() {
    let app = TestApp::spawn().await;
    let (account, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000001").await;
    let dev = user(&app, &account, "dev@example.com", "developer").await;
    assert!(app.cli(&["accounts", "suspend", &account]).await.ok());
    let before = event_count(&app).await;

    assert_eq!(dev.get("/console/lines").await.status(), StatusCode::OK, "reading is fine");
    assert_eq!(dev.get(&format!("/console/lines/{line}")).await.status(), StatusCode::OK);
    let actions: [(String, &[(&str, &str)]); 5] = [
        ("/console/lines".into(), &[("engine", "sim")]),
        (format!("/console/lines/{line}/scan"), &[("phone", "+34600000003")]),
        (format!("/console/lines/{line}/inbound"), &[("from", "+34600000002"), ("message", "Hola")]),
        (format!("/console/lines/{line}/disconnect"), &[]),
        (format!("/console/lines/{line}/logout"), &[]),
    ];
    for (path, fields) in actions {
        let refused = act(&dev, &path, fields).await;
        assert_eq!(refused.status(), StatusCode::PAYMENT_REQUIRED, "{path}");
        let html = refused.text().await.unwrap();
        assert!(html.contains("The Bridge subscription of this account is not active."), "{path}: {html}");
    }
    assert_eq!(event_count(&app).await, before);
    assert_eq!(status_in_projection(&app, &line).await, "connected");
    app.shutdown().await;
}

/// The line's status as the projection holds it (the account's keys get 402 while suspended).
async fn status_in_projection(app: &TestApp, line_id: &str) -> String {
    sqlx::query_scalar("SELECT status FROM lines WHERE line_id = $1").bind(line_id).fetch_one(&app.db.pool).await.unwrap()
}

#[tokio::test]
async fn another_accounts_line_is_a_404_on_every_lines_route_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let (_, _, victim_key) = app.account("pro").await;
    let (attacker, _, _) = app.account("pro").await;
    let connected = app.connected_line(&victim_key, "+34600000001").await;
    let (status, created) = app.post(&victim_key, "/v1/lines", json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let pending = created["line"]["line_id"].as_str().unwrap().to_owned();
    let owner = user(&app, &attacker, "attacker@example.com", "owner").await;
    let before = event_count(&app).await;

    // Every route of the Lines pages that names a line, with each kind of victim line.
    for line in [&connected, &pending] {
        let reads = ["", "/live", "/qr.svg", "/logout"];
        for suffix in reads {
            let path = format!("/console/lines/{line}{suffix}");
            let response = owner.get(&path).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "GET {path}");
            let html = response.text().await.unwrap();
            assert!(html.contains("There is no such line in this account."), "GET {path}: {html}");
        }
        let actions: [(&str, &[(&str, &str)]); 4] = [
            ("/scan", &[("phone", "+34600000999")]),
            ("/inbound", &[("from", "+34600000002"), ("message", "hi")]),
            ("/disconnect", &[]),
            ("/logout", &[]),
        ];
        for (suffix, fields) in actions {
            let path = format!("/console/lines/{line}{suffix}");
            let response = act(&owner, &path, fields).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "POST {path}");
            let html = response.text().await.unwrap();
            assert!(html.contains("There is no such line in this account."), "POST {path}: {html}");
        }
    }
    let list = owner.get("/console/lines").await.text().await.unwrap();
    assert!(!list.contains(&connected) && !list.contains(&pending));
    assert_eq!(event_count(&app).await, before, "nothing changed");
    assert_eq!(line_over_rest(&app, &victim_key, &connected).await["status"], "connected");
    assert_eq!(line_over_rest(&app, &victim_key, &pending).await["status"], "pending_qr");
    app.shutdown().await;
}

#[tokio::test]
async fn a_whatsapp_line_is_linked_from_its_page_by_qr_code_or_pairing_code() {
    use std::time::Duration;
    use wazion_bridge::engine::whatsapp::fake::{Call, FakeWhatsapp};
    use wazion_bridge::engine::whatsapp::seam::WaEvent;
    let fake = FakeWhatsapp::new();
    let app = TestApp::spawn_with_whatsapp(&fake, |_| {}).await;
    let (account, _, key) = app.account("pro").await;
    let dev = user(&app, &account, "dev@example.com", "developer").await;

    let created = act(&dev, "/console/lines", &[("engine", "whatsapp")]).await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let line = created.headers()[LOCATION].to_str().unwrap().strip_prefix("/console/lines/").unwrap().to_owned();
    let run = fake.run(&line, 1).await;
    run.emit(WaEvent::Qr { code: "2@console,code".into(), valid_for: Duration::from_secs(60) }).await;
    app.eventually("the page shows the session's QR code", Duration::from_secs(20), || async {
        dev.get(&format!("/console/lines/{line}")).await.text().await.unwrap().contains("data-test=\"qr\"")
    })
    .await;
    let page = dev.get(&format!("/console/lines/{line}")).await.text().await.unwrap();
    assert!(page.contains("id=\"pairing-form\"") && !page.contains("id=\"scan-form\""), "{page}");

    // A bad number is shown next to its field, and asks WhatsApp nothing.
    let refused = act(&dev, &format!("/console/lines/{line}/pairing-code"), &[("phone", "not a phone")]).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused = refused.text().await.unwrap();
    assert!(refused.contains("id=\"pairing-error\"") && refused.contains("value=\"not a phone\""), "{refused}");
    assert!(!fake.calls().iter().any(|c| matches!(c, Call::PairingCode { .. })));

    let coded = act(&dev, &format!("/console/lines/{line}/pairing-code"), &[("phone", "+34600000001")]).await;
    assert_eq!(coded.status(), StatusCode::OK);
    let coded = coded.text().await.unwrap();
    assert!(coded.contains("<strong class=\"pairing-code\" data-test=\"pairing-code-value\">ABCD2345</strong>"), "{coded}");
    assert!(fake.calls().contains(&Call::PairingCode { line_id: line.clone(), phone: "34600000001".into() }));

    // The codes run out: the page offers a new run, which starts the session again.
    run.emit(WaEvent::QrExhausted).await;
    app.eventually("the line's codes expired", Duration::from_secs(20), || async {
        dev.get(&format!("/console/lines/{line}")).await.text().await.unwrap().contains("data-test=\"new-qr\"")
    })
    .await;
    let restarted = act(&dev, &format!("/console/lines/{line}/new-qr"), &[]).await;
    assert_eq!(restarted.status(), StatusCode::SEE_OTHER);
    fake.run(&line, 2).await;
    assert_eq!(line_over_rest(&app, &key, &line).await["status"], "pending_qr");
    let dev_id = user_id(&app, "dev@example.com").await;
    assert_eq!(actors(&app, &line, "line.pairing_restarted").await, vec![json!({"kind": "console_user", "user_id": dev_id})]);
    app.shutdown().await;
}
