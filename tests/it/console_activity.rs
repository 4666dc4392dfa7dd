//! The console's Activity page: the account's own events, newest first, paged, with who acted and
//! no secret; another account's events never. Real server, real HTTP.

use crate::common::console::{user, Visitor};
use crate::common::TestApp;
use reqwest::StatusCode;
use serde_json::json;

/// The log positions of the rows of an Activity page, in the page's order.
fn positions(html: &str) -> Vec<i64> {
    html.match_indices("<tr data-position=\"")
        .map(|(at, m)| {
            let rest = &html[at + m.len()..];
            rest[..rest.find('"').unwrap()].parse().unwrap()
        })
        .collect()
}

/// The row of the event at `position`.
fn row(html: &str, position: i64) -> &str {
    let start = html.find(&format!("<tr data-position=\"{position}\"")).expect("the event has a row");
    &html[start..start + html[start..].find("</tr>").unwrap()]
}

/// The account's events, newest first: (position, type).
async fn account_events(app: &TestApp, account: &str) -> Vec<(i64, String)> {
    sqlx::query_as("SELECT global_position, event_type FROM events WHERE tenant_id = $1 ORDER BY global_position DESC")
        .bind(account)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

async fn position_of(app: &TestApp, event_type: &str, account: &str) -> i64 {
    sqlx::query_scalar("SELECT max(global_position) FROM events WHERE event_type = $1 AND tenant_id = $2")
        .bind(event_type)
        .bind(account)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_accounts_events_are_listed_newest_first_with_who_acted_and_no_secret() {
    let app = TestApp::spawn().await;
    let (account, key_id, key) = app.account("pro").await;
    let owner = user(&app, &account, "owner@example.com", "owner").await;
    let developer = user(&app, &account, "dev@example.com", "developer").await;
    let csrf = owner.csrf().await;
    let created = owner.post("/console/keys", &[("_csrf", &csrf), ("name", "from the console")]).await;
    assert_eq!(created.status(), StatusCode::OK);
    let (status, _) =
        app.post(&key, "/v1/webhooks", json!({"url": "https://93.184.216.34/hooks/mine", "events": ["message.received"]})).await;
    assert_eq!(status, StatusCode::CREATED);

    let page = developer.get("/console/activity").await;
    assert_eq!(page.status(), StatusCode::OK, "every user of the account may read it");
    let html = page.text().await.unwrap();
    let expected: Vec<i64> = account_events(&app, &account).await.into_iter().map(|(p, _)| p).collect();
    assert_eq!(positions(&html), expected, "every event of the account, newest first");

    let webhook = row(&html, position_of(&app, "webhook.created", &account).await);
    assert!(webhook.contains(&format!("data-actor-kind=\"api_key\">API key {key_id}<")), "{webhook}");
    assert!(webhook.contains("<code>webhook.created</code>") && webhook.contains("<code>webhook/wh_"), "{webhook}");
    assert!(webhook.contains("<time datetime=\"") && webhook.contains("Z\">"), "UTC ISO times: {webhook}");
    let console_key = row(&html, position_of(&app, "api_key.created", &account).await);
    assert!(console_key.contains("data-actor-kind=\"console_user\">owner@example.com<"), "{console_key}");
    let opened = row(&html, position_of(&app, "account.opened", &account).await);
    assert!(opened.contains("data-actor-kind=\"operator\">operator<"), "{opened}");

    let hashes: Vec<String> = sqlx::query_scalar(
        "SELECT h FROM events, LATERAL (VALUES (payload->>'key_hash'), (payload->>'token_hash'), (payload->>'password_hash'), (payload->>'secret')) v(h) \
          WHERE tenant_id = $1 AND h IS NOT NULL",
    )
    .bind(&account)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(hashes.len() >= 5, "the payloads hold hashes and sealed secrets: {hashes:?}");
    for hash in &hashes {
        assert!(!html.contains(hash.as_str()), "a secret's hash is on the page");
    }
    assert!(html.contains("[redacted]"), "redacted as audits are");
    app.shutdown().await;
}

#[tokio::test]
async fn pages_follow_each_other_by_position_without_gaps_or_repeats() {
    let app = TestApp::spawn().await;
    let (account, _, _) = app.account("pro").await;
    let owner = user(&app, &account, "owner@example.com", "owner").await;
    let csrf = owner.csrf().await;
    for n in 0..50 {
        let created = owner.post("/console/keys", &[("_csrf", &csrf), ("name", &format!("key {n}"))]).await;
        assert_eq!(created.status(), StatusCode::OK);
    }
    let all: Vec<i64> = account_events(&app, &account).await.into_iter().map(|(p, _)| p).collect();
    assert!(all.len() > 50 && all.len() <= 100, "{}", all.len());

    let first = owner.get("/console/activity").await.text().await.unwrap();
    assert_eq!(positions(&first), all[..50], "the newest fifty");
    assert!(!first.contains("data-testid=\"newest-page\""));
    let at = first.find("href=\"/console/activity?before=").expect("a link to older events") + 6;
    let older_link = &first[at..at + first[at..].find('"').unwrap()];
    assert_eq!(older_link, format!("/console/activity?before=c{}", all[49]));

    let second = owner.get(older_link).await.text().await.unwrap();
    assert_eq!(positions(&second), all[50..], "the rest, none twice");
    assert!(second.contains("data-testid=\"newest-page\"") && !second.contains("data-testid=\"older-page\""));

    for bad in ["c0", "c-1", "12", "cabc", ""] {
        let refused = owner.get(&format!("/console/activity?before={bad}")).await;
        assert_eq!(refused.status(), StatusCode::NOT_FOUND, "{bad:?}");
    }
    app.shutdown().await;
}

/// The Activity page never shows another account's events, whatever cursor it is given.
#[tokio::test]
async fn another_accounts_events_are_never_shown() {
    let app = TestApp::spawn().await;
    let (first, _, _) = app.account("pro").await;
    let (second, their_key_id, their_key) = app.account("pro").await;
    let (status, _) = app
        .post(&their_key, "/v1/webhooks", json!({"url": "https://93.184.216.34/hooks/theirs", "events": ["message.received"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let owner = user(&app, &first, "owner@example.com", "owner").await;
    let mine: Vec<i64> = account_events(&app, &first).await.into_iter().map(|(p, _)| p).collect();
    let theirs: Vec<i64> = account_events(&app, &second).await.into_iter().map(|(p, _)| p).collect();
    assert!(!theirs.is_empty());

    let html = owner.get("/console/activity").await.text().await.unwrap();
    assert_eq!(positions(&html), mine);
    assert!(!html.contains(&their_key_id) && !html.contains(&second) && !html.contains("/hooks/theirs"));
    // A cursor just past their newest event still pages through this account's events only.
    let after_theirs = owner.get(&format!("/console/activity?before=c{}", theirs[0] + 1)).await.text().await.unwrap();
    assert!(positions(&after_theirs).iter().all(|p| mine.contains(p)));
    assert!(!after_theirs.contains(&their_key_id));

    let signed_out = Visitor::new(&app).get("/console/activity").await;
    assert_eq!(signed_out.status(), StatusCode::SEE_OTHER, "signed out: to the sign-in page");
    app.shutdown().await;
}
