//! The console as a new user goes through it, in a real browser (common/browser.rs): connect a sim
//! line by scanning it through the sandbox and watch the page turn connected by itself; create an
//! API key and use it, rotate it and revoke it; register a webhook and test it; send a message with
//! the explorer and find it counted on the Usage page. Every step is done on the pages (only the
//! API calls a key is meant for are made from the test), and every page is saved as a screenshot
//! under `target/screenshots/`.

use crate::common::browser::Browser;
use crate::common::receiver::Receiver;
use crate::common::TestApp;
use crate::console_browser::{accept_invitation, invite_link};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// A new account on `plan` and its owner, signed in to the console in a browser of their own.
async fn new_owner(app: &TestApp, plan: &str) -> (String, Browser) {
    let (account, _, _) = app.account(plan).await;
    let link = invite_link(app, &account, "ana@example.com", "owner").await;
    let browser = Browser::start().await;
    accept_invitation(&browser, &link, "journey").await;
    (account, browser)
}

/// `GET /v1/me` with `key`: its status.
async fn me(app: &TestApp, key: &str) -> StatusCode {
    app.get("/v1/me", key).await.status()
}

/// The secret the API keys page shows once, after creating or rotating a key.
async fn shown_secret(browser: &Browser) -> String {
    let secret = browser.find_visible("[data-testid=secret-value]").await.property("value").await;
    let secret = secret.as_str().expect("the secret is text").to_owned();
    assert!(secret.starts_with("wzb_"), "an API key: {secret}");
    secret
}

/// Create a sim line on the Lines page and connect it by the page's sandbox scan; its id.
async fn connected_line_on_its_page(browser: &Browser, base: &str, phone: &str) -> String {
    browser.goto(&format!("{base}/console/lines")).await;
    browser.click("[data-test=create-line]").await;
    let page = browser.wait_for_url("a line's page", |url| url.contains("/console/lines/line_")).await;
    browser.fill("#scan-phone", phone).await;
    browser.click("[data-test=scan]").await;
    browser.wait_for_text("#line-live [data-test=line-status]", "connected").await;
    page.rsplit('/').next().unwrap().to_owned()
}

/// Create an API key named `name` on the API keys page; the secret it shows once.
async fn key_on_its_page(browser: &Browser, base: &str, name: &str) -> String {
    browser.goto(&format!("{base}/console/keys")).await;
    browser.fill("#key-name", name).await;
    browser.click("[data-testid=create-key]").await;
    shown_secret(browser).await
}

/// Send `text` from `line_id` to `to` with the explorer's sendMessage form and `key`; waits for the 200.
async fn send_with_the_explorer(browser: &Browser, base: &str, line_id: &str, to: &str, text: &str, key: &str) {
    browser.goto(&format!("{base}/console/explorer")).await;
    browser.wait_for_text("h1", "API explorer").await;
    browser.find("#op option[value=sendMessage]").await.click().await;
    browser.wait_for_text("[data-test=explorer-operation]", "/v1/messages/send").await;
    browser.fill("#f-body-line_id", line_id).await;
    browser.fill("#f-body-to", to).await;
    browser.fill("#f-body-message", text).await;
    browser.fill("#explorer-key", key).await;
    browser.click("[data-test=explorer-send]").await;
    browser.wait_for_text("[data-test=explorer-status]", "200").await;
}

#[tokio::test]
async fn a_sim_line_created_on_the_lines_page_connects_on_its_page_without_a_reload_when_scanned() {
    let app = TestApp::spawn().await;
    let (_, browser) = new_owner(&app, "pro").await;

    browser.goto(&app.url("/console/lines")).await;
    browser.wait_for_text("h1", "Lines").await;
    browser.screenshot("lines-empty").await;
    browser.click("[data-test=create-line]").await;
    let page = browser.wait_for_url("a line's page", |url| url.contains("/console/lines/line_")).await;
    let line_id = page.rsplit('/').next().unwrap().to_owned();
    assert_eq!(browser.text("#line-live [data-test=line-status]").await, "pending_qr");
    browser.find_visible("[data-test=qr] img").await;
    qr_code_loads(&browser).await;
    assert!(!browser.text("[data-test=qr-expires]").await.is_empty(), "the code's expiry is shown");
    browser.screenshot("line-qr").await;

    // Mark this page: a reload would lose the mark.
    browser.execute("window.__journey = 'not reloaded';", vec![]).await;
    let watching = browser.command(Method::GET, "/window", None).await.unwrap();

    // The phone scans: the sandbox form of the same page, in another tab.
    let tab = browser.command(Method::POST, "/window/new", Some(json!({"type": "tab"}))).await.unwrap();
    browser.command(Method::POST, "/window", Some(json!({"handle": tab["handle"]}))).await.unwrap();
    browser.goto(&page).await;
    browser.fill("#scan-phone", "+34600000001").await;
    browser.click("[data-test=scan]").await;
    browser.wait_for_text("#line-live [data-test=line-status]", "connected").await;
    browser.command(Method::DELETE, "/window", None).await.unwrap();
    browser.command(Method::POST, "/window", Some(json!({"handle": watching}))).await.unwrap();

    // The first page polls its live part: it turns connected, shows the number, drops the code.
    browser.wait_for_text("#line-live [data-test=line-status]", "connected").await;
    assert_eq!(browser.text("#line-live [data-test=line-phone]").await, "+34600000001");
    assert!(browser.try_find("[data-test=qr]").await.is_none(), "no QR code once connected");
    let mark = browser.execute("return window.__journey;", vec![]).await;
    assert_eq!(mark, json!("not reloaded"), "the page changed by itself, without a reload");
    browser.screenshot("line-connected").await;

    browser.goto(&app.url("/console/lines")).await;
    let row = format!("tr[data-line='{line_id}'] [data-test=line-status]");
    assert_eq!(browser.text(&row).await, "connected");
    browser.screenshot("lines").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_whatsapp_line_created_on_the_lines_page_shows_its_sessions_qr_code_a_pairing_code_and_turns_connected() {
    use wazion_bridge::engine::whatsapp::fake::FakeWhatsapp;
    use wazion_bridge::engine::whatsapp::seam::WaEvent;
    let fake = FakeWhatsapp::new();
    let app = TestApp::spawn_with_whatsapp(&fake, |_| {}).await;
    let (_, browser) = new_owner(&app, "pro").await;

    browser.goto(&app.url("/console/lines")).await;
    browser.click("#engine option[value=whatsapp]").await;
    browser.click("[data-test=create-line]").await;
    let page = browser.wait_for_url("a line's page", |url| url.contains("/console/lines/line_")).await;
    let line_id = page.rsplit('/').next().unwrap().to_owned();
    let run = fake.run(&line_id, 1).await;
    run.emit(WaEvent::Qr { code: "2@journey,code".into(), valid_for: std::time::Duration::from_secs(60) }).await;
    // The page polls its live part: the session's code appears without a reload.
    browser.find_visible("[data-test=qr] img").await;
    qr_code_loads(&browser).await;

    browser.fill("#pairing-phone", "+34600000001").await;
    browser.click("[data-test=pairing-code]").await;
    browser.wait_for_text("[data-test=pairing-code-value]", "ABCD2345").await;
    browser.execute("document.getElementById('pairing-h').scrollIntoView();", vec![]).await;
    browser.screenshot("whatsapp-line-pairing").await;

    // The phone links the device: the page turns connected by itself.
    run.emit(WaEvent::Paired { jid: "34600000001:2@s.whatsapp.net".into(), phone: "34600000001".into() }).await;
    run.emit(WaEvent::Connected).await;
    browser.wait_for_text("#line-live [data-test=line-status]", "connected").await;
    assert_eq!(browser.text("#line-live [data-test=line-phone]").await, "+34600000001");
    assert!(browser.try_find("[data-test=qr]").await.is_none(), "no QR code once connected");
    browser.screenshot("whatsapp-line-connected").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_created_on_the_keys_page_works_once_copied_then_rotated_and_revoked_it_stops() {
    let app = TestApp::spawn().await;
    let (_, browser) = new_owner(&app, "pro").await;

    browser.goto(&app.url("/console/keys")).await;
    browser.wait_for_text("h1", "API keys").await;
    browser.fill("#key-name", "journey").await;
    browser.click("[data-testid=create-key]").await;
    let first = shown_secret(&browser).await;
    let key_id = browser.attribute("[data-testid=key-secret]", "data-key").await.expect("the new key's id");
    browser.screenshot("key-created").await;
    assert_eq!(me(&app, &first).await, StatusCode::OK, "the secret shown works against GET /v1/me");

    // Shown once: the page again lists the key, used just now, without its secret.
    browser.goto(&app.url("/console/keys")).await;
    let row = format!("tr[data-key='{key_id}']");
    assert!(browser.try_find("[data-testid=secret-value]").await.is_none(), "the secret is not shown again");
    assert!(!browser.source().await.contains(&first), "nor anywhere in the page");
    assert_ne!(browser.text(&format!("{row} [data-testid=last-used]")).await, "never");
    browser.screenshot("keys").await;

    // Rotate with no grace: a new secret works, the old one stops at once.
    browser.find(&format!("{row} select[name=grace] option[value=none]")).await.click().await;
    browser.click(&format!("{row} [data-testid=rotate-key]")).await;
    browser.wait_for_text("[data-testid=old-secret-until]", "stopped working").await;
    let rotated = shown_secret(&browser).await;
    assert_ne!(rotated, first);
    browser.screenshot("key-rotated").await;
    assert_eq!(me(&app, &first).await, StatusCode::UNAUTHORIZED, "the old secret stopped");
    assert_eq!(me(&app, &rotated).await, StatusCode::OK, "the new secret works");

    // Revoke: a wrong confirmation is refused next to its field, and nothing changes.
    browser.goto(&app.url("/console/keys")).await;
    browser.fill(&format!("#confirm-{key_id}"), "yes").await;
    browser.click(&format!("{row} [data-testid=revoke-key]")).await;
    browser.find_visible(&format!("#revoke-error-{key_id}")).await;
    browser.screenshot("key-revoke-refused").await;
    assert_eq!(me(&app, &rotated).await, StatusCode::OK, "not revoked by a wrong confirmation");
    browser.fill(&format!("#confirm-{key_id}"), "journey").await;
    browser.click(&format!("{row} [data-testid=revoke-key]")).await;
    browser.wait_for_text(&format!("{row} [data-testid=key-status]"), "revoked").await;
    assert!(browser.try_find(&format!("{row} [data-testid=revoke-form]")).await.is_none(), "nothing left to do to it");
    browser.screenshot("key-revoked").await;
    assert_eq!(me(&app, &rotated).await, StatusCode::UNAUTHORIZED, "the revoked key stopped");
    assert_eq!(me(&app, &first).await, StatusCode::UNAUTHORIZED);
    app.shutdown().await;
}

#[tokio::test]
async fn a_webhook_registered_on_the_page_answers_its_test_inline_and_its_deliveries_appear_in_the_log() {
    let app = TestApp::spawn_with(|c| c.allow_private_urls = true).await;
    let receiver = Receiver::start().await;
    let (account, browser) = new_owner(&app, "pro").await;

    browser.goto(&app.url("/console/webhooks")).await;
    browser.wait_for_text("h1", "Webhooks").await;
    browser.fill("#url", &receiver.url).await;
    for event in browser.find_all("#webhook-create input[name=events]").await {
        if event.property("checked").await != json!(true) {
            event.click().await;
        }
    }
    browser.fill("#description", "my receiver").await;
    browser.click("#webhook-create button[type=submit]").await;
    let secret = browser.find_visible("[data-test=webhook-secret]").await.property("value").await;
    assert!(!secret.as_str().unwrap_or_default().is_empty(), "the signing secret is shown once");
    browser.screenshot("webhook-created").await;

    browser.click("[data-test=webhook-created] a").await;
    browser.wait_for_url("the webhook's page", |url| url.contains("/console/webhooks/")).await;
    assert_eq!(browser.text("[data-test=webhook-url]").await, receiver.url);
    browser.execute("window.__journey = 'not reloaded';", vec![]).await;
    browser.click("[data-test=send-test]").await;
    browser.wait_for_text("[data-test=attempt-outcome]", "delivered").await;
    assert_eq!(browser.text("[data-test=attempt-status]").await, "200");
    assert!(browser.text("[data-test=attempt-latency]").await.ends_with(" ms"));
    assert_eq!(browser.text("[data-test=attempt-error]").await, "none");
    let test = receiver.wait_for(1, std::time::Duration::from_secs(10)).await;
    assert_eq!(test.len(), 1, "one test event reached the receiver");

    // A real event of the account: its delivery appears in the log, which the page polls.
    let key = app.cli(&["keys", "create", "--account", &account, "--name", "api", "--json"]).await.json();
    app.connected_line(key["api_key"].as_str().unwrap(), "+34600000001").await;
    browser.wait_for_text("#deliveries [data-test=delivery-status]", "delivered").await;
    assert!(!browser.find_all("#deliveries [data-test=attempt]").await.is_empty(), "every attempt is listed");
    let mark = browser.execute("return window.__journey;", vec![]).await;
    assert_eq!(mark, json!("not reloaded"), "the test result and the log came without a reload");
    browser.screenshot("webhook").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_message_sent_with_the_explorer_answers_200_with_its_curl_line_and_is_counted_on_the_usage_page() {
    let app = TestApp::spawn().await;
    let (_, browser) = new_owner(&app, "pro").await;
    // A connected line and a key, made on their pages as the tests above do.
    let line_id = connected_line_on_its_page(&browser, &app.base, "+34600000001").await;
    let key = key_on_its_page(&browser, &app.base, "explorer").await;
    send_with_the_explorer(&browser, &app.base, &line_id, "+34600000002", "Hello from the explorer", &key).await;
    let body: serde_json::Value = serde_json::from_str(&browser.text("[data-test=explorer-body]").await).expect("JSON shown");
    assert!(body["message_id"].is_string(), "the message's id: {body}");
    let curl = browser.text("[data-test=explorer-curl]").await;
    assert!(curl.starts_with(&format!("curl -X POST '{}/", app.base)), "{curl}");
    assert!(curl.contains("/v1/messages/send' "), "{curl}");
    assert!(curl.contains("$BRIDGE_KEY") && !curl.contains(&key), "the curl line names the key, never shows it: {curl}");
    assert!(curl.contains("Hello from the explorer"), "{curl}");
    browser.screenshot("explorer").await;

    // Sent: the Usage page counts it today, in the table and in the chart (it is counted once the
    // line has sent it, so the page is opened again until then).
    let today = chrono::Utc::now().date_naive().to_string();
    let sent = format!("[data-test=usage-days] tr[data-day='{today}'] [data-test=sent]");
    browser
        .wait_until("the Usage page to count the message", std::time::Duration::from_secs(15), || async {
            browser.goto(&app.url("/console/usage")).await;
            let cell = browser.try_find(&sent).await?;
            (cell.text().await == "1").then_some(())
        })
        .await;
    let bar = browser.attribute(&format!("[data-test=usage-chart] rect.bar-sent[data-day='{today}']"), "data-value").await;
    assert_eq!(bar.as_deref(), Some("1"));
    browser.screenshot("usage").await;
    app.shutdown().await;
}

/// The walk-through, as a new user makes it: `bridge serve --demo`, open the sign-in link it
/// prints, and — without the CLI again — connect a sim line, create a key, add and test a webhook,
/// and send a message with the explorer.
#[tokio::test]
async fn from_serve_demo_a_new_user_connects_a_line_creates_a_key_tests_a_webhook_and_sends_with_the_explorer() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let db = crate::common::TestDb::new().await;
    let receiver = Receiver::start().await;
    let mut server = crate::common::bridge(&db)
        .args(["serve", "--demo"])
        .env("BRIDGE_LISTEN", "127.0.0.1:0")
        // The webhook receiver of this test listens on 127.0.0.1.
        .env("BRIDGE_ALLOW_PRIVATE_URLS", "true")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let link = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.find("http://").filter(|_| line.contains("/console/invite/")) {
                return line[at..].split_whitespace().next().unwrap().to_owned();
            }
        }
        panic!("serve --demo printed no console sign-in link");
    })
    .await
    .expect("serve --demo prints its sign-in link");
    let base = link[..link.find("/console/").unwrap()].to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let browser = Browser::start().await;
    // The link is printed as the server starts accepting: open it once it answers.
    let http = reqwest::Client::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while http.get(format!("{base}/api/bridge/v1/openapi.json")).send().await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the demo server answers");
    accept_invitation(&browser, &link, "demo").await;

    // A sim line, connected by a scan on its page.
    let line_id = connected_line_on_its_page(&browser, &base, "+34600000001").await;
    browser.screenshot("demo-line").await;

    // An API key, shown once.
    let key = key_on_its_page(&browser, &base, "first").await;
    browser.screenshot("demo-key").await;

    // A webhook to the receiver, tested from its page.
    browser.goto(&format!("{base}/console/webhooks")).await;
    browser.fill("#url", &receiver.url).await;
    browser.click("#webhook-create button[type=submit]").await;
    browser.find_visible("[data-test=webhook-secret]").await;
    browser.click("[data-test=webhook-created] a").await;
    browser.wait_for_url("the webhook's page", |url| url.contains("/console/webhooks/")).await;
    browser.click("[data-test=send-test]").await;
    browser.wait_for_text("[data-test=attempt-outcome]", "delivered").await;
    browser.screenshot("demo-webhook").await;
    let tested =
        receiver.wait_for_body("the test event", std::time::Duration::from_secs(10), |b| b["event"] == "webhook.test").await;
    assert_eq!(tested.json()["line_id"], line_id.as_str(), "the test event names the account's line");

    // A message, sent with the explorer and the key.
    send_with_the_explorer(&browser, &base, &line_id, "+34600000002", "Hello from the demo", &key).await;
    browser.screenshot("demo-explorer").await;

    // What the user did is what the API says: the message is there, sent from that line.
    let listed: serde_json::Value = http
        .get(format!("{base}/api/bridge/v1/messages?line_id={line_id}&phone=%2B34600000002"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["messages"][0]["text"], "Hello from the demo", "{listed}");
    server.kill().await.ok();
}

/// Await the QR code's image having loaded (shown is not loaded: the SVG arrives after the element
/// does, and the live part may put a new element in its place meanwhile).
async fn qr_code_loads(browser: &Browser) {
    let script = "const img = document.querySelector('[data-test=qr] img'); \
                  return !!img && img.complete && img.naturalWidth > 0;";
    browser
        .wait_until("the QR code's SVG to load", std::time::Duration::from_secs(10), || async {
            (browser.execute(script, vec![]).await == json!(true)).then_some(())
        })
        .await;
}
