//! The console in a real browser (headless Chromium through WebDriver, common/browser.rs): what a
//! person sees and what the browser itself enforces. A user invited with `bridge users invite`
//! sets a password on the invitation page and signs in; the session cookie's flags as the browser
//! holds them; a page of another origin that posts a form to the console is refused; sign-in is
//! rate-limited; a developer cannot manage users. Every page visited is saved as a screenshot
//! under `target/screenshots/`.

use crate::common::browser::Browser;
use crate::common::TestApp;
use axum::response::Html;
use std::time::Duration;

const PASSWORD: &str = "correct horse battery";
const SESSION_COOKIE: &str = "__Host-wzb_session";

/// `bridge users invite`; the printed one-time link, moved to this test's server (the CLI prints
/// it with the configured listen address).
pub(crate) async fn invite_link(app: &TestApp, account: &str, email: &str, role: &str) -> String {
    let out = app.cli(&["users", "invite", "--account", account, "--email", email, "--role", role, "--json"]).await.json();
    let link = out["link"].as_str().expect("the invitation's link");
    let path = &link[link.find("/console/invite/").unwrap_or_else(|| panic!("an invitation link: {link}"))..];
    app.url(path)
}

/// Follow an invitation link in `browser`, set the password, and land on the overview, signed in.
pub(crate) async fn accept_invitation(browser: &Browser, link: &str, shot: &str) {
    browser.goto(link).await;
    browser.find_visible("#confirm").await;
    browser.screenshot(&format!("{shot}-invitation")).await;
    browser.type_into("#password", PASSWORD).await;
    browser.type_into("#confirm", PASSWORD).await;
    browser.click("main form button[type=submit]").await;
    browser.wait_for_text("h1", "Overview").await;
    browser.screenshot(&format!("{shot}-overview")).await;
}

/// Type an email and a password into the sign-in page and submit it; the page's heading after.
async fn sign_in(browser: &Browser, app: &TestApp, email: &str, password: &str) -> String {
    browser.goto(&app.url("/console/sign-in")).await;
    browser.fill("#email", email).await;
    browser.fill("#password", password).await;
    let before = browser.find("h1").await;
    browser.click("main form button[type=submit]").await;
    // The answer is a new page: wait until the old heading has left.
    browser
        .wait_until("the answer to the sign-in", Duration::from_secs(15), || async { (!before.displayed().await).then_some(()) })
        .await;
    browser.text("h1").await
}

#[tokio::test]
async fn an_invited_user_sets_a_password_signs_in_and_holds_a_strict_host_only_cookie() {
    let app = TestApp::spawn().await;
    let (account, _, _) = app.account("pro").await;
    let link = invite_link(&app, &account, "ana@example.com", "owner").await;
    let browser = Browser::start().await;

    browser.goto(&app.url("/console")).await;
    browser.wait_for_url("the sign-in page", |url| url.ends_with("/console/sign-in")).await;
    browser.screenshot("signed-out").await;
    assert!(browser.cookie(SESSION_COOKIE).await.is_none());

    accept_invitation(&browser, &link, "owner").await;
    assert_eq!(browser.current_url().await, app.url("/console"));
    assert_eq!(browser.text("[data-testid=account-name]").await, "Acme Ltd");
    assert_eq!(browser.text("[data-testid=user-email]").await, "ana@example.com");
    assert_eq!(browser.text("[data-testid=plan]").await, "pro");

    // The flags as the browser itself holds them.
    let cookie = browser.cookie(SESSION_COOKIE).await.expect("the session cookie");
    assert!(cookie.secure, "Secure: {cookie:?}");
    assert!(cookie.http_only, "HttpOnly: {cookie:?}");
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"), "{cookie:?}");
    assert_eq!(cookie.path, "/", "{cookie:?}");
    assert_eq!(cookie.domain, "127.0.0.1", "host-only, for this host alone: {cookie:?}");
    assert_eq!(cookie.expiry, None, "ends with the browser: {cookie:?}");
    assert_eq!(cookie.value.len(), 64, "{cookie:?}");
    let readable = browser.execute("return document.cookie;", vec![]).await;
    assert!(!readable.as_str().unwrap_or_default().contains(SESSION_COOKIE), "scripts cannot read it: {readable}");

    // The link worked once.
    browser.goto(&link).await;
    assert!(browser.wait_for_text("[data-testid=error-message]", "not valid").await.contains("used already"));
    browser.screenshot("link-used").await;

    // Sign out: the cookie is gone and the console asks to sign in again; the password signs in.
    browser.goto(&app.url("/console")).await;
    browser.click("form[action='/console/sign-out'] button").await;
    browser.wait_for_url("the sign-in page", |url| url.ends_with("/console/sign-in")).await;
    assert!(browser.cookie(SESSION_COOKIE).await.is_none(), "signed out, no session cookie");
    browser.goto(&app.url("/console")).await;
    browser.wait_for_url("the sign-in page again", |url| url.ends_with("/console/sign-in")).await;
    assert_eq!(sign_in(&browser, &app, "ana@example.com", PASSWORD).await, "Overview");
    browser.screenshot("signed-in-again").await;
    app.shutdown().await;
}

/// A site of another origin (another port of 127.0.0.1: same site, so the `SameSite=Strict`
/// cookie still goes with its requests) with a page that posts a form to `target` as soon as it
/// loads, carrying `fields` as hidden inputs.
async fn forging_site(target: &str, fields: &[(&str, &str)]) -> String {
    let inputs: String =
        fields.iter().map(|(name, value)| format!("<input type=\"hidden\" name=\"{name}\" value=\"{value}\">")).collect();
    let page = format!(
        "<!doctype html><title>Win a prize</title><form id=\"forged\" method=\"post\" action=\"{target}\">{inputs}</form>\
         <script>document.getElementById('forged').submit();</script>"
    );
    let app = axum::Router::new().route("/", axum::routing::get(move || async move { Html(page) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn a_form_posted_from_another_origin_is_refused_even_with_the_session_and_its_token() {
    let app = TestApp::spawn().await;
    let (account, _, _) = app.account("pro").await;
    let link = invite_link(&app, &account, "ana@example.com", "owner").await;
    let browser = Browser::start().await;
    accept_invitation(&browser, &link, "owner").await;
    // The forger is given everything but the origin: even this session's own form token.
    let token = browser.attribute("form[action='/console/sign-out'] input[name=_csrf]", "value").await.expect("a form token");

    let forger =
        forging_site(&app.url("/console/users"), &[("_csrf", &token), ("email", "mallory@evil.example"), ("role", "owner")])
            .await;
    browser.goto(&format!("{forger}/")).await;
    browser.wait_for_url("the console's answer to the forged form", |url| url == app.url("/console/users")).await;
    assert_eq!(browser.text("h1").await, "Request refused");
    assert!(browser.text("[data-testid=error-message]").await.contains("did not come from a page of this console"));
    browser.screenshot("cross-origin-refused").await;

    // Nothing was done, and the session still works.
    browser.goto(&app.url("/console/users")).await;
    assert_eq!(browser.wait_for_text("h1", "Users").await, "Users");
    browser.screenshot("users").await;
    assert!(!browser.text("main table").await.contains("mallory@evil.example"), "no user was invited");
    let invited: i64 = sqlx::query_scalar("SELECT count(*) FROM console_users WHERE email LIKE '%evil.example'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(invited, 0);

    // The same form from the console's own page is accepted.
    browser.fill("main form[action='/console/users'] #email", "bob@example.com").await;
    browser.click("main form[action='/console/users'] button[type=submit]").await;
    assert!(browser.wait_for_text("[data-testid=invite-link]", "bob@example.com").await.contains("one-time link"));
    browser.screenshot("invited").await;
    app.shutdown().await;
}

#[tokio::test]
async fn sign_in_is_rate_limited_and_answers_unknown_emails_and_wrong_passwords_alike() {
    let app = TestApp::spawn_with(|c| {
        c.console.sign_in_per_email = wazion_bridge::config::RateLimit { per_second: 1.0 / 3600.0, burst: 3 };
    })
    .await;
    let (account, _, _) = app.account("pro").await;
    let link = invite_link(&app, &account, "ana@example.com", "owner").await;
    let browser = Browser::start().await;
    accept_invitation(&browser, &link, "owner").await;
    browser.delete_cookies().await;

    let heading = sign_in(&browser, &app, "nobody@example.com", PASSWORD).await;
    let unknown = browser.text("[data-testid=error-message]").await;
    browser.screenshot("unknown-email").await;
    assert_eq!(sign_in(&browser, &app, "ana@example.com", "wrong password").await, heading);
    let wrong = browser.text("[data-testid=error-message]").await;
    assert_eq!(unknown, wrong, "the same answer for an unknown email and a wrong password");
    assert_eq!(browser.find("#email").await.property("value").await, "ana@example.com", "the email is kept");
    assert!(browser.cookie(SESSION_COOKIE).await.is_none());

    // Three attempts for this email within the limit; the fourth is refused, even with the
    // right password.
    assert_eq!(sign_in(&browser, &app, "ana@example.com", "wrong again").await, heading);
    assert_eq!(sign_in(&browser, &app, "ana@example.com", "wrong once more").await, heading);
    assert_eq!(sign_in(&browser, &app, "ana@example.com", PASSWORD).await, "Too many attempts");
    browser.screenshot("rate-limited").await;
    assert!(browser.text("[data-testid=error-message]").await.contains("Too many sign-in attempts"));
    assert!(browser.cookie(SESSION_COOKIE).await.is_none(), "no session while limited");
    // Another email is not held back by this one's attempts.
    assert_eq!(sign_in(&browser, &app, "nobody-else@example.com", PASSWORD).await, heading);
    app.shutdown().await;
}

#[tokio::test]
async fn a_developer_cannot_manage_users() {
    let app = TestApp::spawn().await;
    let (account, _, _) = app.account("pro").await;
    let owner_link = invite_link(&app, &account, "ana@example.com", "owner").await;
    let owner = Browser::start().await;
    accept_invitation(&owner, &owner_link, "owner").await;

    // The owner invites a developer from the console; the developer follows the link shown.
    owner.goto(&app.url("/console/users")).await;
    owner.fill("main form[action='/console/users'] #email", "dev@example.com").await;
    owner.click("main form[action='/console/users'] #role option[value=developer]").await;
    owner.click("main form[action='/console/users'] button[type=submit]").await;
    owner.wait_for_text("[data-testid=invite-link]", "dev@example.com").await;
    owner.screenshot("invited-developer").await;
    let developer_link = owner.attribute("[data-testid=invite-link] input", "value").await.expect("the link");
    assert!(developer_link.contains("/console/invite/"), "{developer_link}");

    let developer = Browser::start().await;
    accept_invitation(&developer, &developer_link, "developer").await;
    assert!(developer.text("header").await.contains("(developer)"));

    developer.goto(&app.url("/console/users")).await;
    assert_eq!(developer.wait_for_text("h1", "Not allowed").await, "Not allowed");
    assert!(developer.text("[data-testid=error-message]").await.contains("Only owners"));
    developer.screenshot("users-refused").await;
    assert!(developer.try_find("main form[action='/console/users']").await.is_none(), "no invitation form");
    app.shutdown().await;
}
