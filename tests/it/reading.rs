//! Reading chats and messages: read-your-writes, unread counts, archive policies, the published
//! caps with cursor paging, out-of-order receipts, and read models that a rebuild reproduces.

use crate::common::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

async fn app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.line_send_interval_ms = 50;
        c.line_send_jitter_ms = 0;
        c.sim_delivered_after_ms = 10;
        c.sim_read_after_ms = 20;
        // Some tests push hundreds of inbound messages through one line as fast as it takes them.
        c.rate_limits.api_key.burst = 10_000;
        c.rate_limits.sandbox_inbound.burst = 10_000;
    })
    .await
}

async fn get(app: &TestApp, key: &str, path: &str) -> (StatusCode, Value) {
    let r = app.get(path, key).await;
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn a_client_that_sends_and_then_reads_sees_its_message() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000101").await;
    for i in 0..5 {
        let (status, sent) =
            app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34699000001", "message": format!("n{i}")})).await;
        assert_eq!(status, StatusCode::OK);
        // Immediately after each send: no waiting on the client's side.
        let (status, page) = get(&app, &key, &format!("/v1/messages?line_id={line}&phone=%2B34699000001")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["messages"][0]["message_id"], sent["message_id"], "newest first, and there");
        assert_eq!(page["messages"].as_array().unwrap().len(), i + 1);
    }
    let (_, chats) = get(&app, &key, &format!("/v1/chats?line_id={line}")).await;
    assert_eq!(chats["chats"][0]["phone"], "+34699000001");
    assert_eq!(chats["chats"][0]["jid"], "34699000001@s.whatsapp.net");
    assert_eq!(chats["chats"][0]["last_message_preview"], "n4");
    assert_eq!(chats["chats"][0]["last_direction"], "outbound");
    app.shutdown().await;
}

#[tokio::test]
async fn inbound_messages_count_as_unread_and_statuses_follow_receipts() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let a = app.connected_line(&key, "+34600000111").await;
    let b = app.connected_line(&key, "+34600000112").await;
    for text in ["hola", "¿estás?"] {
        let (status, _) =
            app.post(&key, &format!("/v1/sandbox/lines/{b}/inbound"), json!({"from": "+34655555555", "message": text})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, chats) = get(&app, &key, &format!("/v1/chats?line_id={b}")).await;
    assert_eq!(chats["chats"][0]["unread_count"], 2);
    assert_eq!(chats["chats"][0]["last_direction"], "inbound");
    let (_, page) = get(&app, &key, &format!("/v1/messages?line_id={b}&phone=34655555555@s.whatsapp.net")).await;
    assert_eq!(page["messages"][0]["text"], "¿estás?");
    assert_eq!(page["messages"][0]["direction"], "inbound");

    // From line A to line B: A sees it go to read; B sees it arrive with the same WhatsApp id.
    let (_, sent) = app.post(&key, "/v1/messages/send", json!({"line_id": a, "to": "+34600000112", "message": "ping"})).await;
    let phone_b = "%2B34600000112";
    app.eventually("A's message reaches B", Duration::from_secs(15), || async {
        get(&app, &key, &format!("/v1/messages?line_id={b}&phone=%2B34600000111")).await.1["messages"][0]["text"] == "ping"
    })
    .await;
    let (status, read) = app.post(&key, "/v1/messages/read", json!({"line_id": b, "jid": "34600000111@s.whatsapp.net"})).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    app.eventually("A's message is read", Duration::from_secs(15), || async {
        get(&app, &key, &format!("/v1/messages?line_id={a}&phone={phone_b}")).await.1["messages"][0]["status"] == "read"
    })
    .await;
    let (_, on_a) = get(&app, &key, &format!("/v1/messages?line_id={a}&phone={phone_b}")).await;
    let mine = &on_a["messages"][0];
    assert_eq!(mine["message_id"], sent["message_id"]);
    for t in ["sent_at", "delivered_at", "read_at"] {
        assert!(mine[t].is_string(), "{t} is set: {mine}");
    }
    let (_, on_b) = get(&app, &key, &format!("/v1/messages?line_id={b}&phone=%2B34600000111")).await;
    assert_eq!(on_b["messages"][0]["text"], "ping");
    assert_eq!(on_b["messages"][0]["engine_message_id"], mine["engine_message_id"]);
    app.shutdown().await;
}

#[tokio::test]
async fn the_archive_policy_of_a_send_is_honoured() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000121").await;
    let send = |policy: &'static str| {
        let (app, key, line) = (&app, key.clone(), line.clone());
        async move {
            let (status, _) = app
                .post(
                    &key,
                    "/v1/messages/send",
                    json!({"line_id": line, "to": "+34677777777", "message": policy, "archive_policy": policy}),
                )
                .await;
            assert_eq!(status, StatusCode::OK);
            get(app, &key, &format!("/v1/chats?line_id={line}")).await.1["chats"][0]["archived"].as_bool().unwrap()
        }
    };
    assert!(send("always").await);
    assert!(send("preserve_if_previously_archived").await, "kept archived");
    assert!(!send("never").await);
    assert!(!send("preserve_if_previously_archived").await, "kept unarchived");
    send("always").await;
    let (_, archived) = get(&app, &key, &format!("/v1/chats?line_id={line}&archived=true")).await;
    assert_eq!(archived["chats"].as_array().unwrap().len(), 1);
    let (_, active) = get(&app, &key, &format!("/v1/chats?line_id={line}&archived=false")).await;
    assert_eq!(active["chats"], json!([]));
    app.shutdown().await;
}

/// `n` inbound messages on `line`, from `phone(i)`, sent by a few concurrent clients.
async fn inbound_burst(app: &TestApp, key: &str, line: &str, n: usize, phone: impl Fn(usize) -> String) {
    let mut pending = Vec::new();
    for i in 0..n {
        let (http, url, key, from) =
            (app.http.clone(), app.url(&format!("/v1/sandbox/lines/{line}/inbound")), key.to_owned(), phone(i));
        pending.push(tokio::spawn(async move {
            let r =
                http.post(url).bearer_auth(key).json(&json!({"from": from, "message": format!("m{i}")})).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }));
        if pending.len() == 8 {
            for p in pending.drain(..) {
                p.await.unwrap();
            }
        }
    }
    for p in pending {
        p.await.unwrap();
    }
}

#[tokio::test]
async fn chats_are_capped_at_500_and_messages_at_200_with_a_cursor_for_the_rest() {
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000131").await;
    inbound_burst(&app, &key, &line, 501, |i| format!("+3461{i:07}")).await;
    inbound_burst(&app, &key, &line, 205, |_| "+34622222222".to_owned()).await;

    let (_, chats) = get(&app, &key, &format!("/v1/chats?line_id={line}&limit=1000")).await;
    assert_eq!(chats["chats"].as_array().unwrap().len(), 500, "at most 500 chats");
    let (_, few) = get(&app, &key, &format!("/v1/chats?line_id={line}&limit=3")).await;
    assert_eq!(few["chats"].as_array().unwrap().len(), 3);
    assert_eq!(few["chats"][0]["phone"], "+34622222222", "most recent first");
    // Without `limit`, the published maximum; the rest behind the cursor, in the same order.
    let (_, page) = get(&app, &key, &format!("/v1/chats?line_id={line}")).await;
    assert_eq!(page["chats"].as_array().unwrap().len(), 500, "{}", page["next_cursor"]);
    assert_eq!(page["chats"], chats["chats"]);
    let cursor = page["next_cursor"].as_str().expect("a cursor for the other two").to_owned();
    let (_, last) = get(&app, &key, &format!("/v1/chats?line_id={line}&cursor={cursor}")).await;
    assert_eq!(last["next_cursor"], Value::Null);
    let mut phones: Vec<String> = page["chats"]
        .as_array()
        .unwrap()
        .iter()
        .chain(last["chats"].as_array().unwrap())
        .map(|c| c["phone"].to_string())
        .collect();
    assert_eq!(phones.len(), 502);
    phones.sort();
    phones.dedup();
    assert_eq!(phones.len(), 502, "chat pages neither overlap nor skip");

    let base = format!("/v1/messages?line_id={line}&phone=%2B34622222222");
    let (_, first) = get(&app, &key, &format!("{base}&limit=1000")).await;
    assert_eq!(first["messages"].as_array().unwrap().len(), 200, "at most 200 messages");
    let (_, unlimited) = get(&app, &key, &base).await;
    assert_eq!(unlimited["messages"], first["messages"], "without `limit`, the published maximum");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = get(&app, &key, &format!("{base}&limit=1000&cursor={cursor}")).await;
    assert_eq!(rest["messages"].as_array().unwrap().len(), 5);
    assert_eq!(rest["next_cursor"], Value::Null);
    let mut texts: Vec<String> = first["messages"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["messages"].as_array().unwrap())
        .map(|m| m["message_id"].as_str().unwrap().to_owned())
        .collect();
    texts.dedup();
    assert_eq!(texts.len(), 205, "pages neither overlap nor skip");

    for (path, field) in [
        (format!("{base}&limit=0"), "limit"),
        (format!("{base}&cursor=zzz"), "cursor"),
        (format!("/v1/chats?line_id={line}&cursor=c12_x"), "cursor"),
        (format!("/v1/messages?line_id={line}"), "phone"),
        ("/v1/chats".to_owned(), "line_id"),
    ] {
        let (status, body) = get(&app, &key, &path).await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{path}: {body}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_group_is_a_chat_of_its_own_named_by_its_jid_and_its_messages_name_their_senders() {
    const GROUP: &str = "120363041234567890@g.us";
    let app = app().await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000141").await;
    let inbound = format!("/v1/sandbox/lines/{line}/inbound");
    for body in [
        json!({"from": "+34655000001", "group": GROUP, "message": "¿Cena el viernes?"}),
        json!({"from": "+34655000001", "message": "(en privado) ¿vienes?"}),
        json!({"from": "+34655000002", "group": GROUP, "message": "¡Sí!"}),
    ] {
        let (status, body) = app.post(&key, &inbound, body).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let (_, chats) = get(&app, &key, &format!("/v1/chats?line_id={line}")).await;
    let chats = chats["chats"].as_array().unwrap();
    assert_eq!(chats.len(), 2, "the group and the direct chat: {chats:?}");
    assert_eq!((chats[0]["phone"].as_str(), chats[0]["jid"].as_str()), (Some(GROUP), Some(GROUP)));
    assert_eq!((chats[0]["unread_count"].as_i64(), chats[0]["last_message_preview"].as_str()), (Some(2), Some("¡Sí!")));
    assert_eq!((chats[1]["phone"].as_str(), chats[1]["unread_count"].as_i64()), (Some("+34655000001"), Some(1)));

    // The chat's `phone` is what every other endpoint takes to name it.
    let (_, page) = get(&app, &key, &format!("/v1/messages?line_id={line}&phone={GROUP}")).await;
    let texts: Vec<(&str, &str)> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["text"].as_str().unwrap(), m["sender"]["phone"].as_str().unwrap()))
        .collect();
    assert_eq!(texts, [("¡Sí!", "+34655000002"), ("¿Cena el viernes?", "+34655000001")]);
    let (_, direct) = get(&app, &key, &format!("/v1/messages?line_id={line}&phone=%2B34655000001")).await;
    assert!(direct["messages"][0].get("sender").is_none(), "a direct chat's sender is the chat: {direct}");
    let (status, sent) =
        app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": GROUP, "message": "Allí estaré"})).await;
    assert_eq!((status, sent["to"].as_str()), (StatusCode::OK, Some(GROUP)), "{sent}");
    let (status, read) = app.post(&key, "/v1/messages/read", json!({"line_id": line, "jid": GROUP})).await;
    assert_eq!((status, read["marked_read"].as_u64()), (StatusCode::OK, Some(2)), "{read}");
    app.eventually("the simulated group receives it", Duration::from_secs(15), || async {
        get(&app, &key, &format!("/v1/messages?line_id={line}&phone={GROUP}")).await.1["messages"][0]["status"] == "read"
    })
    .await;

    // Pages of chats go past a group.
    let (_, first) = get(&app, &key, &format!("/v1/chats?line_id={line}&limit=1")).await;
    assert_eq!(first["chats"][0]["phone"], GROUP);
    let cursor = first["next_cursor"].as_str().expect("a cursor past the group");
    let (_, second) = get(&app, &key, &format!("/v1/chats?line_id={line}&limit=1&cursor={cursor}")).await;
    assert_eq!((second["chats"][0]["phone"].as_str(), &second["next_cursor"]), (Some("+34655000001"), &Value::Null));

    // What is not a chat is refused, naming the field, and nothing is recorded.
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap();
    for (path, body, field) in [
        ("/v1/messages/send", json!({"line_id": line, "to": "grupo@g.us", "message": "x"}), "to"),
        ("/v1/messages/send", json!({"line_id": line, "to": "120363041234567890@broadcast", "message": "x"}), "to"),
        ("/v1/chats/archive", json!({"line_id": line, "phone": "0120363041234567890@g.us"}), "phone"),
        (
            &format!("/v1/sandbox/lines/{line}/inbound"),
            json!({"from": "+34655000001", "group": "+34655000001", "message": "x"}),
            "group",
        ),
    ] {
        let (status, refused) = app.post(&key, path, body).await;
        assert_eq!(
            (status, refused["error"].as_str(), refused["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("validation_error"), Some(field)),
            "{refused}"
        );
    }
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(before, after, "a refused request records nothing");
    app.shutdown().await;
}

#[tokio::test]
async fn receipts_out_of_order_never_move_a_status_backwards() {
    use wazion_bridge::commands::messages::receipt;
    use wazion_bridge::store::{Actor, Metadata};
    let app = TestApp::spawn_with(|c| {
        c.sim_delivered_after_ms = 3_600_000; // the network stays silent; the test delivers receipts
        c.sim_read_after_ms = 3_600_000;
        c.line_send_jitter_ms = 0;
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000141").await;
    let (_, sent) = app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": "+34688888888", "message": "hi"})).await;
    let id = domain::ids::MessageId::parse(sent["message_id"].as_str().unwrap()).unwrap();
    let page = format!("/v1/messages?line_id={line}&phone=%2B34688888888");
    app.eventually("sent", Duration::from_secs(15), || async {
        get(&app, &key, &page).await.1["messages"][0]["status"] == "sent"
    })
    .await;

    let store = &app.server.as_ref().unwrap().state.store;
    let engine = Metadata::new(Actor::Engine { line_id: line.clone() });
    receipt(store, &engine, &id, domain::message::MessageStatus::Read).await.unwrap();
    receipt(store, &engine, &id, domain::message::MessageStatus::Delivered).await.unwrap();
    let (_, body) = get(&app, &key, &page).await;
    assert_eq!(body["messages"][0]["status"], "read");
    let kinds: Vec<String> = sqlx::query_scalar("SELECT event_type FROM events WHERE stream_id = $1 ORDER BY stream_version")
        .bind(id.as_str())
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(kinds.last().unwrap(), "message.read", "the late 'delivered' appended nothing");
    app.shutdown().await;
}

#[tokio::test]
async fn rebuilding_the_read_models_from_the_log_gives_the_same_chats_and_messages() {
    let mut app = app().await;
    let (_, _, key) = app.account("pro").await;
    let a = app.connected_line(&key, "+34600000151").await;
    let b = app.connected_line(&key, "+34600000152").await;
    inbound_burst(&app, &key, &b, 12, |i| format!("+3463{:07}", i % 4)).await;
    for i in 0..4 {
        app.post(&key, "/v1/messages/send", json!({"line_id": a, "to": "+34600000152", "message": format!("x{i}"), "archive_policy": if i % 2 == 0 { "always" } else { "never" }})).await;
    }
    app.eventually("everything is delivered", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM rm_messages WHERE direction = 'outbound' AND status = 'delivered'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
            == 4
    })
    .await;
    let (status, _) = app.post(&key, "/v1/messages/read", json!({"line_id": b, "phone": "+34600000151"})).await;
    assert_eq!(status, StatusCode::OK);
    app.eventually("and read", Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM rm_messages WHERE direction = 'outbound' AND status = 'read'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
            == 4
    })
    .await;
    // The chats runner applies the reads on its own schedule: the live read models are complete
    // only when both have caught up with the log.
    app.eventually("the read models have caught up", Duration::from_secs(20), || async {
        let status = projections::runtime::status(&app.db.pool, &["chats", "messages"]).await.unwrap();
        status.iter().all(|s| s.lag == 0)
    })
    .await;
    let pool = app.db.pool.clone();
    app.stop_server().await; // the live runners stop; the log is final

    let dump = |pool: sqlx::PgPool| async move {
        let messages: Value =
            sqlx::query_scalar("SELECT COALESCE(jsonb_agg(to_jsonb(m) ORDER BY message_id), '[]') FROM rm_messages m")
                .fetch_one(&pool)
                .await
                .unwrap();
        let chats: Value =
            sqlx::query_scalar("SELECT COALESCE(jsonb_agg(to_jsonb(c) ORDER BY line_id, phone), '[]') FROM rm_chats c")
                .fetch_one(&pool)
                .await
                .unwrap();
        (messages, chats)
    };
    let live = dump(pool.clone()).await;
    assert_eq!(live.0.as_array().unwrap().len(), 12 + 4 + 4);
    sqlx::query("TRUNCATE rm_messages, rm_chats").execute(&pool).await.unwrap();
    sqlx::query("DELETE FROM projection_checkpoints WHERE name IN ('messages', 'chats')").execute(&pool).await.unwrap();
    let rebuilt = wazion_bridge::server::async_projections().into_iter().filter(|p| ["messages", "chats"].contains(&p.name()));
    for projection in rebuilt {
        let mut applied = 0;
        while projections::runtime::catch_up_once(&pool, projection.as_ref(), 100).await.unwrap().unwrap() > 0 {
            applied += 1;
        }
        assert!(applied > 0);
    }
    assert_eq!(dump(pool).await, live);
}
