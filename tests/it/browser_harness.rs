//! The browser harness itself (common/browser.rs), proven on a tiny site of the test's own: a real
//! headless Chromium fills and submits a form, waits for what a script fetches, runs a script,
//! reads the cookies it was given with their flags, and saves screenshots.

use crate::common::browser::{screenshots_dir, Browser};
use axum::http::header::{CONTENT_TYPE, SET_COOKIE};
use axum::response::{AppendHeaders, Html, IntoResponse};
use axum::routing::get;
use futures_util::FutureExt as _;
use serde_json::json;
use std::time::Duration;

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Harness page</title></head>
<body>
<h1>Harness</h1>
<form method="post" action="/greet">
  <label>Name <input id="name" name="name" value="placeholder"></label>
  <button id="send" type="submit">Send</button>
</form>
<button id="fetch" type="button">Fetch a message</button>
<p id="fetched" hidden></p>
<script>
document.getElementById('fetch').addEventListener('click', async () => {
  const answer = await (await fetch('/message')).json();
  const p = document.getElementById('fetched');
  p.textContent = answer.message;
  p.hidden = false;
});
</script>
</body></html>"#;

/// The site: the page, a JSON message its script fetches, and a form target that greets by name
/// and sets one cookie with every protective flag and one without.
async fn site() -> String {
    let app = axum::Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/message", get(|| async { ([(CONTENT_TYPE, "application/json")], r#"{"message":"fetched by the page"}"#) }))
        .route(
            "/greet",
            axum::routing::post(|body: String| async move {
                let name = url::form_urlencoded::parse(body.as_bytes())
                    .find(|(k, _)| k == "name")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let escaped = name.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
                (
                    AppendHeaders([
                        (SET_COOKIE, "__Host-probe=secret; Path=/; Secure; HttpOnly; SameSite=Strict"),
                        (SET_COOKIE, "plain=visible; Path=/; SameSite=Lax"),
                    ]),
                    Html(format!("<!doctype html><title>Greeted</title><p id=\"greeting\">Hello, {escaped}</p>")),
                )
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn a_real_browser_fills_a_form_awaits_a_script_and_reads_cookie_flags() {
    let base = site().await;
    let browser = Browser::start().await;

    browser.goto(&format!("{base}/")).await;
    assert_eq!(browser.title().await, "Harness page");
    assert_eq!(browser.current_url().await, format!("{base}/"));
    assert_eq!(browser.attribute("#name", "name").await.as_deref(), Some("name"));
    assert_eq!(browser.find("#name").await.property("value").await, "placeholder");
    let shot = browser.screenshot("form").await;
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000, "{} is a PNG of the page", shot.display());
    assert_eq!(shot.parent().unwrap(), screenshots_dir());
    assert!(
        shot.file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with("a_real_browser_fills_a_form_awaits_a_script_and_reads_cookie_flags-form.png"),
        "named after the test and the shot: {}",
        shot.display()
    );

    // A script's work appears later: the lookup waits until it is visible.
    assert!(!browser.find("#fetched").await.displayed().await);
    browser.click("#fetch").await;
    assert_eq!(browser.find_visible("#fetched").await.text().await, "fetched by the page");
    assert_eq!(browser.attribute("#fetched", "hidden").await, None);
    let sum = browser
        .execute("return arguments[0] + arguments[1] + document.querySelectorAll('button').length;", vec![json!(40), json!(0)])
        .await;
    assert_eq!(sum, 42);
    let fetched = browser.execute("return arguments[0].textContent;", vec![browser.find("#fetched").await.as_arg()]).await;
    assert_eq!(fetched, "fetched by the page");

    // Clear what the field held, type, submit; the answer is a new page.
    browser.fill("#name", "Ada <Lovelace>").await;
    assert_eq!(browser.find("#name").await.property("value").await, "Ada <Lovelace>");
    browser.click("#send").await;
    browser.wait_for_url("the greeting", |url| url.ends_with("/greet")).await;
    assert_eq!(browser.wait_for_text("#greeting", "Hello").await, "Hello, Ada <Lovelace>");
    browser.screenshot("greeted").await;

    let probe = browser.cookie("__Host-probe").await.expect("the browser keeps the __Host- cookie on 127.0.0.1");
    assert_eq!(probe.value, "secret");
    assert!(probe.secure && probe.http_only, "{probe:?}");
    assert_eq!(probe.same_site.as_deref(), Some("Strict"));
    assert_eq!((probe.path.as_str(), probe.expiry), ("/", None), "a session cookie of the whole site");
    let plain = browser.cookie("plain").await.unwrap();
    assert!(!plain.secure && !plain.http_only, "{plain:?}");
    assert_eq!(plain.same_site.as_deref(), Some("Lax"));
    // What the flags mean to the page: its scripts cannot read an HttpOnly cookie.
    let readable = browser.execute("return document.cookie;", vec![]).await;
    assert_eq!(readable, "plain=visible");

    browser.back().await;
    browser.wait_for_url("the form again", |url| url == format!("{base}/")).await;
    assert!(browser.try_find("#greeting").await.is_none());
    browser.delete_cookies().await;
    assert!(browser.cookies().await.is_empty());
}

#[tokio::test]
async fn a_condition_that_never_holds_fails_with_what_was_awaited_and_a_screenshot() {
    let shot = screenshots_dir()
        .join("browser_harness.a_condition_that_never_holds_fails_with_what_was_awaited_and_a_screenshot-timed-out.png");
    let _ = std::fs::remove_file(&shot);
    let base = site().await;
    let browser = Browser::start().await;
    browser.goto(&format!("{base}/")).await;

    let waited = std::panic::AssertUnwindSafe(browser.wait_until(
        "a heading that never comes",
        Duration::from_millis(300),
        || async { browser.try_find("h2").await },
    ))
    .catch_unwind()
    .await;
    let Err(panic) = waited else { panic!("the wait succeeded") };
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("timed out after 300ms waiting for a heading that never comes"), "{message}");
    assert!(message.contains(&shot.display().to_string()), "{message}");
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));
}

#[tokio::test]
async fn dropping_the_browser_ends_chromium() {
    let browser = Browser::start().await;
    let pid = browser.browser_pid().expect("the session names Chromium's process");
    let alive = |pid: i32| {
        // A process that has exited but is not yet reaped is a zombie: ended too.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
    };
    assert!(alive(pid), "Chromium runs while the browser is held");
    drop(browser);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(tokio::time::Instant::now() < deadline, "Chromium ({pid}) still runs after the browser was dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
