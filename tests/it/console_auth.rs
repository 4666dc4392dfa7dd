//! The console's sign-in: invitations and one-time links, sessions and their cookie, CSRF,
//! sign-in rate limits, roles, events without secrets, and one account never seeing another's.
//! Real server, real HTTP, cookies handled by hand (no browser needed here).

use crate::common::console::{invite, session_set_cookie, user, user_id, Visitor, PASSWORD};
use crate::common::TestApp;
use reqwest::header::LOCATION;
use reqwest::StatusCode;
use std::time::Duration;

#[tokio::test]
async fn an_invitation_sets_a_password_and_signs_in_with_the_cookie_as_specified() {
    let app = TestApp::spawn().await;
    let (account, _, _) = app.account("pro").await;
    let path = invite(&app, &account, "Ana@Example.com", "owner").await;
    let mut visitor = Visitor::new(&app);

    assert_eq!(visitor.get("/console").await.headers()[LOCATION], "/console/sign-in", "signed out: to the sign-in page");
    let form = visitor.get(&path).await;
    assert_eq!(form.status(), StatusCode::OK);
    let html = form.text().await.unwrap();
    assert!(html.contains("ana@example.com") && html.contains("at least 10 characters"), "{html}");

    let short = visitor.post(&path, &[("password", "short"), ("confirm", "short")]).await;
    assert_eq!(short.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(short.text().await.unwrap().contains("id=\"password-error\""));

    let response = visitor.post(&path, &[("password", PASSWORD), ("confirm", PASSWORD)]).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/console");
    let cookie = session_set_cookie(&response).expect("a session cookie");
    let (pair, flags) = cookie.split_once("; ").unwrap();
    assert_eq!(pair.len(), "__Host-wzb_session=".len() + 64);
    assert_eq!(flags, "Secure; HttpOnly; SameSite=Strict; Path=/");
    visitor.keep_cookie(&response);

    let overview = visitor.get("/console").await;
    assert_eq!(overview.status(), StatusCode::OK);
    assert_eq!(overview.headers()["cache-control"], "no-store");
    let html = overview.text().await.unwrap();
    assert!(html.contains("data-testid=\"account-name\">Acme Ltd<"), "{html}");
    assert!(html.contains("data-testid=\"plan\">pro<"), "{html}");
    assert!(html.contains("data-metric=\"sent_messages\""), "{html}");

    assert_eq!(Visitor::new(&app).get(&path).await.status(), StatusCode::NOT_FOUND, "the link works once");
    let mut again = Visitor::new(&app);
    assert_eq!(again.sign_in("ana@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    assert!(again.signed_in().await, "the password signs in");
    app.shutdown().await;
}

async fn user_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM console_users").fetch_one(&app.db.pool).await.unwrap()
}

#[tokio::test]
async fn a_session_unused_for_the_idle_timeout_ends() {
    let app = TestApp::spawn_with(|c| c.console.session_idle_minutes = 1.0 / 60.0).await;
    let (account, _, _) = app.account("free").await;
    let visitor = user(&app, &account, "idle@example.com", "owner").await;
    assert!(visitor.signed_in().await, "a fresh session works");

    // Wait until the session has been idle past the timeout, by watching it (not touching it).
    let pool = app.db.pool.clone();
    app.eventually("the session to be idle for a second", Duration::from_secs(10), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT bool_and(last_seen_at <= now() - interval '1 second') FROM console_sessions")
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    })
    .await;
    let response = visitor.get("/console").await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/console/sign-in");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM console_sessions").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(left, 0, "the ended session is forgotten");
    app.shutdown().await;
}

#[tokio::test]
async fn state_changes_from_another_site_or_without_the_form_token_are_refused_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (account, _, _) = app.account("pro").await;
    let owner = user(&app, &account, "owner@example.com", "owner").await;
    let csrf = owner.csrf().await;
    let before = user_count(&app).await;
    let invite = [("_csrf", csrf.as_str()), ("email", "new@example.com"), ("role", "developer")];

    let cross_origin = owner
        .with_cookie(owner.http.post(app.url("/console/users")).header("Origin", "https://evil.example"))
        .form(&invite)
        .send()
        .await
        .unwrap();
    assert_eq!(cross_origin.status(), StatusCode::FORBIDDEN);
    assert!(cross_origin.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(cross_origin.text().await.unwrap().contains("did not come from a page of this console"));
    let cross_site = owner
        .with_cookie(
            owner.http.post(app.url("/console/users")).header("Sec-Fetch-Site", "cross-site").header("Origin", &app.base),
        )
        .form(&invite)
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let no_headers = owner
        .with_cookie(owner.http.post(app.url("/console/sign-out-everywhere")))
        .form(&[("_csrf", &csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(no_headers.status(), StatusCode::FORBIDDEN, "neither Origin nor Sec-Fetch-Site: refused");

    let without_token = owner.post("/console/users", &[("email", "new@example.com"), ("role", "developer")]).await;
    assert_eq!(without_token.status(), StatusCode::FORBIDDEN);
    let wrong_token =
        owner.post("/console/users", &[("_csrf", &"0".repeat(64)), ("email", "new@example.com"), ("role", "developer")]).await;
    assert_eq!(wrong_token.status(), StatusCode::FORBIDDEN);
    let signed_out = owner.post("/console/sign-out", &[]).await;
    assert_eq!(signed_out.status(), StatusCode::FORBIDDEN, "even signing out needs the token");
    assert_eq!(user_count(&app).await, before, "nothing was invited");
    assert!(owner.signed_in().await, "nothing ended the session");

    let accepted = owner.post("/console/users", &invite).await;
    assert_eq!(accepted.status(), StatusCode::OK);
    assert!(accepted.text().await.unwrap().contains("/console/invite/"), "the new link is shown once");
    assert_eq!(user_count(&app).await, before + 1);
    app.shutdown().await;
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_are_answered_alike() {
    let app = TestApp::spawn().await;
    let (account, _, _) = app.account("free").await;
    user(&app, &account, "known@example.com", "owner").await;
    let mut visitor = Visitor::new(&app);
    let unknown = visitor.sign_in("nobody@example.com", PASSWORD).await;
    let (unknown_status, unknown_cookie) = (unknown.status(), session_set_cookie(&unknown));
    let unknown_body = unknown.text().await.unwrap().replace("nobody@example.com", "EMAIL");
    let wrong = visitor.sign_in("known@example.com", "not the password").await;
    let (wrong_status, wrong_cookie) = (wrong.status(), session_set_cookie(&wrong));
    let wrong_body = wrong.text().await.unwrap().replace("known@example.com", "EMAIL");
    assert_eq!(unknown_status, StatusCode::UNAUTHORIZED);
    assert_eq!((unknown_status, unknown_cookie, &unknown_body), (wrong_status, wrong_cookie, &wrong_body));
    assert!(unknown_body.contains("The email or password is not right."));
    assert!(!visitor.signed_in().await);
    app.shutdown().await;
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_email_and_per_address() {
    let app = TestApp::spawn_with(|c| {
        c.console.sign_in_per_email = wazion_bridge::config::RateLimit { per_second: 1.0 / 3600.0, burst: 3 };
        c.console.sign_in_per_address = wazion_bridge::config::RateLimit { per_second: 1.0 / 3600.0, burst: 6 };
    })
    .await;
    let (account, _, _) = app.account("free").await;
    user(&app, &account, "limited@example.com", "owner").await;
    let mut visitor = Visitor::new(&app);
    for _ in 0..3 {
        assert_eq!(visitor.sign_in("limited@example.com", "wrong password").await.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = visitor.sign_in("Limited@Example.com", PASSWORD).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS, "even the right password, in any case, waits");
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    assert!(limited.text().await.unwrap().contains("Too many sign-in attempts"));
    assert!(!visitor.signed_in().await);

    // The address has counted four attempts (the refused one too): two more for other emails,
    // then the address's own limit.
    for n in 0..2 {
        let status = visitor.sign_in(&format!("other{n}@example.com"), "x").await.status();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(visitor.sign_in("other9@example.com", "x").await.status(), StatusCode::TOO_MANY_REQUESTS);
    app.shutdown().await;
}

#[tokio::test]
async fn developers_cannot_open_the_users_page_and_owners_change_roles() {
    let app = TestApp::spawn().await;
    let (account, _, _) = app.account("pro").await;
    let owner = user(&app, &account, "boss@example.com", "owner").await;
    let developer = user(&app, &account, "dev@example.com", "developer").await;

    let refused = developer.get("/console/users").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(refused.text().await.unwrap().contains("Only owners"));
    let csrf = developer.csrf().await;
    let invite = developer.post("/console/users", &[("_csrf", &csrf), ("email", "x@example.com"), ("role", "owner")]).await;
    assert_eq!(invite.status(), StatusCode::FORBIDDEN);

    let page = owner.get("/console/users").await.text().await.unwrap();
    assert!(page.contains("dev@example.com") && page.contains("boss@example.com"));
    let dev_id = user_id(&app, "dev@example.com").await;
    let owner_csrf = owner.csrf().await;
    let promoted = owner.post(&format!("/console/users/{dev_id}/role"), &[("_csrf", &owner_csrf), ("role", "owner")]).await;
    assert_eq!(promoted.status(), StatusCode::SEE_OTHER);
    assert_eq!(developer.get("/console/users").await.status(), StatusCode::OK, "the new role holds at once");
    app.shutdown().await;
}

#[tokio::test]
async fn signing_out_everywhere_ends_every_session_of_the_user() {
    let app = TestApp::spawn().await;
    let (account, _, _) = app.account("free").await;
    let phone = user(&app, &account, "many@example.com", "developer").await;
    let mut laptop = Visitor::new(&app);
    assert_eq!(laptop.sign_in("many@example.com", PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let colleague = user(&app, &account, "colleague@example.com", "developer").await;
    assert!(phone.signed_in().await && laptop.signed_in().await);

    let csrf = laptop.csrf().await;
    let out = laptop.post("/console/sign-out-everywhere", &[("_csrf", &csrf)]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(session_set_cookie(&out).unwrap().contains("Max-Age=0"), "the cookie is cleared");
    assert!(!laptop.signed_in().await);
    assert!(!phone.signed_in().await, "the other device is signed out too");
    assert!(colleague.signed_in().await, "other users stay signed in");

    let mut again = Visitor::new(&app);
    again.sign_in("many@example.com", PASSWORD).await;
    let csrf = again.csrf().await;
    assert_eq!(again.post("/console/sign-out", &[("_csrf", &csrf)]).await.status(), StatusCode::SEE_OTHER);
    assert!(!again.signed_in().await, "sign-out ends that session");
    app.shutdown().await;
}

#[tokio::test]
async fn console_user_changes_are_events_with_the_user_as_actor_and_no_secret() {
    let app = TestApp::spawn().await;
    let (account, _, _) = app.account("pro").await;
    let invite_path = invite(&app, &account, "audited@example.com", "owner").await;
    let invite_token = invite_path.rsplit('/').next().unwrap().to_owned();
    let mut owner = Visitor::new(&app);
    let response = owner.post(&invite_path, &[("password", PASSWORD), ("confirm", PASSWORD)]).await;
    owner.keep_cookie(&response);
    let session_token = owner.cookie.clone().unwrap().split_once('=').unwrap().1.to_owned();
    let dev = user(&app, &account, "second@example.com", "developer").await;
    drop(dev);
    let dev_id = user_id(&app, "second@example.com").await;
    let csrf = owner.csrf().await;
    owner.post(&format!("/console/users/{dev_id}/role"), &[("_csrf", &csrf), ("role", "owner")]).await;
    let reset = app.cli(&["users", "reset-link", "audited@example.com", "--json"]).await.json();
    let reset_token = reset["link"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();

    let owner_id = user_id(&app, "audited@example.com").await;
    let rows: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT event_type, metadata FROM events WHERE stream_type = 'console_user' AND stream_id = $1 ORDER BY global_position",
    )
    .bind(&owner_id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let kinds: Vec<(&str, &str)> = rows.iter().map(|(t, m)| (t.as_str(), m["actor"]["kind"].as_str().unwrap())).collect();
    assert_eq!(
        kinds,
        [
            ("console_user.invited", "operator"),
            ("console_user.password_set", "console_user"),
            ("console_user.signed_in", "console_user"),
            ("console_user.reset_link_issued", "operator"),
        ]
    );
    assert_eq!(rows[2].1["actor"]["user_id"], owner_id.as_str());
    let role_change: serde_json::Value =
        sqlx::query_scalar("SELECT metadata FROM events WHERE stream_id = $1 AND event_type = 'console_user.role_changed'")
            .bind(&dev_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(role_change["actor"], serde_json::json!({"kind": "console_user", "user_id": owner_id}));

    let log = app.whole_log().await;
    for secret in [PASSWORD, &invite_token, &session_token, &reset_token, &csrf] {
        assert!(!log.contains(secret), "a secret is in the log");
    }
    let replay = app.cli(&["audit", "replay", "--account", &account]).await;
    assert!(replay.ok(), "{}", replay.stderr());
    assert!(replay.stdout().contains("console_user.password_set"));
    assert!(!replay.stdout().contains("$argon2id"), "password hashes are redacted in audits");
    let hashes: Vec<String> = sqlx::query_scalar("SELECT payload->>'token_hash' FROM events WHERE payload ? 'token_hash'")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert!(!hashes.is_empty() && hashes.iter().all(|h| !replay.stdout().contains(h.as_str())), "token hashes are redacted");
    app.shutdown().await;
}

#[tokio::test]
async fn a_user_of_one_account_never_sees_or_touches_another_accounts_data() {
    let app = TestApp::spawn().await;
    let (first, _, first_key) = app.account("pro").await;
    let second_account = app.cli(&["accounts", "create", "--name", "Globex", "--plan", "pro", "--json"]).await.json();
    let second = second_account["account_id"].as_str().unwrap().to_owned();
    let line = app.connected_line(&first_key, "+34600000001").await;
    let first_owner = user(&app, &first, "first@example.com", "owner").await;
    let second_owner = user(&app, &second, "second@example.com", "owner").await;
    user(&app, &second, "second-dev@example.com", "developer").await;

    let overview = first_owner.get("/console").await.text().await.unwrap();
    assert!(overview.contains(&line), "the account's own line is listed");
    let theirs = second_owner.get("/console").await.text().await.unwrap();
    assert!(!theirs.contains(&line) && theirs.contains("Globex") && !theirs.contains("Acme Ltd"));
    let users = second_owner.get("/console/users").await.text().await.unwrap();
    assert!(users.contains("second-dev@example.com") && !users.contains("first@example.com"));

    let dev_id = user_id(&app, "second-dev@example.com").await;
    let csrf = first_owner.csrf().await;
    let across = first_owner.post(&format!("/console/users/{dev_id}/role"), &[("_csrf", &csrf), ("role", "owner")]).await;
    assert_eq!(across.status(), StatusCode::NOT_FOUND, "another account's user does not exist here");
    let role: String = sqlx::query_scalar("SELECT role FROM console_users WHERE user_id = $1")
        .bind(&dev_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(role, "developer");
    app.shutdown().await;
}

#[tokio::test]
async fn one_email_is_one_user_and_bad_invitations_write_nothing() {
    let app = TestApp::spawn().await;
    let (account, _, _) = app.account("free").await;
    invite(&app, &account, "taken@example.com", "developer").await;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap();
    for (args, expected) in [
        (vec!["users", "invite", "--account", &account, "--email", "TAKEN@example.com"], "already a console user"),
        (vec!["users", "invite", "--account", &account, "--email", "not-an-email"], "enter an email address"),
        (vec!["users", "invite", "--account", &account, "--email", "a@example.com", "--role", "admin"], "owner or developer"),
        (vec!["users", "invite", "--account", "acc_00000000000000000000000000", "--email", "b@example.com"], "no account"),
        (vec!["users", "reset-link", "nobody@example.com"], "no console user"),
    ] {
        let run = app.cli(&args).await;
        assert!(!run.ok(), "{args:?} should fail");
        assert!(run.stderr().contains(expected), "{args:?}: {}", run.stderr());
    }
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(after, before);
    app.shutdown().await;
}

#[tokio::test]
async fn self_sign_up_is_off_by_default_and_opens_a_free_account_with_its_owner_when_on() {
    let off = TestApp::spawn().await;
    let visitor = Visitor::new(&off);
    assert_eq!(visitor.get("/console/signup").await.status(), StatusCode::NOT_FOUND);
    let fields = [("account_name", "Initech"), ("email", "founder@example.com"), ("password", PASSWORD)];
    assert_eq!(visitor.post("/console/signup", &fields).await.status(), StatusCode::NOT_FOUND);
    off.shutdown().await;

    let app = TestApp::spawn_with(|c| c.console.signup = true).await;
    let mut visitor = Visitor::new(&app);
    let bad = visitor.post("/console/signup", &[("account_name", " "), ("email", "nope"), ("password", "short")]).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = bad.text().await.unwrap();
    for field in ["name-error", "email-error", "password-error"] {
        assert!(html.contains(&format!("id=\"{field}\"")), "{field} is shown next to its field");
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(events, 0, "nothing half-done is stored");

    let created = visitor.post("/console/signup", &fields).await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    visitor.keep_cookie(&created);
    let overview = visitor.get("/console").await.text().await.unwrap();
    assert!(overview.contains(">Initech<") && overview.contains("data-testid=\"plan\">free<"), "{overview}");
    assert_eq!(visitor.get("/console/users").await.status(), StatusCode::OK, "the founder is the owner");
    let again = Visitor::new(&app).post("/console/signup", &fields).await;
    assert_eq!(again.status(), StatusCode::UNPROCESSABLE_ENTITY, "one email is one user");
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(accounts, 1);
    app.shutdown().await;
}
