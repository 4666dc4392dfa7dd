//! Replies, reactions, marking read and archiving, between two sim lines.

use crate::common::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

async fn app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.line_send_interval_ms = 30;
        c.line_send_jitter_ms = 0;
        c.sim_delivered_after_ms = 10;
        c.sim_read_after_ms = 20;
    })
    .await
}

async fn messages(app: &TestApp, key: &str, line: &str, phone: &str) -> Vec<Value> {
    let r: Value =
        app.get(&format!("/v1/messages?line_id={line}&phone={}", phone.replace('+', "%2B")), key).await.json().await.unwrap();
    r["messages"].as_array().unwrap().clone()
}

struct Pair {
    key: String,
    a: String,
    b: String,
}

const PHONE_A: &str = "+34600000201";
const PHONE_B: &str = "+34600000202";

async fn pair(app: &TestApp) -> Pair {
    let (_, _, key) = app.account("pro").await;
    let mut lines = Vec::new();
    for phone in [PHONE_A, PHONE_B] {
        let (_, created) = app.post(&key, "/v1/lines", json!({})).await;
        let line = created["line"]["line_id"].as_str().unwrap().to_owned();
        app.post(&key, &format!("/v1/sandbox/lines/{line}/scan"), json!({"phone": phone})).await;
        lines.push(line);
    }
    let b = lines.pop().unwrap();
    Pair { key, a: lines.pop().unwrap(), b }
}

#[tokio::test]
async fn a_reply_quotes_the_message_on_both_ends() {
    let app = app().await;
    let p = pair(&app).await;
    // B writes to A; A replies quoting it.
    let (_, inbound) = app
        .post(&p.key, &format!("/v1/sandbox/lines/{}/inbound", p.a), json!({"from": "+34655000001", "message": "¿Tenéis stock?"}))
        .await;
    let quoted = inbound["message_id"].as_str().unwrap().to_owned();
    let (status, reply) = app
        .post(
            &p.key,
            "/v1/messages/reply",
            json!({"line_id": p.a, "to": "+34655000001", "message": "Sí", "quoted_message_id": quoted}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let listed = messages(&app, &p.key, &p.a, "+34655000001").await;
    assert_eq!(listed[0]["quoted_message_id"], quoted.as_str());

    // Between two sim lines the quote crosses the network by WhatsApp id.
    let (_, first) = app.post(&p.key, "/v1/messages/send", json!({"line_id": p.a, "to": PHONE_B, "message": "first"})).await;
    let first_id = first["message_id"].as_str().unwrap().to_owned();
    app.eventually("B received it", Duration::from_secs(15), || async {
        !messages(&app, &p.key, &p.b, PHONE_A).await.is_empty()
    })
    .await;
    let (status, _) = app
        .post(
            &p.key,
            "/v1/messages/reply",
            json!({"line_id": p.a, "to": PHONE_B, "message": "second", "quoted_message_id": first_id}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    app.eventually("B received the reply", Duration::from_secs(15), || async {
        messages(&app, &p.key, &p.b, PHONE_A).await.len() == 2
    })
    .await;
    let on_b = messages(&app, &p.key, &p.b, PHONE_A).await;
    assert_eq!(on_b[0]["text"], "second");
    assert_eq!(on_b[0]["quoted_message_id"], on_b[1]["message_id"], "B sees the quote as its own copy of the first message");

    let (status, body) = app
        .post(
            &p.key,
            "/v1/messages/reply",
            json!({"line_id": p.a, "to": PHONE_B, "message": "x", "quoted_message_id": "msg_00000000000000000000000000"}),
        )
        .await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("quoted_message_id")));
    insta::assert_json_snapshot!("reply_quoted_not_found", body);
    app.shutdown().await;
}

#[tokio::test]
async fn reactions_show_on_their_target_and_an_empty_emoji_removes_them() {
    let app = app().await;
    let p = pair(&app).await;
    let (_, sent) = app.post(&p.key, "/v1/messages/send", json!({"line_id": p.a, "to": PHONE_B, "message": "¿Te gusta?"})).await;
    let id = sent["message_id"].as_str().unwrap().to_owned();
    app.eventually("B received it", Duration::from_secs(15), || async {
        !messages(&app, &p.key, &p.b, PHONE_A).await.is_empty()
    })
    .await;
    let on_b = messages(&app, &p.key, &p.b, PHONE_A).await[0].clone();

    // B reacts to its copy, addressing it by WhatsApp id; A sees the reaction from B's phone.
    let (status, body) = app
        .post(
            &p.key,
            "/v1/messages/react",
            json!({"line_id": p.b, "jid": "34600000201@s.whatsapp.net", "message_id": on_b["engine_message_id"], "emoji": "❤️"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.eventually("A sees B's reaction", Duration::from_secs(15), || async {
        messages(&app, &p.key, &p.a, PHONE_B).await[0]["reactions"] == json!({PHONE_B: "❤️"})
    })
    .await;
    assert_eq!(messages(&app, &p.key, &p.b, PHONE_A).await[0]["reactions"], json!({"self": "❤️"}));
    assert_eq!(messages(&app, &p.key, &p.b, PHONE_A).await.len(), 1, "a reaction is not listed as a message");

    app.post(
        &p.key,
        "/v1/messages/react",
        json!({"line_id": p.b, "jid": PHONE_A, "message_id": on_b["message_id"], "emoji": ""}),
    )
    .await;
    app.eventually("the reaction is removed on A", Duration::from_secs(15), || async {
        messages(&app, &p.key, &p.a, PHONE_B).await[0]["reactions"] == json!({})
    })
    .await;

    for (emoji, field) in [("thumbs up", "emoji"), ("👍👍 x", "emoji")] {
        let (status, body) = app
            .post(&p.key, "/v1/messages/react", json!({"line_id": p.a, "jid": PHONE_B, "message_id": id, "emoji": emoji}))
            .await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{body}");
    }
    let (status, body) = app
        .post(&p.key, "/v1/messages/react", json!({"line_id": p.a, "jid": PHONE_B, "message_id": "3EB0NOPE", "emoji": "👍"}))
        .await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("message_id")));
    app.shutdown().await;
}

#[tokio::test]
async fn marking_read_clears_unread_and_sends_read_receipts() {
    let app = app().await;
    let p = pair(&app).await;
    let mut ids = Vec::new();
    for text in ["uno", "dos", "tres"] {
        let (_, sent) = app.post(&p.key, "/v1/messages/send", json!({"line_id": p.a, "to": PHONE_B, "message": text})).await;
        ids.push(sent["message_id"].as_str().unwrap().to_owned());
    }
    app.eventually("B has all three", Duration::from_secs(15), || async {
        messages(&app, &p.key, &p.b, PHONE_A).await.len() == 3
    })
    .await;
    let chats: Value = app.get(&format!("/v1/chats?line_id={}", p.b), &p.key).await.json().await.unwrap();
    assert_eq!(chats["chats"][0]["unread_count"], 3);

    // Only the oldest one first.
    let oldest = messages(&app, &p.key, &p.b, PHONE_A).await[2]["message_id"].clone();
    let (status, body) =
        app.post(&p.key, "/v1/messages/read", json!({"line_id": p.b, "phone": PHONE_A, "message_ids": [oldest]})).await;
    assert_eq!((status, body["marked_read"].as_u64()), (StatusCode::OK, Some(1)));
    app.eventually("A's first message is read", Duration::from_secs(15), || async {
        messages(&app, &p.key, &p.a, PHONE_B).await[2]["status"] == "read"
    })
    .await;
    assert_ne!(messages(&app, &p.key, &p.a, PHONE_B).await[0]["status"], "read");

    let (_, body) = app.post(&p.key, "/v1/messages/read", json!({"line_id": p.b, "phone": PHONE_A})).await;
    assert_eq!(body["marked_read"], 2, "the rest");
    let chats: Value = app.get(&format!("/v1/chats?line_id={}", p.b), &p.key).await.json().await.unwrap();
    assert_eq!(chats["chats"][0]["unread_count"], 0);
    app.eventually("all of A's messages are read", Duration::from_secs(15), || async {
        messages(&app, &p.key, &p.a, PHONE_B).await.iter().all(|m| m["status"] == "read")
    })
    .await;

    let (status, body) =
        app.post(&p.key, "/v1/messages/read", json!({"line_id": p.b, "phone": PHONE_A, "message_ids": [ids[0]]})).await;
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("message_ids")),
        "A's id is not a message of B's chat"
    );
    let (status, _) = app.post(&p.key, "/v1/messages/read", json!({"line_id": p.b})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.shutdown().await;
}

#[tokio::test]
async fn chats_are_archived_and_unarchived_on_a_connected_line_only() {
    let app = app().await;
    let p = pair(&app).await;
    app.post(&p.key, "/v1/messages/send", json!({"line_id": p.a, "to": "+34644000001", "message": "hola"})).await;
    let (status, body) = app.post(&p.key, "/v1/chats/archive", json!({"line_id": p.a, "phone": "+34644000001"})).await;
    assert_eq!((status, body["archived"].as_bool()), (StatusCode::OK, Some(true)));
    let chats: Value = app.get(&format!("/v1/chats?line_id={}&archived=true", p.a), &p.key).await.json().await.unwrap();
    assert_eq!(chats["chats"][0]["phone"], "+34644000001");

    let (_, body) =
        app.post(&p.key, "/v1/chats/archive", json!({"line_id": p.a, "phone": "+34644000001", "archive": false})).await;
    assert_eq!(body["archived"], false);
    let chats: Value = app.get(&format!("/v1/chats?line_id={}&archived=false", p.a), &p.key).await.json().await.unwrap();
    assert_eq!(chats["chats"].as_array().unwrap().len(), 1);

    let types: Vec<String> =
        sqlx::query_scalar("SELECT event_type FROM events WHERE stream_type = 'chat' ORDER BY global_position")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(types, ["chat.archived", "chat.unarchived"]);

    app.post(&p.key, &format!("/v1/sandbox/lines/{}/disconnect", p.a), json!({})).await;
    let (status, body) = app.post(&p.key, "/v1/chats/archive", json!({"line_id": p.a, "phone": "+34644000001"})).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::CONFLICT, Some("line_not_connected")));
    app.shutdown().await;
}

#[tokio::test]
async fn a_reaction_to_a_message_still_queued_waits_behind_it_and_fails_with_it() {
    let app = TestApp::spawn_with(|c| {
        c.allow_private_urls = true;
        c.line_send_interval_ms = 30;
        c.line_send_jitter_ms = 0;
        c.sim_delivered_after_ms = 10;
        c.sim_read_after_ms = 20;
    })
    .await;
    let p = pair(&app).await;
    let (media_url, mut downloads, release) = crate::common::held_file().await;
    let status_of = |id: String| {
        let app = &app;
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM rm_messages WHERE message_id = $1")
                .bind(id)
                .fetch_optional(&app.db.pool)
                .await
                .unwrap()
                .unwrap_or_default()
        }
    };
    // Line A's queue is held by a file that does not come: what is sent after it stays queued.
    let queue = |text: &'static str| {
        let (app, p) = (&app, &p);
        async move {
            let (status, sent) =
                app.post(&p.key, "/v1/messages/send", json!({"line_id": p.a, "to": PHONE_B, "message": text})).await;
            assert_eq!(status, StatusCode::OK, "{sent}");
            sent["message_id"].as_str().unwrap().to_owned()
        }
    };
    let (status, _) =
        app.post(&p.key, "/v1/messages/send-media", json!({"line_id": p.a, "to": PHONE_B, "media_url": media_url})).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(20), downloads.wait_for(|n| *n >= 1)).await.unwrap().unwrap();
    let target = queue("¿Vienes?").await;
    let react = |target: String| {
        let (app, p) = (&app, &p);
        async move {
            app.post(&p.key, "/v1/messages/react", json!({"line_id": p.a, "jid": PHONE_B, "message_id": target, "emoji": "🙏"}))
                .await
        }
    };
    let (status, reaction) = react(target.clone()).await;
    assert_eq!(status, StatusCode::OK, "a reaction to a queued message is accepted: {reaction}");
    assert_eq!(status_of(target.clone()).await, "queued", "its target was still queued");
    let reaction_id = reaction["message_id"].as_str().unwrap().to_owned();

    release.notify_waiters();
    app.eventually("B sees the reaction on the message", Duration::from_secs(20), || async {
        messages(&app, &p.key, &p.b, PHONE_A)
            .await
            .iter()
            .any(|m| m["text"] == "¿Vienes?" && m["reactions"] == json!({PHONE_A: "🙏"}))
    })
    .await;
    // B may see it a moment before A records the send: await that too.
    app.eventually("the reaction is recorded sent", Duration::from_secs(20), || async {
        ["sent", "delivered", "read"].contains(&status_of(reaction_id.clone()).await.as_str())
    })
    .await;

    // When the target fails, so does the reaction queued behind it, with the reason.
    let (status, _) =
        app.post(&p.key, "/v1/messages/send-media", json!({"line_id": p.a, "to": PHONE_B, "media_url": media_url})).await;
    assert_eq!(status, StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(20), downloads.wait_for(|n| *n >= 2)).await.unwrap().unwrap();
    let doomed = queue("no llegará").await;
    let (status, reaction) = react(doomed.clone()).await;
    assert_eq!(status, StatusCode::OK, "{reaction}");
    let reaction_id = reaction["message_id"].as_str().unwrap().to_owned();
    let (status, _) = app.post(&p.key, &format!("/v1/sandbox/lines/{}/fault", p.a), json!({"mode": "fail"})).await;
    assert_eq!(status, StatusCode::OK);
    release.notify_waiters();
    app.eventually("the reaction fails after its target", Duration::from_secs(20), || async {
        status_of(reaction_id.clone()).await == "failed"
    })
    .await;
    assert_eq!(status_of(doomed.clone()).await, "failed");
    let reason: String = sqlx::query_scalar("SELECT failure_reason FROM rm_messages WHERE message_id = $1")
        .bind(&reaction_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(reason, format!("the message reacted to ({doomed}) was not sent"));
    // A message that failed cannot be reacted to any more.
    let (status, refused) = react(doomed).await;
    assert_eq!((status, refused["error"].as_str()), (StatusCode::BAD_REQUEST, Some("validation_error")), "{refused}");
    app.shutdown().await;
}
