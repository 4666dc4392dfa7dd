//! Billing and the operator HTTP API: `bridge usage export` lists each account's billing cycle with
//! every metric's count, limit and plan, equal to a direct count over the log; the operator API
//! serves the same reads behind BRIDGE_OPERATOR_TOKEN and never opens to a tenant key.

use crate::common::receiver::Receiver;
use crate::common::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);
const OPERATOR_TOKEN: &str = "op-token-0123456789abcdef0123456789abcdef";

async fn app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.allow_private_urls = true;
        c.line_send_interval_ms = 20;
        c.line_send_jitter_ms = 0;
        c.sim_delivered_after_ms = 10;
        c.sim_read_after_ms = 20;
        c.operator_token = Some(wazion_bridge::config::Secret::new(OPERATOR_TOKEN));
    })
    .await
}

/// Two accounts on different plans: one sends `sends` messages with a webhook receiving every
/// event, the other only links a line. Returns (app, busy account, quiet account).
async fn two_accounts(receiver: &Receiver, sends: usize) -> (TestApp, String, String) {
    let app = app().await;
    let (busy, _, key) = app.account("pro").await;
    let (status, body) = app.post(&key, "/v1/webhooks", json!({"url": receiver.url})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let line = app.connected_line(&key, "+34600000401").await;
    for i in 0..sends {
        let (status, body) =
            app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34699000401", "message": format!("b{i}")})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (quiet, _, quiet_key) = app.account("starter").await;
    app.connected_line(&quiet_key, "+34600000402").await;
    // Every message sent and read, the webhook projector through the whole log, and every
    // delivery it made delivered (and so charged): nothing more will happen.
    // One statement, so one snapshot: in it the projector has applied every event (its deliveries
    // are written with its checkpoint), and each of those deliveries is delivered (charged first).
    app.eventually("everything is delivered", WAIT, || async {
        let (read, undelivered, lag, started): (i64, i64, i64, bool) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM events WHERE event_type = 'message.read'), \
                    (SELECT count(*) FROM webhook_deliveries WHERE state <> 'delivered'), \
                    (SELECT count(*) FROM events e, projection_checkpoints c WHERE c.name = 'webhook_deliveries' \
                        AND (e.transaction_id, e.global_position) > (c.transaction_id, c.global_position)), \
                    EXISTS (SELECT 1 FROM projection_checkpoints WHERE name = 'webhook_deliveries')",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        read == sends as i64 && undelivered == 0 && lag == 0 && started
    })
    .await;
    (app, busy, quiet)
}

/// The month the account's billing cycle starts in, from its anchor in the database. Never from
/// the wall clock: a run that crosses midnight at a month's end would look in the wrong month.
async fn cycle_month(app: &TestApp, account: &str) -> String {
    sqlx::query_scalar("SELECT to_char(cycle_anchor AT TIME ZONE 'UTC', 'YYYY-MM') FROM accounts WHERE account_id = $1")
        .bind(account)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

/// `--from` and `--to` dates that take in the first cycle of each of these accounts (which may
/// start in two months, when they were created either side of a month's end).
async fn covering(app: &TestApp, accounts: &[&str]) -> (String, String) {
    sqlx::query_as(
        "SELECT to_char(min(cycle_anchor) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), \
                to_char(max(cycle_anchor) AT TIME ZONE 'UTC' + interval '1 day', 'YYYY-MM-DD') \
           FROM accounts WHERE account_id = ANY($1)",
    )
    .bind(accounts)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

/// What a direct count over the log says, for one account's current cycle.
async fn counted_in_the_log(app: &TestApp, account: &str) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = 'message.queued'), \
                (SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = 'webhook_delivery.charged'), \
                (SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = 'line.created') \
              - (SELECT count(*) FROM events WHERE tenant_id = $1 AND event_type = 'line.logged_out')",
    )
    .bind(account)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

fn used(rows: &[Value], account: &str, metric: &str) -> (i64, Value, String) {
    let row = rows
        .iter()
        .find(|r| r["account_id"] == account && r["metric"] == metric)
        .unwrap_or_else(|| panic!("no {metric} row for {account}"));
    (row["used"].as_i64().unwrap(), row["limit"].clone(), row["plan"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn the_usage_export_matches_a_direct_count_over_the_log() {
    let receiver = Receiver::start().await;
    let (app, busy, quiet) = two_accounts(&receiver, 4).await;
    let (from, to) = covering(&app, &[&busy, &quiet]).await;
    let export = app.cli(&["usage", "export", "--from", &from, "--to", &to, "--format", "json"]).await.json();
    let rows = export["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "two accounts, one cycle each, three metrics: {export}");
    for account in [&busy, &quiet] {
        let (sent, delivered, lines) = counted_in_the_log(&app, account).await;
        assert_eq!(used(rows, account, "sent_messages").0, sent);
        assert_eq!(used(rows, account, "webhook_events").0, delivered);
        assert_eq!(used(rows, account, "lines").0, lines);
    }
    assert_eq!(used(rows, &busy, "sent_messages"), (4, json!(10000), "pro".to_owned()));
    assert!(used(rows, &busy, "webhook_events").0 >= 4 * 3, "sent, delivered and read events at least");
    assert_eq!(used(rows, &quiet, "lines"), (1, json!(1), "starter".to_owned()));

    // CSV: a header and one line per row, the same numbers.
    let csv = app.cli(&["usage", "export", "--from", &from, "--to", &to]).await;
    assert!(csv.ok(), "{}", csv.stderr());
    let out = csv.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "account_id,account_name,cycle_start,cycle_end,plan,metric,used,limit");
    assert_eq!(lines.len(), 7);
    assert!(lines.iter().any(|l| l.starts_with(&busy) && l.ends_with(",pro,sent_messages,4,10000")), "{lines:?}");

    // A plan change shows in the cycle's plan and limits (found by its month too); a period with
    // no cycle lists nothing.
    assert!(app.cli(&["accounts", "set-plan", &busy, "business"]).await.ok());
    let export = app.cli(&["usage", "export", "--cycle", &cycle_month(&app, &busy).await, "--format", "json"]).await.json();
    assert_eq!(used(export["rows"].as_array().unwrap(), &busy, "sent_messages"), (4, json!(100000), "business".to_owned()));
    let empty = app.cli(&["usage", "export", "--from", "2020-01-01", "--to", "2020-02-01", "--format", "json"]).await.json();
    assert_eq!(empty["rows"], json!([]));

    let bad = app.cli(&["usage", "export", "--cycle", "November"]).await;
    assert!(!bad.ok() && bad.stderr().contains("YYYY-MM"), "{}", bad.stderr());
    let neither = app.cli(&["usage", "export"]).await;
    assert!(!neither.ok());
    app.shutdown().await;
}

async fn operator_get(app: &TestApp, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = app.http.get(app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_operator_api_serves_audit_and_usage_reads_to_the_operator_token_only() {
    let receiver = Receiver::start().await;
    let (app, busy, _) = two_accounts(&receiver, 2).await;
    let (_, _, tenant_key) = app.account("pro").await;
    let events = format!("/operator/v1/accounts/{busy}/events");

    // No token, a tenant's key, a wrong token: 401 in the standard envelope.
    for token in [None, Some(tenant_key.as_str()), Some("op-token-wrong-wrong-wrong-wrong-wrong")] {
        let (status, body) = operator_get(&app, &events, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["ok"], false);
        assert_eq!(body["error"]["code"], "unauthorized");
    }

    // Paging through the history with the cursor gives every event once, in order.
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE tenant_id = $1").bind(&busy).fetch_one(&app.db.pool).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{events}?limit=7&cursor={c}"),
            None => format!("{events}?limit=7"),
        };
        let (status, page) = operator_get(&app, &path, Some(OPERATOR_TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len() as i64, total);
    let distinct: std::collections::BTreeSet<_> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "no event twice");

    let (status, body) = operator_get(&app, &format!("{events}?limit=5000"), Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "validation_error");
    assert_eq!(body["field"], "limit");
    let (status, body) =
        operator_get(&app, "/operator/v1/accounts/acc_00000000000000000000000000/events", Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "account_not_found");

    let (status, state) = operator_get(&app, &format!("/operator/v1/accounts/{busy}/state"), Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["usage"]["sent_messages"], 2);
    assert_eq!(state["lines"].as_array().unwrap().len(), 1);

    assert_eq!(app.cli(&["audit", "digest", "--json"]).await.json()["recorded"], true);
    let (status, report) = operator_get(&app, &format!("/operator/v1/audit/verify?account={busy}"), Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["digests_checked"], 1);

    let month = cycle_month(&app, &busy).await;
    let (status, usage) = operator_get(&app, &format!("/operator/v1/usage?cycle={month}"), Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(used(usage["rows"].as_array().unwrap(), &busy, "sent_messages").0, 2);
    let csv = app
        .http
        .get(app.url(&format!("/operator/v1/usage?cycle={month}&format=csv")))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(csv.text().await.unwrap().starts_with("account_id,account_name,"));
    let (status, body) = operator_get(&app, "/operator/v1/usage?cycle=2026-13", Some(OPERATOR_TOKEN)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn without_an_operator_token_the_operator_api_is_off() {
    let app = TestApp::spawn().await;
    let (account, _, key) = app.account("pro").await;
    for token in [None, Some(key.as_str())] {
        let (status, body) = operator_get(&app, &format!("/operator/v1/accounts/{account}/state"), token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["error"]["message"].as_str().unwrap().contains("BRIDGE_OPERATOR_TOKEN"), "{body}");
    }
    app.shutdown().await;
}
