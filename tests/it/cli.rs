//! The operator CLI: JSON outputs, readable failures that write nothing, and an event log that
//! records every key change without ever holding a secret.

use crate::common::TestApp;
use serde_json::Value;

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap()
}

#[tokio::test]
async fn bad_input_exits_non_zero_with_a_readable_message_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let (account_id, key_id, _) = app.account("free").await;
    let before = event_count(&app).await;

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["accounts", "create", "--name", "X", "--plan", "gold", "--json"],
            "unknown plan `gold`; known plans: business, free, pro, starter",
        ),
        (vec!["accounts", "create", "--name", "  ", "--plan", "free"], "account name must be 1 to 200 characters"),
        (vec!["accounts", "set-plan", &account_id, "platinum"], "unknown plan `platinum`"),
        (vec!["accounts", "suspend", "acc_nope"], "`acc_nope` is not a valid account id"),
        (vec!["accounts", "activate", "acc_00000000000000000000000000"], "no account acc_00000000000000000000000000"),
        (vec!["keys", "create", "--account", "acc_00000000000000000000000000"], "no account acc_00000000000000000000000000"),
        (vec!["keys", "rotate", &key_id, "--grace", "forever"], "not a duration"),
        (vec!["keys", "rotate", &key_id, "--grace", "90d"], "grace period must be between 0 and 30 days"),
        (vec!["keys", "revoke", "key_00000000000000000000000000"], "no API key key_00000000000000000000000000"),
        (vec!["keys", "list", "--account", "acc_00000000000000000000000000"], "no account"),
    ];
    for (args, expected) in cases {
        let run = app.cli(&args).await;
        assert!(!run.ok(), "{args:?} should fail");
        assert!(run.stderr().contains(expected), "{args:?}: stderr was {}", run.stderr());
        assert!(run.stdout().is_empty(), "{args:?} printed {}", run.stdout());
    }
    assert_eq!(event_count(&app).await, before, "no failed command appended anything");
    app.shutdown().await;
}

#[tokio::test]
async fn key_changes_are_events_and_no_secret_reaches_the_log() {
    let app = TestApp::spawn().await;
    let (account_id, key_id, first) = app.account("pro").await;
    let rotated = app.cli(&["keys", "rotate", &key_id, "--grace", "1h", "--json"]).await.json();
    let second = rotated["api_key"].as_str().unwrap().to_owned();
    app.cli(&["keys", "revoke", &key_id]).await;

    let rows: Vec<(String, String, Value, Value)> = sqlx::query_as(
        "SELECT stream_type, event_type, payload, metadata FROM events WHERE tenant_id = $1 ORDER BY global_position",
    )
    .bind(&account_id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let types: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(types, ["account.opened", "api_key.created", "api_key.rotated", "api_key.revoked"]);
    for (_, _, _, metadata) in &rows {
        assert_eq!(metadata["actor"]["kind"], "operator", "the operator is named as the actor");
    }

    let whole_log = app.whole_log().await;
    for secret in [&first, &second] {
        assert!(!whole_log.contains(secret.as_str()), "a key secret is in the log");
        let body = secret.trim_start_matches("wzb_live_");
        assert!(!whole_log.contains(body), "a key secret's body is in the log");
    }
    let listed = app.cli(&["keys", "list", "--account", &account_id, "--json"]).await;
    assert!(!listed.stdout().contains(&first) && !listed.stdout().contains(&second));
    let keys = listed.json();
    assert_eq!(keys["keys"][0]["key_id"], key_id.as_str());
    assert_eq!(keys["keys"][0]["status"], "revoked");
    app.shutdown().await;
}

#[tokio::test]
async fn accounts_commands_print_one_json_object() {
    let app = TestApp::spawn().await;
    let created = app.cli(&["accounts", "create", "--name", "Globex", "--plan", "starter", "--json"]).await.json();
    let id = created["account_id"].as_str().unwrap();
    assert!(id.starts_with("acc_"));
    assert_eq!(created["plan"], "starter");
    assert_eq!(created["status"], "active");

    let suspended = app.cli(&["accounts", "suspend", id, "--json"]).await.json();
    assert_eq!((suspended["status"].as_str(), suspended["changed"].as_bool()), (Some("suspended"), Some(true)));
    let again = app.cli(&["accounts", "suspend", id, "--json"]).await.json();
    assert_eq!(again["changed"], false);
    let plan = app.cli(&["accounts", "set-plan", id, "business", "--json"]).await.json();
    assert_eq!(plan["plan"], "business");

    let list = app.cli(&["accounts", "list", "--json"]).await.json();
    let found = list["accounts"].as_array().unwrap().iter().find(|a| a["account_id"] == id).expect("listed");
    assert_eq!((found["plan"].as_str(), found["status"].as_str()), (Some("business"), Some("suspended")));

    let status = app.cli(&["projections", "status", "--json"]).await.json();
    let names: Vec<&str> = status["projections"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["chats", "messages", "webhook_deliveries"]);
    for p in status["projections"].as_array().unwrap() {
        assert!(p["checkpoint"]["global_position"].is_i64() && p["lag"].is_i64(), "{p}");
    }
    let migrate = app.cli(&["migrate", "--json"]).await.json();
    assert_eq!(migrate["ok"], true);
    app.shutdown().await;
}

#[tokio::test]
async fn sim_scan_links_a_line_from_the_cli() {
    let app = TestApp::spawn().await;
    let (_, _, key) = app.account("pro").await;
    let created: Value = app
        .http
        .post(app.url("/v1/lines"))
        .bearer_auth(&key)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let line_id = created["line"]["line_id"].as_str().unwrap();

    let scanned = app.cli(&["sim", "scan", line_id, "--phone", "+34600000001", "--json"]).await.json();
    assert_eq!(scanned["status"], "connected");
    assert_eq!(scanned["phone"], "+34600000001");
    let line: Value = app.get(&format!("/v1/lines/{line_id}"), &key).await.json().await.unwrap();
    assert_eq!(line["line"]["status"], "connected");

    let other = app.cli(&["sim", "scan", line_id, "--phone", "+34600000002"]).await;
    assert!(!other.ok());
    assert!(other.stderr().contains("already linked to +34600000001"), "{}", other.stderr());
    let bad = app.cli(&["sim", "scan", line_id, "--phone", "12"]).await;
    assert!(bad.stderr().contains("not a phone number in international format"), "{}", bad.stderr());
    app.shutdown().await;
}

#[tokio::test]
async fn bridge_processes_run_by_the_tests_see_nothing_of_the_developers_set_up() {
    // A developer's shell may hold BRIDGE_* settings (nextest runs this test in a process of its
    // own, so these stay here). Read, either would stop `bridge` at once.
    std::env::set_var("BRIDGE_LINE_LEASE_SECS", "1");
    std::env::set_var("BRIDGE_CONFIG", "/nonexistent/bridge.toml");
    let db = crate::common::TestDb::new().await;
    let run = crate::common::cli(&db, &["accounts", "list", "--json"]).await;
    assert!(run.ok(), "the test's bridge read the developer's settings: {}", run.stderr());
}
