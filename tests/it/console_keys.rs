//! The console's API keys page: create (the secret shown once, and it works), rotate with a grace,
//! revoke with a typed confirmation, the last use, owners only, bad input, a suspended account,
//! and another account's keys as 404 on every route of the page. Real server, real HTTP.

use crate::common::console::{user, user_id};
use crate::common::TestApp;
use reqwest::header::LOCATION;
use reqwest::StatusCode;
use std::time::Duration;

/// The secret shown once on a page (the `data-testid="secret-value"` input), if any.
fn shown_secret(html: &str) -> Option<String> {
    let at = html.find("data-testid=\"secret-value\"")?;
    let value = &html[html[..at].rfind("value=\"")? + 7..];
    Some(value[..value.find('"')?].to_owned())
}

/// The key id shown with the secret.
fn shown_key_id(html: &str) -> String {
    let at = html.find("data-testid=\"key-secret\" data-key=\"").expect("a key was shown") + 35;
    html[at..at + html[at..].find('"').unwrap()].to_owned()
}

/// The row of `key_id` in the keys table.
fn row<'h>(html: &'h str, key_id: &str) -> &'h str {
    let start = html.find(&format!("<tr data-key=\"{key_id}\"")).expect("the key has a row");
    &html[start..start + html[start..].find("</tr>").unwrap()]
}

async fn events(app: &TestApp, key_id: &str) -> Vec<(String, serde_json::Value)> {
    sqlx::query_as(
        "SELECT event_type, metadata FROM events WHERE stream_type = 'api_key' AND stream_id = $1 ORDER BY global_position",
    )
    .bind(key_id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap()
}

/// Each action of the page on `key_id` (create, rotate, revoke) with valid fields: (path, form).
fn every_action<'a>(key_id: &str, csrf: &'a str) -> [(String, Vec<(&'static str, &'a str)>); 3] {
    [
        ("/console/keys".to_owned(), vec![("_csrf", csrf), ("name", "x")]),
        (format!("/console/keys/{key_id}/rotate"), vec![("_csrf", csrf), ("grace", "none")]),
        (format!("/console/keys/{key_id}/revoke"), vec![("_csrf", csrf), ("confirm", "revoke")]),
    ]
}

async fn me_status(app: &TestApp, key: &str) -> StatusCode {
    app.get("/v1/me", key).await.status()
}

#[tokio::test]
async fn an_owner_creates_a_key_sees_its_secret_once_and_it_authenticates_with_the_owner_as_actor() {
    let app = TestApp::spawn().await;
    let (account, _, _) = app.account("pro").await;
    let owner = user(&app, &account, "owner@example.com", "owner").await;
    let csrf = owner.csrf().await;

    let created = owner.post("/console/keys", &[("_csrf", &csrf), ("name", "  ci deploy ")]).await;
    assert_eq!(created.status(), StatusCode::OK);
    let html = created.text().await.unwrap();
    let secret = shown_secret(&html).expect("the secret is shown");
    assert!(secret.starts_with("wzb_live_"), "{secret}");
    assert!(html.contains("data-copy=\"#new-secret\""), "a copy button for the secret");
    let key_id = shown_key_id(&html);
    assert!(row(&html, &key_id).contains("ci deploy"), "listed under its trimmed name");

    let me = app.get("/v1/me", &secret).await;
    assert_eq!(me.status(), StatusCode::OK);
    let listed = owner.get("/console/keys").await.text().await.unwrap();
    assert!(!listed.contains(&secret), "the secret is never shown again");
    assert!(shown_secret(&listed).is_none());

    let owner_id = user_id(&app, "owner@example.com").await;
    let history = events(&app, &key_id).await;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].0, "api_key.created");
    assert_eq!(history[0].1["actor"], serde_json::json!({"kind": "console_user", "user_id": owner_id}));
    assert!(!app.whole_log().await.contains(&secret), "the secret is not in the log");
    app.shutdown().await;
}

#[tokio::test]
async fn the_list_shows_when_each_key_was_created_and_last_used() {
    let app = TestApp::spawn().await;
    let (account, key_id, key) = app.account("pro").await;
    let owner = user(&app, &account, "owner@example.com", "owner").await;

    let before = owner.get("/console/keys").await.text().await.unwrap();
    let listed = row(&before, &key_id);
    assert!(listed.contains("test") && listed.contains("<time datetime=\""), "{listed}");
    assert!(listed.contains("data-testid=\"last-used\">never<"), "{listed}");

    assert_eq!(me_status(&app, &key).await, StatusCode::OK);
    let last_used = || async {
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>("SELECT last_used_at FROM api_keys WHERE key_id = $1")
            .bind(&key_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
    };
    app.eventually("the key's use is recorded", Duration::from_secs(10), || async { last_used().await.is_some() }).await;
    let first = last_used().await.unwrap();
    let after = owner.get("/console/keys").await.text().await.unwrap();
    let shown = first.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(row(&after, &key_id).contains(&format!("data-testid=\"last-used\"><time datetime=\"{shown}\">{shown}</time>")));
    let written: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE stream_type = 'api_key'").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(written, 1, "a use is not an event");
    app.shutdown().await;
}

#[tokio::test]
async fn rotating_with_a_grace_keeps_the_old_secret_until_then_and_without_one_ends_it_now() {
    let app = TestApp::spawn().await;
    let (account, key_id, old) = app.account("pro").await;
    let owner = user(&app, &account, "owner@example.com", "owner").await;
    let csrf = owner.csrf().await;
    let page = owner.get("/console/keys").await.text().await.unwrap();
    for grace in ["none", "1h", "24h", "7d"] {
        assert!(row(&page, &key_id).contains(&format!("<option value=\"{grace}\">")), "grace {grace} offered");
    }

    let graced = owner.post(&format!("/console/keys/{key_id}/rotate"), &[("_csrf", &csrf), ("grace", "24h")]).await;
    assert_eq!(graced.status(), StatusCode::OK);
    let html = graced.text().await.unwrap();
    let second = shown_secret(&html).expect("the new secret is shown");
    assert!(html.contains("data-testid=\"old-secret-until\">The old secret keeps working until <time datetime=\""), "{html}");
    let until: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT valid_until FROM api_key_secrets WHERE key_id = $1 AND valid_until IS NOT NULL")
            .bind(&key_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let hours = (until - chrono::Utc::now()).num_minutes() as f64 / 60.0;
    assert!((23.9..=24.0).contains(&hours), "24 hours of grace: {hours}");
    app.eventually("both secrets work", Duration::from_secs(10), || async {
        me_status(&app, &second).await == StatusCode::OK && me_status(&app, &old).await == StatusCode::OK
    })
    .await;

    let now = owner.post(&format!("/console/keys/{key_id}/rotate"), &[("_csrf", &csrf), ("grace", "none")]).await;
    let html = now.text().await.unwrap();
    let third = shown_secret(&html).expect("the new secret is shown");
    assert!(html.contains("The old secret stopped working now."));
    app.eventually("only the newest secret works", Duration::from_secs(10), || async {
        me_status(&app, &third).await == StatusCode::OK
            && me_status(&app, &second).await == StatusCode::UNAUTHORIZED
            && me_status(&app, &old).await == StatusCode::UNAUTHORIZED
    })
    .await;
    let history = events(&app, &key_id).await;
    let types: Vec<&str> = history.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["api_key.created", "api_key.rotated", "api_key.rotated"]);
    assert!(history[1..].iter().all(|(_, m)| m["actor"]["kind"] == "console_user"));

    let before = event_count(&app).await;
    let bad = owner.post(&format!("/console/keys/{key_id}/rotate"), &[("_csrf", &csrf), ("grace", "30d")]).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = bad.text().await.unwrap();
    assert!(row(&html, &key_id).contains(&format!("id=\"rotate-error-{key_id}\"")), "the error is in the key's row");
    assert_eq!(event_count(&app).await, before, "nothing appended");
    assert_eq!(me_status(&app, &third).await, StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn revoking_needs_the_name_or_the_word_typed_and_then_the_key_stops_working() {
    let app = TestApp::spawn().await;
    let (account, key_id, key) = app.account("pro").await;
    let owner = user(&app, &account, "owner@example.com", "owner").await;
    let csrf = owner.csrf().await;
    let path = format!("/console/keys/{key_id}/revoke");

    let before = event_count(&app).await;
    for typed in ["", "tes", "yes"] {
        let refused = owner.post(&path, &[("_csrf", &csrf), ("confirm", typed)]).await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY, "{typed:?}");
        let html = refused.text().await.unwrap();
        let listed = row(&html, &key_id);
        assert!(
            listed.contains(&format!("id=\"revoke-error-{key_id}\"")) && listed.contains("aria-invalid=\"true\""),
            "{listed}"
        );
        assert!(listed.contains(&format!("value=\"{typed}\"")), "what was typed is kept");
    }
    assert_eq!(event_count(&app).await, before, "nothing appended");
    assert_eq!(me_status(&app, &key).await, StatusCode::OK);

    let revoked = owner.post(&path, &[("_csrf", &csrf), ("confirm", "test")]).await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER, "the key's name confirms");
    assert_eq!(revoked.headers()[LOCATION], "/console/keys");
    app.eventually("the revoked key is refused", Duration::from_secs(10), || async {
        me_status(&app, &key).await == StatusCode::UNAUTHORIZED
    })
    .await;
    let html = owner.get("/console/keys").await.text().await.unwrap();
    let listed = row(&html, &key_id);
    assert!(listed.contains("data-testid=\"key-status\">revoked<") && !listed.contains("revoke-form"), "{listed}");
    let history = events(&app, &key_id).await;
    assert_eq!(history.last().unwrap().0, "api_key.revoked");
    assert_eq!(history.last().unwrap().1["actor"]["kind"], "console_user");

    // A key created in the console and confirmed with the word.
    let created = owner.post("/console/keys", &[("_csrf", &csrf), ("name", "")]).await.text().await.unwrap();
    let unnamed = shown_key_id(&created);
    assert!(row(&created, &unnamed).contains("<em>unnamed</em>"));
    let revoked = owner.post(&format!("/console/keys/{unnamed}/revoke"), &[("_csrf", &csrf), ("confirm", "Revoke")]).await;
    assert_eq!(revoked.status(), StatusCode::SEE_OTHER);
    let rotate_revoked = owner.post(&format!("/console/keys/{unnamed}/rotate"), &[("_csrf", &csrf), ("grace", "none")]).await;
    assert_eq!(rotate_revoked.status(), StatusCode::UNPROCESSABLE_ENTITY, "a revoked key cannot be rotated");
    assert_eq!(events(&app, &unnamed).await.len(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_bad_name_is_shown_next_to_its_field_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let (account, _, _) = app.account("pro").await;
    let owner = user(&app, &account, "owner@example.com", "owner").await;
    let csrf = owner.csrf().await;
    let before = event_count(&app).await;
    let long = "k".repeat(101);
    for name in [long.as_str(), "tab\there"] {
        let refused = owner.post("/console/keys", &[("_csrf", &csrf), ("name", name)]).await;
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let html = refused.text().await.unwrap();
        assert!(html.contains("id=\"key-name-error\"") && html.contains("at most 100 characters"), "{html}");
        assert!(html.contains("aria-describedby=\"key-name-error\""));
        assert!(shown_secret(&html).is_none());
    }
    let kept = owner.post("/console/keys", &[("_csrf", &csrf), ("name", &long)]).await.text().await.unwrap();
    assert!(kept.contains(&format!("value=\"{long}\"")), "the value is kept");
    assert_eq!(event_count(&app).await, before, "nothing appended");
    let without_token = owner.post("/console/keys", &[("name", "x")]).await;
    assert_eq!(without_token.status(), StatusCode::FORBIDDEN);
    assert_eq!(event_count(&app).await, before);
    app.shutdown().await;
}

#[tokio::test]
async fn developers_get_the_forbidden_page_and_change_nothing() {
    let app = TestApp::spawn().await;
    let (account, key_id, key) = app.account("pro").await;
    let developer = user(&app, &account, "dev@example.com", "developer").await;
    let csrf = developer.csrf().await;
    let before = event_count(&app).await;
    let page = developer.get("/console/keys").await;
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    assert!(page.text().await.unwrap().contains("Only owners"));
    for (path, fields) in every_action(&key_id, &csrf) {
        assert_eq!(developer.post(&path, &fields).await.status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(event_count(&app).await, before);
    assert_eq!(me_status(&app, &key).await, StatusCode::OK);
    app.shutdown().await;
}

#[tokio::test]
async fn a_suspended_account_sees_its_keys_but_cannot_change_them() {
    let app = TestApp::spawn().await;
    let (account, key_id, _) = app.account("pro").await;
    let owner = user(&app, &account, "owner@example.com", "owner").await;
    let csrf = owner.csrf().await;
    assert!(app.cli(&["accounts", "suspend", &account]).await.ok());
    let page = owner.get("/console/keys").await;
    assert_eq!(page.status(), StatusCode::OK, "reading is fine");
    let html = page.text().await.unwrap();
    assert!(html.contains(&key_id) && html.contains("data-testid=\"subscription-required\""));
    let before = event_count(&app).await;
    for (path, fields) in every_action(&key_id, &csrf) {
        let refused = owner.post(&path, &fields).await;
        assert_eq!(refused.status(), StatusCode::PAYMENT_REQUIRED, "{path}");
        assert!(refused.text().await.unwrap().contains("The Bridge subscription of this account is not active."));
    }
    assert_eq!(event_count(&app).await, before);
    app.shutdown().await;
}

/// Every route of the API keys page, given another account's key: 404, and nothing changes.
#[tokio::test]
async fn another_accounts_key_is_not_found_on_every_route_of_the_page() {
    let app = TestApp::spawn().await;
    let (first, _, _) = app.account("pro").await;
    let (_, their_key_id, their_key) = app.account("pro").await;
    let owner = user(&app, &first, "owner@example.com", "owner").await;
    let csrf = owner.csrf().await;

    let page = owner.get("/console/keys").await.text().await.unwrap();
    assert!(!page.contains(&their_key_id), "another account's key is not listed");
    let before = event_count(&app).await;
    let routes: [(&str, Vec<(&str, &str)>); 2] =
        [("rotate", vec![("_csrf", &csrf), ("grace", "none")]), ("revoke", vec![("_csrf", &csrf), ("confirm", "revoke")])];
    for (action, fields) in &routes {
        for id in [their_key_id.as_str(), "key_00000000000000000000000000", "not-a-key"] {
            let across = owner.post(&format!("/console/keys/{id}/{action}"), fields).await;
            assert_eq!(across.status(), StatusCode::NOT_FOUND, "{action} {id}");
            assert!(across.text().await.unwrap().contains("There is no such API key in this account."));
        }
    }
    assert_eq!(event_count(&app).await, before, "nothing appended");
    assert_eq!(me_status(&app, &their_key).await, StatusCode::OK, "their key still works");
    let secrets: i64 = sqlx::query_scalar("SELECT count(*) FROM api_key_secrets WHERE key_id = $1")
        .bind(&their_key_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(secrets, 1, "their key has its one secret");
    app.shutdown().await;
}
