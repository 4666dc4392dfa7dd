//! Events whose shape changed are upcast when read, never rewritten: a `line.connected` stored in
//! its schema 1 shape (before `jid` was added) still replays into the line aggregate (the line
//! sends), projects (the lines table, the webhook projector), rebuilds state for auditors, and
//! verifies, while the log keeps the row exactly as it was written.

use crate::common::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use wazion_bridge::store::{Actor, Append, EventStore, Metadata, StreamAppend};

#[tokio::test]
async fn a_schema_1_line_connected_still_replays_and_projects() {
    let app = TestApp::spawn_with(|c| {
        c.line_send_interval_ms = 10;
        c.line_send_jitter_ms = 0;
        c.sim_delivered_after_ms = 10;
        c.sim_read_after_ms = 20;
    })
    .await;
    let (account, _, key) = app.account("pro").await;

    // A line linked by an older version of the server: its events as that version wrote them.
    let line_id = domain::ids::LineId::new().to_string();
    let line_id = line_id.as_str();
    let old = Append {
        tenant_id: account.clone(),
        metadata: Metadata::new(Actor::Operator { name: "an older release".into() }),
        streams: vec![StreamAppend {
            stream_type: "line",
            stream_id: line_id.into(),
            expected_version: 0,
            events: vec![
                ("line.created".into(), 1, json!({"line_id": line_id, "account_id": account, "engine": "sim"})),
                ("line.connected".into(), 1, json!({"phone": "+34600000901"})),
            ],
        }],
    };
    EventStore::new(app.db.pool.clone(), EventStore::inline_projections()).append(&old).await.expect("old shapes append");

    // Projected (inline): the line is there, connected.
    let line: Value = app.get(&format!("/v1/lines/{line_id}"), &key).await.json().await.unwrap();
    assert_eq!(line["line"]["status"], "connected", "{line}");
    assert_eq!(line["line"]["phone"], "+34600000901");
    // Replayed: the line aggregate loads from the old shape and the line sends.
    let (status, sent) =
        app.post(&key, "/v1/messages/send", json!({"line_id": line_id, "to": "+34699000901", "message": "still works"})).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    app.eventually("the message is sent", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = 'message.sent'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
            == 1
    })
    .await;
    // Projected (asynchronously): the webhook projector knows the line's phone.
    app.eventually("the webhook projector has the line's phone", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, String>("SELECT phone FROM webhook_line_phones WHERE line_id = $1")
            .bind(line_id)
            .fetch_optional(&app.db.pool)
            .await
            .unwrap()
            .as_deref()
            == Some("+34600000901")
    })
    .await;

    // Auditors see the state with the upcast field, and the row as it was written.
    let state = app.cli(&["audit", "state", "--account", &account, "--as-of", "2100-01-01", "--json"]).await.json();
    assert_eq!(state["lines"][0]["jid"], "34600000901@s.whatsapp.net", "{state}");
    let replay = app.cli(&["audit", "replay", "--account", &account, "--stream", line_id]).await;
    let connected: Value = serde_json::from_str(replay.stdout().lines().nth(1).unwrap()).unwrap();
    assert_eq!((connected["schema_version"].as_i64(), &connected["payload"]), (Some(1), &json!({"phone": "+34600000901"})));

    // A line linked now writes the new shape.
    let new_line = app.connected_line(&key, "+34600000902").await;
    let (version, payload): (i32, Value) =
        sqlx::query_as("SELECT schema_version, payload FROM events WHERE stream_id = $1 AND event_type = 'line.connected'")
            .bind(&new_line)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!((version, payload), (2, json!({"phone": "+34600000902", "jid": "34600000902@s.whatsapp.net"})));

    let verified = app.cli(&["audit", "verify", "--json"]).await.json();
    assert_eq!(verified["ok"], true, "{verified}");
    app.shutdown().await;
}
