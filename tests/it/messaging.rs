//! Sending over REST on the sim network: delivery between lines, receipts, pacing, quota and
//! idempotency under concurrency, and the published errors.

use crate::common::{redactions, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// A server whose lines send every 300 ms and whose simulated phones answer quickly.
async fn app() -> TestApp {
    app_with_group_commit(true).await
}

/// [`app`], with concurrent sends sharing transactions (group commit) or each in its own.
async fn app_with_group_commit(group_commit: bool) -> TestApp {
    TestApp::spawn_with(|c| {
        c.line_send_interval_ms = 300;
        c.line_send_jitter_ms = 0;
        c.sim_delivered_after_ms = 20;
        c.sim_read_after_ms = 40;
        c.plans.get_mut("starter").unwrap().sent_messages = 5;
        c.group_commit = group_commit;
    })
    .await
}

async fn event_types(app: &TestApp, stream_id: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM events WHERE stream_id = $1 ORDER BY stream_version")
        .bind(stream_id)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.db.pool).await.unwrap()
}

#[tokio::test]
async fn a_message_to_another_sim_line_arrives_there_and_is_delivered_and_read() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let a = app.connected_line(&key, "+34600000001").await;
    let _b = app.connected_line(&key, "+34600000002").await;

    let (status, sent) =
        app.post(&key, "/v1/messages/send", json!({"line_id": a, "to": "+34600000002", "message": "Pedido confirmado"})).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert_eq!(sent["status"], "queued");
    redactions().bind(|| insta::assert_json_snapshot!("send_accepted", sent));
    let message_id = sent["message_id"].as_str().unwrap().to_owned();

    app.eventually("the message is delivered to line B", Duration::from_secs(15), || async {
        event_types(&app, &message_id).await.last().map(String::as_str) == Some("message.delivered")
    })
    .await;
    // Line B's tenant reads the chat: line A's message turns read.
    let (status, read) = app.post(&key, "/v1/messages/read", json!({"line_id": _b, "phone": "+34600000001"})).await;
    assert_eq!((status, read["marked_read"].as_u64()), (StatusCode::OK, Some(1)), "{read}");
    app.eventually("the message is read by its recipient", Duration::from_secs(15), || async {
        event_types(&app, &message_id).await.last().map(String::as_str) == Some("message.read")
    })
    .await;
    assert_eq!(
        event_types(&app, &message_id).await,
        ["message.queued", "message.dispatch_started", "message.sent", "message.delivered", "message.read"]
    );
    let received: Value = sqlx::query_scalar("SELECT payload FROM events WHERE event_type = 'message.received'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(received["from"], "+34600000001");
    assert_eq!(received["content"]["text"], "Pedido confirmado");
    let sent_id: Value = sqlx::query_scalar("SELECT payload->'engine_message_id' FROM events WHERE event_type = 'message.sent'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(received["engine_message_id"], sent_id, "both ends know the message by the same WhatsApp id");

    let usage: Value = app.get("/v1/usage", &key).await.json().await.unwrap();
    assert_eq!(usage["usage"]["sent_messages"]["used"], 1);
    app.shutdown().await;
}

#[tokio::test]
async fn sends_of_one_line_are_spaced_while_another_line_sends_at_the_same_time() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let stuck = app.connected_line(&key, "+34600000011").await;
    let c = app.connected_line(&key, "+34600000012").await;
    // The first line's sends never answer: if lines were served one after the other, the second
    // line would wait behind it.
    let (status, _) = app.post(&key, &format!("/v1/sandbox/lines/{stuck}/fault"), json!({"mode": "hang"})).await;
    assert_eq!(status, StatusCode::OK);
    let send = |line: String, text: String| {
        let (app, key) = (&app, &key);
        async move {
            let (status, _) =
                app.post(key, "/v1/messages/send", json!({"line_id": line, "to": "+34699999999", "message": text})).await;
            assert_eq!(status, StatusCode::OK);
        }
    };
    send(stuck.clone(), "#0".into()).await;
    app.eventually("the stuck line's send is with the engine", Duration::from_secs(20), || async {
        count(&app, "SELECT count(*) FROM events WHERE event_type = 'message.dispatch_started'").await == 1
    })
    .await;
    for i in 0..3 {
        send(c.clone(), format!("#{i}")).await;
    }
    let outcomes = || count(&app, "SELECT count(*) FROM events WHERE event_type IN ('message.sent', 'message.failed')");
    // (The network has a message a moment before the dispatcher records it sent.)
    app.eventually("the other line's three are on the network and recorded sent", Duration::from_secs(20), || async {
        count(&app, "SELECT count(*) FROM sim_deliveries").await == 3 && outcomes().await == 3
    })
    .await;
    let stuck_outcome = format!(
        "SELECT count(*) FROM events WHERE event_type IN ('message.sent', 'message.failed') AND stream_id IN \
             (SELECT stream_id FROM events WHERE event_type = 'message.queued' AND payload->>'line_id' = '{stuck}')"
    );
    assert_eq!(
        count(&app, &stuck_outcome).await,
        0,
        "only the other line's sends have an outcome; the stuck one is still waiting"
    );
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT delivered_at FROM sim_deliveries WHERE from_line = $1 ORDER BY delivered_at")
            .bind(&c)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    // The pacer guarantees the spacing (a lower bound: a slow machine only spaces them more).
    for pair in times.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(gap >= 290, "sends of one line {gap} ms apart: {times:?}");
    }
    // No graceful shutdown: it would wait for the hanging send to time out. Dropping the app
    // stops the server's tasks.
}

#[tokio::test]
async fn the_quota_is_exact_under_concurrency() {
    quota_is_exact_under_concurrency(true).await;
}

#[tokio::test]
async fn the_quota_is_exact_under_concurrency_without_group_commit() {
    quota_is_exact_under_concurrency(false).await;
}

async fn quota_is_exact_under_concurrency(group_commit: bool) {
    let app = app_with_group_commit(group_commit).await;
    let (_, _, key) = app.account("starter").await; // 5 messages, 1 line
    let line = app.connected_line(&key, "+34600000021").await;
    let sends = (0..16).map(|i| {
        let (http, url, key, line) = (app.http.clone(), app.url("/v1/messages/send"), key.clone(), line.clone());
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(key)
                .json(&json!({"line_id": line, "to": "+34611111111", "message": format!("m{i}")}))
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    });
    let mut results = Vec::new();
    for s in sends.collect::<Vec<_>>() {
        results.push(s.await.unwrap());
    }
    assert_eq!(results.iter().filter(|(s, _)| *s == StatusCode::OK).count(), 5);
    let refused: Vec<&Value> = results.iter().filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS).map(|(_, b)| b).collect();
    assert_eq!(refused.len(), 11);
    insta::assert_json_snapshot!("quota_exceeded", refused[0]);
    assert_eq!(
        count(&app, "SELECT count(*) FROM events WHERE event_type = 'message.queued'").await,
        5,
        "refused sends appended nothing"
    );
    let usage: Value = app.get("/v1/usage", &key).await.json().await.unwrap();
    assert_eq!(usage["usage"]["sent_messages"], json!({"used": 5, "limit": 5, "remaining": 0}));
    app.shutdown().await;
}

#[tokio::test]
async fn one_idempotency_key_gives_one_message_and_another_body_conflicts() {
    one_idempotency_key_gives_one_message(true).await;
}

#[tokio::test]
async fn one_idempotency_key_gives_one_message_without_group_commit() {
    one_idempotency_key_gives_one_message(false).await;
}

async fn one_idempotency_key_gives_one_message(group_commit: bool) {
    let app = app_with_group_commit(group_commit).await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000031").await;
    let body = json!({"line_id": line, "to": "+34600000000", "message": "Pedido confirmado"});
    let attempts = (0..8).map(|_| {
        let (http, url, key, body) = (app.http.clone(), app.url("/api/bridge/v1/messages/send"), key.clone(), body.clone());
        tokio::spawn(async move {
            let r = http.post(url).bearer_auth(key).header("Idempotency-Key", "order-1001").json(&body).send().await.unwrap();
            (r.status(), r.headers().contains_key("idempotent-replayed"), r.text().await.unwrap())
        })
    });
    let mut results = Vec::new();
    for a in attempts.collect::<Vec<_>>() {
        results.push(a.await.unwrap());
    }
    assert!(results.iter().all(|(s, _, _)| *s == StatusCode::OK));
    // Byte for byte: a replay answers the saved response as the first request got it.
    assert!(results.iter().all(|(_, _, b)| *b == results[0].2), "every response is the same: {results:?}");
    let first: Value = serde_json::from_str(&results[0].2).unwrap();
    assert_eq!(first["status"], "queued");
    assert_eq!(results.iter().filter(|(_, replayed, _)| !replayed).count(), 1, "one request did the work");
    assert_eq!(count(&app, "SELECT count(*) FROM events WHERE event_type = 'message.queued'").await, 1);

    let (status, conflict) =
        post_with_key(&app, &key, "order-1001", json!({"line_id": line, "to": "+34600000000", "message": "Otro texto"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    insta::assert_json_snapshot!("idempotency_conflict", conflict);
    // Keys belong to the account: another account may use the same one.
    let (_, _, other_key) = app.account("pro").await;
    let other_line = app.connected_line(&other_key, "+34600000032").await;
    let (status, _) =
        post_with_key(&app, &other_key, "order-1001", json!({"line_id": other_line, "to": "+34600000000", "message": "x"})).await;
    assert_eq!(status, StatusCode::OK);
    app.shutdown().await;
}

async fn post_with_key(app: &TestApp, key: &str, idem: &str, body: Value) -> (StatusCode, Value) {
    let r = app
        .http
        .post(app.url("/v1/messages/send"))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn sends_are_refused_with_the_published_codes_and_append_nothing() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let (_, _, other_key) = app.account("pro").await;
    let connected = app.connected_line(&key, "+34600000041").await;
    let (_, pending) = app.post(&key, "/v1/lines", json!({})).await;
    let pending = pending["line"]["line_id"].as_str().unwrap().to_owned();
    let theirs = app.connected_line(&other_key, "+34600000042").await;
    let before = count(&app, "SELECT count(*) FROM events").await;

    let long = "x".repeat(4097);
    let cases: Vec<(&str, &str, Value, StatusCode, &str)> = vec![
        (
            "not_connected",
            "/v1/messages/send",
            json!({"line_id": pending, "to": "+34600000000", "message": "hi"}),
            StatusCode::CONFLICT,
            "line_not_connected",
        ),
        (
            "other_accounts_line",
            "/v1/messages/send",
            json!({"line_id": theirs, "to": "+34600000000", "message": "hi"}),
            StatusCode::NOT_FOUND,
            "line_not_found",
        ),
        (
            "missing_to",
            "/v1/messages/send",
            json!({"line_id": connected, "message": "hi"}),
            StatusCode::BAD_REQUEST,
            "validation_error",
        ),
        (
            "bad_phone",
            "/v1/messages/send",
            json!({"line_id": connected, "to": "600 000 000", "message": "hi"}),
            StatusCode::BAD_REQUEST,
            "validation_error",
        ),
        (
            "empty_message",
            "/v1/messages/send",
            json!({"line_id": connected, "to": "+34600000000", "message": " "}),
            StatusCode::BAD_REQUEST,
            "validation_error",
        ),
        (
            "long_message",
            "/v1/messages/send",
            json!({"line_id": connected, "to": "+34600000000", "message": long}),
            StatusCode::BAD_REQUEST,
            "validation_error",
        ),
        (
            "bad_archive_policy",
            "/v1/messages/send",
            json!({"line_id": connected, "to": "+34600000000", "message": "hi", "archive_policy": "sometimes"}),
            StatusCode::BAD_REQUEST,
            "validation_error",
        ),
        (
            "bad_media_type",
            "/v1/messages/send-media",
            json!({"line_id": connected, "to": "+34600000000", "media_url": "https://cdn.example.com/a.jpg", "media_type": "gif"}),
            StatusCode::BAD_REQUEST,
            "validation_error",
        ),
        (
            "bad_media_url",
            "/v1/messages/send-media",
            json!({"line_id": connected, "to": "+34600000000", "media_url": "ftp://cdn.example.com/a.jpg"}),
            StatusCode::BAD_REQUEST,
            "validation_error",
        ),
    ];
    for (name, path, body, status, code) in cases {
        let (got, response) = app.post(&key, path, body).await;
        assert_eq!((got, response["error"].as_str()), (status, Some(code)), "{name}: {response}");
        insta::assert_json_snapshot!(format!("send_refused_{name}"), response);
    }
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, before, "no refused send appended anything");
    app.shutdown().await;
}

#[tokio::test]
async fn a_failing_network_marks_the_message_failed_with_the_reason() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000051").await;
    let (status, _) = app.post(&key, &format!("/v1/sandbox/lines/{line}/fault"), json!({"mode": "fail"})).await;
    assert_eq!(status, StatusCode::OK);
    let (_, sent) = app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34600000000", "message": "hi"})).await;
    let message_id = sent["message_id"].as_str().unwrap().to_owned();
    app.eventually("the send fails", Duration::from_secs(15), || async {
        event_types(&app, &message_id).await.last().map(String::as_str) == Some("message.failed")
    })
    .await;
    let reason: String = sqlx::query_scalar("SELECT payload->>'reason' FROM events WHERE event_type = 'message.failed'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(reason.contains("simulated failure"), "{reason}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_hanging_network_times_out_and_the_line_moves_on() {
    let app = TestApp::spawn_with(|c| {
        c.line_send_interval_ms = 20;
        c.line_send_jitter_ms = 0;
        c.send_timeout_ms = 300;
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000061").await;
    app.post(&key, &format!("/v1/sandbox/lines/{line}/fault"), json!({"mode": "hang"})).await;
    let (_, hung) = app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34600000000", "message": "1"})).await;
    let hung = hung["message_id"].as_str().unwrap().to_owned();
    app.eventually("the hung send fails", Duration::from_secs(15), || async {
        event_types(&app, &hung).await.last().map(String::as_str) == Some("message.failed")
    })
    .await;
    let reason: String = sqlx::query_scalar("SELECT payload->>'reason' FROM events WHERE event_type = 'message.failed'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(reason, "the engine did not answer within 300 ms");

    app.post(&key, &format!("/v1/sandbox/lines/{line}/fault"), json!({"mode": "none"})).await;
    let (_, next) = app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34600000000", "message": "2"})).await;
    let next = next["message_id"].as_str().unwrap().to_owned();
    app.eventually("the next send goes out", Duration::from_secs(15), || async {
        event_types(&app, &next).await.contains(&"message.sent".to_owned())
    })
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn messages_queued_on_a_line_that_logs_out_fail_with_the_reason() {
    let app = TestApp::spawn_with(|c| {
        c.line_send_interval_ms = 60_000; // the first send goes at once, the second would wait a minute
        c.line_send_jitter_ms = 0;
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000071").await;
    let mut ids = Vec::new();
    for text in ["1", "2"] {
        let (_, sent) =
            app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34600000000", "message": text})).await;
        ids.push(sent["message_id"].as_str().unwrap().to_owned());
    }
    app.eventually("the first is sent", Duration::from_secs(15), || async {
        event_types(&app, &ids[0]).await.contains(&"message.sent".to_owned())
    })
    .await;
    let out = app.http.delete(app.url(&format!("/v1/lines/{line}"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    app.eventually("the second fails", Duration::from_secs(15), || async {
        event_types(&app, &ids[1]).await.last().map(String::as_str) == Some("message.failed")
    })
    .await;
    let reason: String = sqlx::query_scalar("SELECT payload->>'reason' FROM events WHERE event_type = 'message.failed'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(reason, "the line was logged out before the message could be sent");
    app.shutdown().await;
}

#[tokio::test]
async fn expired_idempotency_records_are_purged_and_the_key_can_be_used_again() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000081").await;
    let (first_status, first) =
        post_with_key(&app, &key, "order-7", json!({"line_id": line, "to": "+34600000000", "message": "a"})).await;
    assert_eq!(first_status, StatusCode::OK);
    // A day and a bit later.
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'").execute(&app.db.pool).await.unwrap();
    assert_eq!(wazion_bridge::maintenance::purge_expired(&app.db.pool).await.unwrap(), 1);
    let (status, again) =
        post_with_key(&app, &key, "order-7", json!({"line_id": line, "to": "+34600000000", "message": "b"})).await;
    assert_eq!(status, StatusCode::OK, "an expired key is a new request, not a conflict: {again}");
    assert_ne!(again["message_id"], first["message_id"]);

    // A backlog larger than one purge statement takes (each is a short transaction) goes too.
    sqlx::query(
        "INSERT INTO idempotency_keys (account_id, key, request_hash, message_id, status_code, response, created_at) \
         SELECT 'acc_x', 'old-' || i, 'h', 'msg_x', 200, '{}', now() - interval '2 days' FROM generate_series(1, 2500) AS i",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(wazion_bridge::maintenance::purge_expired(&app.db.pool).await.unwrap(), 2500);
    assert_eq!(count(&app, "SELECT count(*) FROM idempotency_keys").await, 1, "the live key stays");
    app.shutdown().await;
}

/// Sends of several accounts at once, many refused for different reasons: each caller gets its
/// own answer, whatever batch its send was decided in.
#[tokio::test]
async fn concurrent_sends_each_get_their_own_outcome() {
    let app = app().await;
    let (_, _, small) = app.account("starter").await; // 5 messages
    let (_, _, big) = app.account("pro").await;
    let small_line = app.connected_line(&small, "+34600000091").await;
    let big_line = app.connected_line(&big, "+34600000092").await;
    let (_, waiting) = app.post(&big, "/v1/lines", json!({})).await;
    let waiting = waiting["line"]["line_id"].as_str().unwrap().to_owned();
    let queued = || count(&app, "SELECT count(*) FROM events WHERE event_type = 'message.queued'");
    let before = queued().await;

    let mut requests: Vec<(&str, String, Option<&str>, Value)> = Vec::new();
    for i in 0..8 {
        requests.push((
            "small",
            small.clone(),
            None,
            json!({"line_id": small_line, "to": "+34611000001", "message": format!("s{i}")}),
        ));
        requests.push((
            "waiting",
            big.clone(),
            None,
            json!({"line_id": waiting, "to": "+34611000002", "message": format!("w{i}")}),
        ));
        requests.push((
            "keyed",
            big.clone(),
            Some("order-42"),
            json!({"line_id": big_line, "to": "+34611000003", "message": "once"}),
        ));
        requests.push((
            "plain",
            big.clone(),
            None,
            json!({"line_id": big_line, "to": "+34611000004", "message": format!("p{i}")}),
        ));
    }
    let sent = requests.into_iter().map(|(kind, key, idem, body)| {
        let (http, url) = (app.http.clone(), app.url("/v1/messages/send"));
        tokio::spawn(async move {
            let mut request = http.post(url).bearer_auth(key).json(&body);
            if let Some(idem) = idem {
                request = request.header("Idempotency-Key", idem);
            }
            let r = request.send().await.unwrap();
            let replayed = r.headers().contains_key("idempotent-replayed");
            (kind, r.status(), replayed, r.json::<Value>().await.unwrap())
        })
    });
    let mut results = Vec::new();
    for s in sent.collect::<Vec<_>>() {
        results.push(s.await.unwrap());
    }
    let of = |kind: &'static str| results.iter().filter(move |r| r.0 == kind);
    assert_eq!(of("small").filter(|r| r.1 == StatusCode::OK).count(), 5, "the small plan's five");
    assert!(of("small").filter(|r| r.1 != StatusCode::OK).all(|r| r.3["error"] == "quota_exceeded" && r.3["used"] == 5));
    assert!(of("waiting").all(|r| r.1 == StatusCode::CONFLICT && r.3["error"] == "line_not_connected"));
    assert!(of("plain").all(|r| r.1 == StatusCode::OK));
    assert!(of("keyed").all(|r| r.1 == StatusCode::OK));
    assert_eq!(of("keyed").filter(|r| !r.2).count(), 1, "one keyed send did the work, the others replay it");
    let keyed_ids: std::collections::HashSet<&str> = of("keyed").map(|r| r.3["message_id"].as_str().unwrap()).collect();
    assert_eq!(keyed_ids.len(), 1);
    let plain_ids: std::collections::HashSet<&str> = of("plain").map(|r| r.3["message_id"].as_str().unwrap()).collect();
    assert_eq!(plain_ids.len(), 8);
    assert_eq!(queued().await - before, 5 + 1 + 8, "only the accepted sends are recorded");
    let usage: Value = app.get("/v1/usage", &big).await.json().await.unwrap();
    assert_eq!(usage["usage"]["sent_messages"]["used"], 9);
    app.shutdown().await;
}

/// Two nodes (two batchers on one database) and a node without group commit, all taking one
/// Idempotency-Key at the same moment: one message, and every other request replays it.
#[tokio::test]
async fn nodes_taking_one_idempotency_key_at_once_record_one_message() {
    use wazion_bridge::commands::group_commit::SendBatcher;
    use wazion_bridge::commands::messages::{Send, SendOutcome};
    use wazion_bridge::store::{Actor, Metadata};
    let app = app().await;
    let (account, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000093").await;
    let state = &app.server.as_ref().unwrap().state;
    let nodes = [
        SendBatcher::start(state.store.clone(), state.plans.clone(), 4),
        SendBatcher::start(state.store.clone(), state.plans.clone(), 4),
        SendBatcher::start(state.store.clone(), state.plans.clone(), 0),
    ];
    let account = domain::ids::AccountId::parse(&account).unwrap();
    let send = Send {
        line_id: domain::ids::LineId::parse(&line).unwrap(),
        to: domain::chat_id::ChatId::parse("+34611000005").unwrap(),
        content: domain::message::Content::Text { text: domain::message::MessageText::parse("una vez").unwrap() },
        quoted_message_id: None,
        archive_policy: Default::default(),
        idempotency: Some(domain::message::Idempotency { key: "order-77".into(), request_hash: "same-body".into() }),
    };
    let attempts = (0..24).map(|i| {
        let (node, account, send) = (nodes[i % nodes.len()].clone(), account.clone(), send.clone());
        tokio::spawn(async move { node.send(&Metadata::new(Actor::System), &account, send).await })
    });
    let mut outcomes = Vec::new();
    for attempt in attempts.collect::<Vec<_>>() {
        outcomes.push(attempt.await.unwrap().expect("every request is answered"));
    }
    let accepted = outcomes.iter().filter(|o| matches!(o, SendOutcome::Accepted { .. })).count();
    assert_eq!(accepted, 1, "{outcomes:?}");
    let ids: std::collections::HashSet<String> = outcomes
        .iter()
        .map(|o| match o {
            SendOutcome::Accepted { response, .. } | SendOutcome::Replayed { response } => response.message_id.clone(),
        })
        .collect();
    assert_eq!(ids.len(), 1, "every replay names the one message");
    assert_eq!(count(&app, "SELECT count(*) FROM events WHERE event_type = 'message.queued'").await, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_logged_out_line_is_not_connected_for_every_kind_of_send() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000051").await;
    let (_, sent) = app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34699000051", "message": "hola"})).await;
    let message_id = sent["message_id"].as_str().unwrap().to_owned();
    // Sent, delivered and read: nothing more will happen to it.
    app.eventually("the message is read", Duration::from_secs(20), || async {
        count(&app, &format!("SELECT count(*) FROM rm_messages WHERE message_id = '{message_id}' AND status = 'read'")).await == 1
    })
    .await;
    let logout = app.http.delete(app.url(&format!("/v1/lines/{line}"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    let listed: Value = app.get("/v1/lines", &key).await.json().await.unwrap();
    assert_eq!(listed["lines"][0]["status"], "logged_out", "the line is still listed");

    let before = count(&app, "SELECT count(*) FROM events").await;
    let to = "+34699000051";
    for (path, body) in [
        ("/v1/messages/send", json!({"line_id": line, "to": to, "message": "hi"})),
        ("/v1/messages/send-media", json!({"line_id": line, "to": to, "media_url": "https://example.com/a.jpg"})),
        ("/v1/messages/reply", json!({"line_id": line, "to": to, "message": "hi", "quoted_message_id": message_id})),
        ("/v1/messages/react", json!({"line_id": line, "jid": to, "message_id": message_id, "emoji": "👍"})),
    ] {
        let (status, answer) = app.post(&key, path, body).await;
        assert_eq!((status, answer["error"].as_str()), (StatusCode::CONFLICT, Some("line_not_connected")), "{path}: {answer}");
    }
    assert_eq!(count(&app, "SELECT count(*) FROM events").await, before, "nothing appended");
    app.shutdown().await;
}

/// Two nodes' batches read a counter with room for one more send, each accepts one, and both
/// reach the counter at once: the one that gets there second finds the room gone, does not stand,
/// and its send, decided again on its own, is refused.
#[tokio::test]
async fn two_nodes_batching_at_once_never_pass_the_quota_between_their_read_and_their_write() {
    use std::sync::Arc;
    use wazion_bridge::commands::group_commit::SendBatcher;
    use wazion_bridge::commands::messages::{Send, SendError, SendOutcome};
    use wazion_bridge::store::{Actor, EventStore, Metadata};
    let app = app().await;
    let (account_id, _, key) = app.account("starter").await; // 5 messages
    let line = app.connected_line(&key, "+34600000041").await;
    for i in 0..4 {
        let (status, body) =
            app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34611111111", "message": format!("m{i}")})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    // Two nodes' batchers (each its own shard), held at the counter by a lock until both are there.
    let mut config = crate::common::test_config();
    config.plans.get_mut("starter").unwrap().sent_messages = 5;
    let plans = Arc::new(config.plan_catalog().unwrap());
    let store = EventStore::new(app.db.pool.clone(), EventStore::inline_projections());
    let mut holder = app.db.pool.begin().await.unwrap();
    sqlx::query("SELECT used FROM usage_counters WHERE account_id = $1 AND metric = 'sent_messages' FOR UPDATE")
        .bind(&account_id)
        .execute(&mut *holder)
        .await
        .unwrap();
    let account = domain::ids::AccountId::parse(&account_id).unwrap();
    let sends: Vec<_> = ["node a", "node b"]
        .into_iter()
        .map(|node| {
            let batcher = SendBatcher::start(store.clone(), plans.clone(), 1);
            let send = Send {
                line_id: domain::ids::LineId::parse(&line).unwrap(),
                to: domain::chat_id::ChatId::parse("+34611111111").unwrap(),
                content: domain::message::Content::Text { text: domain::message::MessageText::parse(node).unwrap() },
                quoted_message_id: None,
                archive_policy: Default::default(),
                idempotency: None,
            };
            let (account, metadata) = (account.clone(), Metadata::new(Actor::Operator { name: node.into() }));
            tokio::spawn(async move { batcher.send(&metadata, &account, send).await })
        })
        .collect();
    app.eventually("both batches wait at the counter", Duration::from_secs(20), || async {
        count(
            &app,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO usage_counters%'",
        )
        .await
            == 2
    })
    .await;
    holder.commit().await.unwrap();

    let mut outcomes = Vec::new();
    for send in sends {
        outcomes.push(send.await.unwrap());
    }
    assert_eq!(outcomes.iter().filter(|o| matches!(o, Ok(SendOutcome::Accepted { .. }))).count(), 1, "{outcomes:?}");
    assert!(
        outcomes.iter().any(|o| matches!(o, Err(SendError::QuotaExceeded { used: 5, limit: 5, .. }))),
        "the later one is refused: {outcomes:?}"
    );
    assert_eq!(count(&app, "SELECT count(*) FROM events WHERE event_type = 'message.queued'").await, 5);
    assert_eq!(count(&app, "SELECT used FROM usage_counters WHERE metric = 'sent_messages'").await, 5);
    let verified = app.cli(&["projections", "verify", "usage_counters", "--json"]).await;
    assert!(verified.ok(), "the counter is what the log counts: {}", verified.stdout());
    app.shutdown().await;
}
