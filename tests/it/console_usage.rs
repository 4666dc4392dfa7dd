//! The console's Usage page over real HTTP: the cycle per metric against the plan's limits, the
//! per-day chart and table, and the CSV download of this account only.

use crate::common::console::user;
use crate::common::TestApp;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn usage_shows_the_cycle_the_days_and_downloads_this_accounts_csv() {
    let app = TestApp::spawn().await;
    let (account, _, key) = app.account("pro").await;
    let (other_account, _, other_key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000201").await;
    for text in ["one", "two"] {
        let (status, body) =
            app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34600000202", "message": text})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let other_line = app.connected_line(&other_key, "+34600000203").await;
    let (status, _) =
        app.post(&other_key, "/v1/messages/send", json!({"line_id": other_line, "to": "+34600000202", "message": "x"})).await;
    assert_eq!(status, StatusCode::OK);

    let dev = user(&app, &account, "dev@example.com", "developer").await;
    let page = dev.get("/console/usage").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    let usage: serde_json::Value = app.get("/v1/usage", &key).await.json().await.unwrap();
    let limit = usage["usage"]["sent_messages"]["limit"].as_u64().unwrap();
    assert!(
        html.contains(&format!(
            "<tr data-metric=\"sent_messages\"><th scope=\"row\">sent_messages</th><td data-test=\"used\">2</td><td data-test=\"limit\">{limit}</td>"
        )),
        "{html}"
    );
    let today = chrono::Utc::now().date_naive().to_string();
    assert!(html.contains(&format!("class=\"bar-sent\" data-day=\"{today}\" data-value=\"2\"")), "the chart: {html}");
    assert!(html.contains(&format!(
        "<tr data-day=\"{today}\"><th scope=\"row\"><time datetime=\"{today}\">{today}</time></th><td data-test=\"sent\">2</td>"
    )));
    let cycle = usage["period"]["start"].as_str().unwrap()[..7].to_owned();
    assert!(html.contains(&format!("name=\"cycle\" type=\"month\" required value=\"{cycle}\"")));

    let csv = dev.get(&format!("/console/usage.csv?cycle={cycle}")).await;
    assert_eq!(csv.status(), StatusCode::OK);
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(csv.headers()["content-disposition"].to_str().unwrap().starts_with("attachment;"));
    let csv = csv.text().await.unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "account_id,account_name,cycle_start,cycle_end,plan,metric,used,limit");
    assert_eq!(rows.len(), 4, "one cycle, three metrics: {csv}");
    assert!(rows[1..].iter().all(|r| r.starts_with(&format!("{account},"))), "{csv}");
    assert!(!csv.contains(&other_account));
    assert!(rows.iter().any(|r| r.contains(",sent_messages,2,")), "{csv}");

    let bad = dev.get("/console/usage.csv?cycle=2026-13").await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = bad.text().await.unwrap();
    assert!(html.contains("data-test=\"cycle-error\"") && html.contains("value=\"2026-13\""), "{html}");
}

#[tokio::test]
async fn the_usage_page_needs_a_signed_in_user() {
    let app = TestApp::spawn().await;
    let anonymous = crate::common::console::Visitor::new(&app);
    for path in ["/console/usage", "/console/usage.csv?cycle=2026-01"] {
        let response = anonymous.get(path).await;
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()["location"], "/console/sign-in");
    }
}
