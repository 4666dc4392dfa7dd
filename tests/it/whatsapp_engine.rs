//! The `whatsapp` engine through its seam: a scripted fake WhatsApp (the one stand-in for a
//! network we cannot reach) drives real lines of a real server on PostgreSQL, and the tests assert
//! what a tenant sees — statuses, QR and pairing codes, messages, receipts, webhooks — and the
//! calls the server made on WhatsApp.

use crate::common::receiver::Receiver;
use crate::common::{redactions, TestApp};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use wazion_bridge::config::Config;
use wazion_bridge::engine::whatsapp::fake::{Call, FakeRun, FakeWhatsapp};
use wazion_bridge::engine::whatsapp::seam::{
    WaBody, WaEvent, WaInbound, WaInboundBody, WaMediaKind, WaMediaRef, WaMessageKey, WaReceipt,
};

const WAIT: Duration = Duration::from_secs(20);
const OURS: &str = "+34600000001";
const OUR_DEVICE: &str = "34600000001:4@s.whatsapp.net";
const THEIRS: &str = "+34600000002";
const THEIR_JID: &str = "34600000002@s.whatsapp.net";

fn fast(config: &mut Config) {
    config.allow_private_urls = true;
    config.line_send_interval_ms = 20;
    config.line_send_jitter_ms = 0;
    config.webhooks.retry_schedule_ms = vec![50; 6];
    config.webhooks.retry_jitter = 0.0;
}

async fn spawn(fake: &FakeWhatsapp) -> TestApp {
    TestApp::spawn_with_whatsapp(fake, fast).await
}

async fn get_json(app: &TestApp, key: &str, path: &str) -> (StatusCode, Value) {
    let response = app.get(path, key).await;
    (response.status(), response.json().await.unwrap())
}

async fn status_of(app: &TestApp, key: &str, line: &str) -> String {
    get_json(app, key, &format!("/v1/lines/{line}")).await.1["line"]["status"].as_str().unwrap_or_default().to_owned()
}

async fn await_status(app: &TestApp, key: &str, line: &str, status: &str) {
    app.eventually(&format!("the line is {status}"), WAIT, || async { status_of(app, key, line).await == status }).await;
}

async fn new_line(app: &TestApp, key: &str) -> String {
    let (status, created) = app.post(key, "/v1/lines", json!({"engine": "whatsapp"})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["line"]["engine"], "whatsapp");
    assert_eq!(created["line"]["status"], "pending_qr");
    created["line"]["line_id"].as_str().unwrap().to_owned()
}

/// A `whatsapp` line linked to OURS through a scan on the fake phone; its client's first run.
async fn linked_line(app: &TestApp, fake: &FakeWhatsapp, key: &str) -> (String, FakeRun) {
    let line = new_line(app, key).await;
    let run = fake.run(&line, 1).await;
    run.emit(WaEvent::Paired { jid: OUR_DEVICE.into(), phone: OURS.trim_start_matches('+').into() }).await;
    run.emit(WaEvent::Connected).await;
    await_status(app, key, &line, "connected").await;
    (line, run)
}

/// A server with a linked line and a webhook receiver of its `message.received` events.
async fn receiving_line(fake: &FakeWhatsapp) -> (TestApp, Receiver, String, String, FakeRun) {
    let receiver = Receiver::start().await;
    let app = spawn(fake).await;
    let (_, _, key) = app.account("pro").await;
    let (status, _) = app.post(&key, "/v1/webhooks", json!({"url": receiver.url, "events": ["message.received"]})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (line, run) = linked_line(&app, fake, &key).await;
    (app, receiver, key, line, run)
}

async fn messages(app: &TestApp, key: &str, line: &str, phone: &str) -> Vec<Value> {
    let path = format!("/v1/messages?line_id={line}&phone={}", phone.replace('+', "%2B"));
    let (status, body) = get_json(app, key, &path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["messages"].as_array().unwrap().clone()
}

async fn message(app: &TestApp, key: &str, line: &str, id: &str) -> Value {
    messages(app, key, line, THEIRS).await.into_iter().find(|m| m["message_id"] == id).unwrap_or(Value::Null)
}

async fn await_message(app: &TestApp, key: &str, line: &str, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    app.eventually(what, WAIT, || async { check(&message(app, key, line, id).await) }).await;
    message(app, key, line, id).await
}

async fn send(app: &TestApp, key: &str, line: &str, text: &str) -> String {
    let (status, sent) = app.post(key, "/v1/messages/send", json!({"line_id": line, "to": THEIRS, "message": text})).await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    sent["message_id"].as_str().unwrap().to_owned()
}

async fn line_events(app: &TestApp, line: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM events WHERE stream_type = 'line' AND stream_id = $1 ORDER BY global_position")
        .bind(line)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

fn inbound(id: &str, body: WaInboundBody) -> WaInbound {
    WaInbound {
        id: id.into(),
        chat: THEIR_JID.into(),
        sender: THEIR_JID.into(),
        sender_phone: Some(THEIRS.trim_start_matches('+').into()),
        timestamp: chrono::Utc::now(),
        body,
        quoted_id: None,
    }
}

#[tokio::test]
async fn a_whatsapp_line_links_by_qr_code_drops_comes_back_and_is_logged_out_from_the_phone() {
    let fake = FakeWhatsapp::new();
    let receiver = Receiver::start().await;
    let app = spawn(&fake).await;
    let (_, _, key) = app.account("pro").await;
    let (status, _) = app.post(&key, "/v1/webhooks", json!({"url": receiver.url, "events": ["line.status"]})).await;
    assert_eq!(status, StatusCode::CREATED);
    let line = new_line(&app, &key).await;

    // The session starts at once and shows the library's codes as they rotate.
    let run = fake.run(&line, 1).await;
    run.emit(WaEvent::Qr { code: "2@first,code".into(), valid_for: Duration::from_secs(60) }).await;
    let (status, qr) = get_json(&app, &key, &format!("/v1/lines/{line}/qr")).await;
    assert_eq!(status, StatusCode::OK, "{qr}");
    assert_eq!(qr["qr"], "2@first,code");
    run.emit(WaEvent::Qr { code: "2@second,code".into(), valid_for: Duration::from_secs(20) }).await;
    app.eventually("the QR code rotates", WAIT, || async {
        get_json(&app, &key, &format!("/v1/lines/{line}/qr")).await.1["qr"] == "2@second,code"
    })
    .await;
    let svg = app.get(&format!("/v1/lines/{line}/qr?format=svg"), &key).await;
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(svg.text().await.unwrap().contains("<svg"));

    // Scanned: connected, with the phone's number; no QR code any more.
    run.emit(WaEvent::Paired { jid: OUR_DEVICE.into(), phone: "34600000001".into() }).await;
    run.emit(WaEvent::Connected).await;
    await_status(&app, &key, &line, "connected").await;
    let (_, detail) = get_json(&app, &key, &format!("/v1/lines/{line}")).await;
    assert_eq!(detail["line"]["phone"], OURS);
    let (status, refused) = get_json(&app, &key, &format!("/v1/lines/{line}/qr")).await;
    assert_eq!((status, refused["error"].as_str()), (StatusCode::CONFLICT, Some("line_not_pending_qr")));
    let jid: String =
        sqlx::query_scalar("SELECT payload->>'jid' FROM events WHERE stream_id = $1 AND event_type = 'line.connected'")
            .bind(&line)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(jid, OUR_DEVICE, "the device's jid is recorded");

    // The connection drops: disconnected, then a new client after the backoff, connected again.
    run.emit(WaEvent::Disconnected { reason: "connection reset by peer".into() }).await;
    await_status(&app, &key, &line, "disconnected").await;
    let second = fake.run(&line, 2).await;
    second.emit(WaEvent::Connected).await;
    await_status(&app, &key, &line, "connected").await;

    // Unlinked from the phone: logged out for good, the reason told, the session over.
    second.emit(WaEvent::LoggedOut { reason: "unlinked from the phone".into() }).await;
    await_status(&app, &key, &line, "logged_out").await;
    fake.call("the client closed", |c| matches!(c, Call::Disconnect { line_id } if *line_id == line).then_some(())).await;
    assert_eq!(fake.runs(&line), 2, "a logged-out line is not started again");

    let statuses = receiver.wait_for(4, WAIT).await;
    let seen: Vec<(String, Option<String>)> = statuses
        .iter()
        .map(|r| r.json())
        .map(|b| (b["data"]["status"].as_str().unwrap().to_owned(), b["data"]["reason"].as_str().map(str::to_owned)))
        .collect();
    assert_eq!(
        seen,
        [
            ("connected".to_owned(), None),
            ("disconnected".to_owned(), Some("connection reset by peer".to_owned())),
            ("connected".to_owned(), None),
            ("logged_out".to_owned(), Some("unlinked from the phone".to_owned())),
        ]
    );
    assert_eq!(
        line_events(&app, &line).await,
        ["line.created", "line.connected", "line.disconnected", "line.connected", "line.logged_out"]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn when_the_qr_codes_run_out_the_line_waits_until_someone_asks_for_a_code_again() {
    let fake = FakeWhatsapp::new();
    let app = spawn(&fake).await;
    let (_, _, key) = app.account("pro").await;
    let line = new_line(&app, &key).await;
    let run = fake.run(&line, 1).await;
    run.emit(WaEvent::QrExhausted).await;
    await_status(&app, &key, &line, "qr_expired").await;
    assert_eq!(fake.runs(&line), 1);

    // Asking for the QR code starts a new pairing run; the request waits for its first code.
    let asked = {
        let (app, key, line) = (&app, key.clone(), line.clone());
        async move { get_json(app, &key, &format!("/v1/lines/{line}/qr")).await }
    };
    let answer = async {
        let second = fake.run(&line, 2).await;
        second.emit(WaEvent::Qr { code: "2@fresh,run".into(), valid_for: Duration::from_secs(60) }).await;
    };
    let ((status, qr), ()) = tokio::join!(asked, answer);
    assert_eq!(status, StatusCode::OK, "{qr}");
    assert_eq!(qr["qr"], "2@fresh,run");
    assert_eq!(status_of(&app, &key, &line).await, "pending_qr");
    assert_eq!(line_events(&app, &line).await, ["line.created", "line.qr_expired", "line.pairing_restarted"]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_pairing_code_links_by_phone_number_instead_of_a_scan() {
    let fake = FakeWhatsapp::new();
    let app = spawn(&fake).await;
    let (_, _, key) = app.account("pro").await;
    let line = new_line(&app, &key).await;
    fake.run(&line, 1).await;

    let path = format!("/v1/lines/{line}/pairing-code");
    let (status, code) = app.post(&key, &path, json!({"phone": "+34 600 000 001"})).await;
    assert_eq!(status, StatusCode::OK, "{code}");
    redactions().bind(|| insta::assert_json_snapshot!("whatsapp_pairing_code", code));
    let asked = fake.call("a pairing code", |c| match c {
        Call::PairingCode { line_id, phone } if *line_id == line => Some(phone.clone()),
        _ => None,
    });
    assert_eq!(asked.await, "34600000001");

    // Bad input changes nothing and reaches nobody.
    let events_before: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap();
    for body in [json!({}), json!({"phone": "not a number"}), json!({"phone": "+34600000001", "extra": 1})] {
        let (status, refused) = app.post(&key, &path, body.clone()).await;
        assert_eq!((status, refused["error"].as_str()), (StatusCode::BAD_REQUEST, Some("validation_error")), "{body}");
    }
    let events_after: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(events_before, events_after);
    let pairing_calls = fake.calls().iter().filter(|c| matches!(c, Call::PairingCode { .. })).count();
    assert_eq!(pairing_calls, 1);

    // Another account's line is not found; a linked line takes no code.
    let (_, _, other) = app.account("pro").await;
    let (status, refused) = app.post(&other, &path, json!({"phone": OURS})).await;
    assert_eq!((status, refused["error"].as_str()), (StatusCode::NOT_FOUND, Some("line_not_found")));
    let run = fake.run(&line, 1).await;
    run.emit(WaEvent::Paired { jid: OUR_DEVICE.into(), phone: "34600000001".into() }).await;
    run.emit(WaEvent::Connected).await;
    await_status(&app, &key, &line, "connected").await;
    let (status, refused) = app.post(&key, &path, json!({"phone": OURS})).await;
    assert_eq!((status, refused["error"].as_str()), (StatusCode::CONFLICT, Some("line_not_pending_qr")), "{refused}");

    // A sandbox line answers with its own code (linking still happens by the sandbox's scan).
    let (_, sim) = app.post(&key, "/v1/lines", json!({"engine": "sim"})).await;
    let sim = sim["line"]["line_id"].as_str().unwrap();
    let (status, code) = app.post(&key, &format!("/v1/lines/{sim}/pairing-code"), json!({"phone": OURS})).await;
    assert_eq!(status, StatusCode::OK, "{code}");
    assert_eq!(code["pairing_code"].as_str().unwrap().len(), 8);
    app.shutdown().await;
}

/// A file server for send-media: one small PNG.
async fn png_server() -> String {
    let app = axum::Router::new().route(
        "/photo.png",
        axum::routing::get(|| async { ([(axum::http::header::CONTENT_TYPE, "image/png")], b"\x89PNG fake image".to_vec()) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/photo.png", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn every_kind_of_message_goes_out_under_its_own_id_and_receipts_move_it_on() {
    let fake = FakeWhatsapp::new();
    let app = spawn(&fake).await;
    let (_, _, key) = app.account("pro").await;
    let (line, run) = linked_line(&app, &fake, &key).await;
    let photo = png_server().await;

    let text = send(&app, &key, &line, "Pedido confirmado").await;
    let (status, media) = app
        .post(
            &key,
            "/v1/messages/send-media",
            json!({"line_id": line, "to": THEIRS, "media_url": photo, "media_type": "image", "caption": "Tu pedido"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{media}");
    let (status, reply) = app
        .post(
            &key,
            "/v1/messages/reply",
            json!({"line_id": line, "to": THEIRS, "message": "¡Gracias!", "quoted_message_id": text}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reaction) =
        app.post(&key, "/v1/messages/react", json!({"line_id": line, "jid": THEIRS, "message_id": text, "emoji": "👍"})).await;
    assert_eq!(status, StatusCode::OK, "{reaction}");
    let (status, removal) =
        app.post(&key, "/v1/messages/react", json!({"line_id": line, "jid": THEIRS, "message_id": text, "emoji": ""})).await;
    assert_eq!(status, StatusCode::OK, "{removal}");

    let sent = fake.sent(&line, 5).await;
    let sent_text = await_message(&app, &key, &line, &text, "the text is sent", |m| m["status"] == "sent").await;
    let text_id = sent_text["engine_message_id"].as_str().unwrap().to_owned();
    assert!(sent.iter().all(|m| m.to == THEIR_JID));
    assert_eq!(sent[0].id, text_id, "sent under the id recorded before the call");
    assert_eq!(sent[0].body, WaBody::Text("Pedido confirmado".into()));
    match &sent[1].body {
        WaBody::Media { kind, bytes, mime_type, caption, .. } => {
            assert_eq!((*kind, mime_type.as_str(), caption.as_deref()), (WaMediaKind::Image, "image/png", Some("Tu pedido")));
            assert_eq!(bytes.as_slice(), b"\x89PNG fake image");
        }
        other => panic!("a media message, not {other:?}"),
    }
    assert_eq!(sent[2].body, WaBody::Text("¡Gracias!".into()));
    let quoted = sent[2].quoted.as_ref().expect("a reply quotes");
    assert_eq!(quoted.key, WaMessageKey { chat: THEIR_JID.into(), id: text_id.clone(), from_me: true, participant: None });
    assert_eq!((quoted.sender.as_str(), quoted.text.as_deref()), ("34600000001@s.whatsapp.net", Some("Pedido confirmado")));
    let target = WaMessageKey { chat: THEIR_JID.into(), id: text_id.clone(), from_me: true, participant: None };
    assert_eq!(sent[3].body, WaBody::Reaction { target: target.clone(), emoji: "👍".into() });
    assert_eq!(sent[4].body, WaBody::Reaction { target, emoji: String::new() });

    // Receipts name WhatsApp's ids: delivered, then read.
    run.emit(WaEvent::Receipt { chat: THEIR_JID.into(), message_ids: vec![text_id.clone()], kind: WaReceipt::Delivered }).await;
    await_message(&app, &key, &line, &text, "delivered", |m| m["status"] == "delivered").await;
    run.emit(WaEvent::Receipt { chat: THEIR_JID.into(), message_ids: vec![text_id], kind: WaReceipt::Read }).await;
    await_message(&app, &key, &line, &text, "read", |m| m["status"] == "read").await;

    // Marking read and archiving reach the phone.
    let received = inbound("3A0000000000000001", WaInboundBody::Text("¿Llega hoy?".into()));
    run.deliver(vec![received]).await.unwrap();
    app.eventually("the inbound message is listed", WAIT, || async {
        messages(&app, &key, &line, THEIRS).await.iter().any(|m| m["text"] == "¿Llega hoy?")
    })
    .await;
    let (status, read) = app.post(&key, "/v1/messages/read", json!({"line_id": line, "phone": THEIRS})).await;
    assert_eq!((status, read["marked_read"].as_u64()), (StatusCode::OK, Some(1)), "{read}");
    let (status, _) = app.post(&key, "/v1/chats/archive", json!({"line_id": line, "phone": THEIRS})).await;
    assert_eq!(status, StatusCode::OK);
    let calls = fake.calls();
    assert!(calls.contains(&Call::MarkRead {
        line_id: line.clone(),
        chat: THEIR_JID.into(),
        sender: THEIR_JID.into(),
        message_ids: vec!["3A0000000000000001".into()],
    }));
    assert!(calls.contains(&Call::Archive { line_id: line.clone(), chat: THEIR_JID.into(), archived: true }));
    app.shutdown().await;
}

#[tokio::test]
async fn what_whatsapp_refuses_fails_with_its_reason() {
    let fake = FakeWhatsapp::new();
    let app = spawn(&fake).await;
    let (_, _, key) = app.account("pro").await;
    let (line, _) = linked_line(&app, &fake, &key).await;
    fake.refuse(THEIR_JID, "the number is not on WhatsApp");
    let id = send(&app, &key, &line, "¿Hola?").await;
    let failed = await_message(&app, &key, &line, &id, "the message fails", |m| m["status"] == "failed").await;
    assert!(failed["failure_reason"].as_str().unwrap().contains("the number is not on WhatsApp"), "{failed}");
    app.shutdown().await;
}

#[tokio::test]
async fn while_the_connection_is_down_messages_wait_and_then_go_out_in_order() {
    let fake = FakeWhatsapp::new();
    let app = spawn(&fake).await;
    let (_, _, key) = app.account("pro").await;
    let (line, run) = linked_line(&app, &fake, &key).await;

    fake.set_offline(&line, true);
    let ids = [send(&app, &key, &line, "uno").await, send(&app, &key, &line, "dos").await, send(&app, &key, &line, "tres").await];
    // The first send finds the connection down; it is tried again, not failed.
    app.eventually("the first send was attempted", WAIT, || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM events WHERE stream_id = $1 AND event_type = 'message.dispatch_started'",
        )
        .bind(&ids[0])
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
            >= 2
    })
    .await;
    run.emit(WaEvent::Disconnected { reason: "network unreachable".into() }).await;
    await_status(&app, &key, &line, "disconnected").await;
    for id in &ids {
        assert_eq!(message(&app, &key, &line, id).await["status"], "queued");
    }

    fake.set_offline(&line, false);
    fake.run(&line, 2).await.emit(WaEvent::Connected).await;
    let sent = fake.sent(&line, 3).await;
    let texts: Vec<WaBody> = sent.into_iter().map(|m| m.body).collect();
    assert_eq!(texts, ["uno", "dos", "tres"].map(|t| WaBody::Text(t.into())));
    for id in &ids {
        await_message(&app, &key, &line, id, "sent after the reconnection", |m| m["status"] == "sent").await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_logout_from_the_phone_fails_the_queued_messages_and_forgets_the_session() {
    let fake = FakeWhatsapp::new();
    let app = spawn(&fake).await;
    let (_, _, key) = app.account("pro").await;
    let (line, run) = linked_line(&app, &fake, &key).await;
    fake.set_offline(&line, true);
    let ids = [send(&app, &key, &line, "uno").await, send(&app, &key, &line, "dos").await];
    run.emit(WaEvent::LoggedOut { reason: "the number was banned".into() }).await;
    await_status(&app, &key, &line, "logged_out").await;
    for id in &ids {
        let failed = await_message(&app, &key, &line, id, "failed", |m| m["status"] == "failed").await;
        let reason = failed["failure_reason"].as_str().unwrap();
        assert!(reason.contains("logged out") && reason.contains("the number was banned"), "{failed}");
    }
    let (status, refused) = app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": THEIRS, "message": "x"})).await;
    assert_eq!((status, refused["error"].as_str()), (StatusCode::CONFLICT, Some("line_not_connected")));
    app.shutdown().await;
}

#[tokio::test]
async fn inbound_messages_are_recorded_once_and_acknowledged_only_after_the_commit() {
    let fake = FakeWhatsapp::new();
    let (app, receiver, key, line, run) = receiving_line(&fake).await;
    let ours = send(&app, &key, &line, "Tu pedido sale hoy").await;
    let ours = await_message(&app, &key, &line, &ours, "sent", |m| m["status"] == "sent").await;
    let our_wa_id = ours["engine_message_id"].as_str().unwrap().to_owned();

    let mut reply = inbound("3A0000000000000002", WaInboundBody::Text("¡Perfecto!".into()));
    reply.quoted_id = Some(our_wa_id.clone());
    let photo = WaMediaRef {
        direct_path: "/v/t62.7118-24/photo".into(),
        media_key: vec![1; 32],
        file_sha256: vec![2; 32],
        file_enc_sha256: vec![3; 32],
        file_length: 2048,
        kind_label: "image".into(),
    };
    let mut group = inbound("3A0000000000000005", WaInboundBody::Text("en el grupo".into()));
    group.chat = GROUP.into();
    let batch = vec![
        inbound("3A0000000000000001", WaInboundBody::Text("Hola".into())),
        reply,
        inbound("3A0000000000000003", WaInboundBody::Reaction { target_id: our_wa_id.clone(), emoji: "❤️".into() }),
        inbound(
            "3A0000000000000004",
            WaInboundBody::Media {
                kind: WaMediaKind::Image,
                mime_type: "image/jpeg".into(),
                caption: Some("mira".into()),
                media: photo,
            },
        ),
        group,
        inbound("3A0000000000000006", WaInboundBody::Unsupported { kind: "poll".into() }),
    ];
    assert_eq!(run.deliver(batch.clone()).await, Ok(()), "acknowledged once committed");
    let received = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = 'message.received'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
    };
    assert_eq!(received().await, 5, "text, reply, reaction, image and the group's text; the poll is not carried");

    // WhatsApp redelivers what it did not see acknowledged: nothing is recorded twice.
    assert_eq!(run.deliver(batch).await, Ok(()));
    assert_eq!(received().await, 5);

    app.eventually("the chat shows them", WAIT, || async {
        let listed = messages(&app, &key, &line, THEIRS).await;
        listed.iter().any(|m| m["text"] == "¡Perfecto!") && listed.iter().any(|m| m["type"] == "image")
    })
    .await;
    let listed = messages(&app, &key, &line, THEIRS).await;
    let reply = listed.iter().find(|m| m["text"] == "¡Perfecto!").unwrap();
    assert_eq!(reply["quoted_message_id"], ours["message_id"], "{reply}");
    let image = listed.iter().find(|m| m["type"] == "image").unwrap();
    assert_eq!(image["caption"], "mira");
    let image_id = image["message_id"].as_str().unwrap();
    assert_eq!(image["media_url"], format!("/v1/messages/{image_id}/media"));
    app.eventually("the reaction is on our message", WAIT, || async {
        message(&app, &key, &line, ours["message_id"].as_str().unwrap()).await["reactions"] == json!({THEIRS: "❤️"})
    })
    .await;
    let hooks = receiver.wait_for(5, WAIT).await;
    assert!(hooks.iter().all(|r| r.json()["event"] == "message.received"));
    app.shutdown().await;
}

/// A member of a group, as WhatsApp names group members today: by a LID, with the phone number
/// alongside.
const MEMBER_LID: &str = "100200300400500@lid";
const GROUP: &str = "120363000000000001@g.us";

#[tokio::test]
async fn group_messages_arrive_with_the_group_and_their_sender_and_everything_sent_to_the_group_goes_there() {
    let fake = FakeWhatsapp::new();
    let (app, receiver, key, line, run) = receiving_line(&fake).await;

    let mut said = inbound("3A00000000000000G1", WaInboundBody::Text("¿Quién trae el pastel?".into()));
    (said.chat, said.sender) = (GROUP.into(), MEMBER_LID.into());
    run.deliver(vec![said]).await.unwrap();

    // The webhook names the group as the chat (what `to` takes to answer there) and the sender.
    let hook = receiver.wait_for(1, WAIT).await.remove(0).json();
    redactions().bind(|| insta::assert_json_snapshot!("whatsapp_group_message_received", hook));
    app.eventually("the group is a chat", WAIT, || async {
        get_json(&app, &key, &format!("/v1/chats?line_id={line}")).await.1["chats"][0]["phone"] == GROUP
    })
    .await;
    let chats = get_json(&app, &key, &format!("/v1/chats?line_id={line}")).await.1;
    let chat = &chats["chats"][0];
    assert_eq!((chat["jid"].as_str(), chat["unread_count"].as_i64()), (Some(GROUP), Some(1)), "{chat}");
    let listed = messages(&app, &key, &line, GROUP).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["sender"], json!({"phone": THEIRS, "jid": THEIR_JID}), "{}", listed[0]);
    assert_eq!(listed[0]["phone"], GROUP);
    let theirs = listed[0]["message_id"].as_str().unwrap().to_owned();
    assert!(messages(&app, &key, &line, THEIRS).await.is_empty(), "not a message of the sender's direct chat");

    // A send, a reply and a reaction to the group: each goes to the group, and what it quotes or
    // reacts to is named with its author as WhatsApp named them.
    let (status, sent) = app.post(&key, "/v1/messages/send", json!({"line_id": line, "to": GROUP, "message": "Yo"})).await;
    assert_eq!((status, sent["to"].as_str()), (StatusCode::OK, Some(GROUP)), "{sent}");
    let (status, reply) = app
        .post(&key, "/v1/messages/reply", json!({"line_id": line, "to": GROUP, "message": "¡Yo!", "quoted_message_id": theirs}))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let (status, reaction) =
        app.post(&key, "/v1/messages/react", json!({"line_id": line, "jid": GROUP, "message_id": theirs, "emoji": "🎂"})).await;
    assert_eq!(status, StatusCode::OK, "{reaction}");
    let sent = fake.sent(&line, 3).await;
    assert!(sent.iter().all(|m| m.to == GROUP), "{sent:?}");
    assert_eq!(sent[0].body, WaBody::Text("Yo".into()));
    let theirs_key = WaMessageKey {
        chat: GROUP.into(),
        id: "3A00000000000000G1".into(),
        from_me: false,
        participant: Some(MEMBER_LID.into()),
    };
    let quoted = sent[1].quoted.as_ref().expect("the reply quotes");
    assert_eq!((&quoted.key, quoted.sender.as_str()), (&theirs_key, MEMBER_LID));
    assert_eq!(sent[2].body, WaBody::Reaction { target: theirs_key, emoji: "🎂".into() });

    // Receipts from the group move our message on.
    let ours = sent[0].id.clone();
    run.emit(WaEvent::Receipt { chat: GROUP.into(), message_ids: vec![ours.clone()], kind: WaReceipt::Delivered }).await;
    app.eventually("our group message is delivered", WAIT, || async {
        messages(&app, &key, &line, GROUP).await.iter().any(|m| m["engine_message_id"] == ours && m["status"] == "delivered")
    })
    .await;

    // Read receipts go to the message's author; archiving archives the group.
    let (status, read) = app.post(&key, "/v1/messages/read", json!({"line_id": line, "phone": GROUP})).await;
    assert_eq!((status, read["marked_read"].as_u64()), (StatusCode::OK, Some(1)), "{read}");
    let (status, _) = app.post(&key, "/v1/chats/archive", json!({"line_id": line, "phone": GROUP})).await;
    assert_eq!(status, StatusCode::OK);
    let calls = fake.calls();
    assert!(
        calls.contains(&Call::MarkRead {
            line_id: line.clone(),
            chat: GROUP.into(),
            sender: MEMBER_LID.into(),
            message_ids: vec!["3A00000000000000G1".into()],
        }),
        "{calls:?}"
    );
    assert!(calls.contains(&Call::Archive { line_id: line.clone(), chat: GROUP.into(), archived: true }));

    // A member WhatsApp names only by a LID, with no number, cannot be shown: not recorded.
    let mut anonymous = inbound("3A00000000000000G2", WaInboundBody::Text("hola".into()));
    (anonymous.chat, anonymous.sender, anonymous.sender_phone) = (GROUP.into(), MEMBER_LID.into(), None);
    run.deliver(vec![anonymous]).await.unwrap();
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'message.received'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(recorded, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn another_client_taking_the_session_over_leaves_the_line_disconnected_and_is_not_fought() {
    let fake = FakeWhatsapp::new();
    let app = spawn(&fake).await;
    let (_, _, key) = app.account("pro").await;
    let (line, run) = linked_line(&app, &fake, &key).await;
    run.emit(WaEvent::StreamReplaced).await;
    await_status(&app, &key, &line, "disconnected").await;
    fake.call("the client closed", |c| matches!(c, Call::Disconnect { line_id } if *line_id == line).then_some(())).await;
    let reason: String =
        sqlx::query_scalar("SELECT payload->>'reason' FROM events WHERE stream_id = $1 AND event_type = 'line.disconnected'")
            .bind(&line)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(reason.contains("another WhatsApp Web client took over"), "{reason}");
    // The node let the line's lease go, and does not start the session again.
    app.eventually("the lease is released", WAIT, || async {
        sqlx::query_scalar::<_, bool>("SELECT expires_at < now() FROM line_leases WHERE line_id = $1")
            .bind(&line)
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(fake.runs(&line), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn a_node_that_stops_closes_its_sessions_and_the_next_one_takes_the_lines_back() {
    let fake = FakeWhatsapp::new();
    let mut app = spawn(&fake).await;
    let (_, _, key) = app.account("pro").await;
    let (line, _) = linked_line(&app, &fake, &key).await;

    app.stop_server().await;
    assert!(fake.calls().contains(&Call::Disconnect { line_id: line.clone() }), "closed cleanly on shutdown");
    let released: bool = sqlx::query_scalar("SELECT expires_at < now() FROM line_leases WHERE line_id = $1")
        .bind(&line)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(released, "the lease is released at once");

    // A message accepted while no node runs the line waits for the next one.
    app.start_server_with_whatsapp(&fake, fast).await;
    let id = send(&app, &key, &line, "después del reinicio").await;
    let second = fake.run(&line, 2).await;
    second.emit(WaEvent::Connected).await;
    let sent = fake.sent(&line, 1).await;
    assert_eq!(sent[0].body, WaBody::Text("después del reinicio".into()));
    await_message(&app, &key, &line, &id, "sent", |m| m["status"] == "sent").await;
    let epoch: i64 =
        sqlx::query_scalar("SELECT epoch FROM line_leases WHERE line_id = $1").bind(&line).fetch_one(&app.db.pool).await.unwrap();
    assert_eq!(epoch, 2, "the new node owns the line under a new epoch");
    app.shutdown().await;
}

#[tokio::test]
async fn a_tenants_logout_unlinks_the_device_and_deletes_its_session_state() {
    let fake = FakeWhatsapp::new();
    let app = spawn(&fake).await;
    let (_, _, key) = app.account("pro").await;
    let (line, _) = linked_line(&app, &fake, &key).await;
    let identities = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM wa_identities WHERE line_id = $1")
            .bind(&line)
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
    };
    assert_eq!(identities().await, 1, "the client's keys are kept in PostgreSQL");
    let response = app.http.delete(app.url(&format!("/v1/lines/{line}"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    fake.call("the device unlinked", |c| matches!(c, Call::Logout { line_id } if *line_id == line).then_some(())).await;
    await_status(&app, &key, &line, "logged_out").await;
    assert_eq!(identities().await, 0, "a logged-out line's session state is deleted");
    app.shutdown().await;
}

#[tokio::test]
async fn a_received_file_is_fetched_from_whatsapp_when_the_tenant_asks_for_it() {
    let fake = FakeWhatsapp::new();
    let mut app = TestApp::spawn_with_whatsapp(&fake, |c| {
        fast(c);
        c.media_max_bytes = 4096;
    })
    .await;
    let (_, _, key) = app.account("pro").await;
    let (_, run) = linked_line(&app, &fake, &key).await;
    let file = |path: &str, length: u64| WaMediaRef {
        direct_path: path.into(),
        media_key: vec![7; 32],
        file_sha256: vec![8; 32],
        file_enc_sha256: vec![9; 32],
        file_length: length,
        kind_label: "document".into(),
    };
    let document = |id: &str, media: WaMediaRef| {
        inbound(
            id,
            WaInboundBody::Media { kind: WaMediaKind::Document, mime_type: "application/pdf".into(), caption: None, media },
        )
    };
    fake.serve_file("/v/invoice", b"%PDF-1.7 invoice".to_vec());
    let batch = vec![
        document("3A00000000000000A1", file("/v/invoice", 16)),
        document("3A00000000000000A2", file("/v/huge", 1 << 30)),
        inbound("3A00000000000000A3", WaInboundBody::Text("sin archivo".into())),
    ];
    run.deliver(batch).await.unwrap();
    let pool = app.db.pool.clone();
    let id_of = |engine_id: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT message_id FROM whatsapp_inbound_seen WHERE engine_message_id = $1")
                .bind(engine_id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let invoice = id_of("3A00000000000000A1").await;

    // By our id or by WhatsApp's: the file, fetched through the line's session.
    for id in [invoice.as_str(), "3A00000000000000A1"] {
        let response = app.get(&format!("/v1/messages/{id}/media"), &key).await;
        assert_eq!(response.status(), StatusCode::OK, "{id}");
        assert_eq!(response.headers()["content-type"], "application/pdf");
        assert_eq!(response.bytes().await.unwrap().as_ref(), b"%PDF-1.7 invoice");
    }
    let downloads = fake.calls().iter().filter(|c| matches!(c, Call::Download { .. })).count();
    assert_eq!(downloads, 2, "fetched each time, never stored");

    // Too large for this server: refused before any download, with the sizes.
    let huge = id_of("3A00000000000000A2").await;
    let response = app.get(&format!("/v1/messages/{huge}/media"), &key).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value = response.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("up to 4096 bytes"), "{body}");
    assert_eq!(fake.calls().iter().filter(|c| matches!(c, Call::Download { .. })).count(), 2);

    // A text message has no file; another account's file is not found.
    let text = id_of("3A00000000000000A3").await;
    let (_, _, other) = app.account("pro").await;
    for (id, key) in [(text.as_str(), key.as_str()), (invoice.as_str(), other.as_str())] {
        let (status, body) = get_json(&app, key, &format!("/v1/messages/{id}/media")).await;
        assert_eq!((status, body["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")), "{body}");
    }
    // While the line's session is down the file waits: retryable.
    app.stop_server().await;
    app.start_server_with_whatsapp(&fake, fast).await;
    let (status, body) = get_json(&app, &key, &format!("/v1/messages/{invoice}/media")).await;
    assert_eq!((status, body["error"].as_str()), (StatusCode::SERVICE_UNAVAILABLE, Some("session_unavailable")), "{body}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_line_is_served_by_one_node_at_a_time_and_another_takes_it_when_its_node_stops() {
    let fake = FakeWhatsapp::new();
    let mut app = spawn(&fake).await;
    let (_, _, key) = app.account("pro").await;
    let (line, _) = linked_line(&app, &fake, &key).await;

    // A second node on the same database sees the line, but another node holds it.
    let mut config = crate::common::test_config();
    fast(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = wazion_bridge::server::StartOptions { whatsapp: Some(std::sync::Arc::new(fake.clone())), session_stores: None };
    let other = wazion_bridge::server::start_with(config, app.db.pool.clone(), listener, options).await.unwrap();
    let other_base = format!("http://{}", other.addr);
    let pool = app.db.pool.clone();
    let owner = || async {
        sqlx::query_scalar::<_, String>("SELECT owner FROM line_leases WHERE line_id = $1")
            .bind(&line)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let first_owner = owner().await;
    assert_eq!(first_owner, app.server.as_ref().unwrap().node_id());

    // Its node stops: the other takes the line over at its next look (the lease was released).
    app.stop_server().await;
    let second = fake.run(&line, 2).await;
    assert_eq!(owner().await, other.node_id());
    second.emit(WaEvent::Connected).await;
    app.base = other_base;
    let id = send(&app, &key, &line, "desde el otro nodo").await;
    assert_eq!(fake.sent(&line, 1).await[0].body, WaBody::Text("desde el otro nodo".into()));
    await_message(&app, &key, &line, &id, "sent", |m| m["status"] == "sent").await;
    assert_eq!(fake.runs(&line), 2, "one client at a time");
    other.shutdown().await;
}

#[tokio::test]
async fn sessions_are_placed_on_each_lines_node_among_the_live_dispatch_nodes() {
    let fake = FakeWhatsapp::new();
    let app = TestApp::spawn_with_whatsapp(&fake, |c| {
        fast(c);
        c.node_id = "node-a".into();
    })
    .await;
    let mut config = crate::common::test_config();
    fast(&mut config);
    config.node_id = "node-b".into();
    config.roles = vec!["dispatch".into()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let options = wazion_bridge::server::StartOptions { whatsapp: Some(std::sync::Arc::new(fake.clone())), session_stores: None };
    let other = wazion_bridge::server::start_with(config, app.db.pool.clone(), listener, options).await.unwrap();
    // Both nodes count each other (their dispatchers read the live nodes at each scan).
    app.eventually("both nodes see two live dispatch nodes", WAIT, || async {
        let mut text = String::new();
        wazion_bridge::metrics::global().render(&mut text);
        ["node-a", "node-b"].iter().all(|n| text.contains(&format!("bridge_dispatch_live_nodes{{node=\"{n}\"}} 2\n")))
    })
    .await;

    let (_, _, key) = app.account("business").await;
    let mut lines = Vec::new();
    for _ in 0..6 {
        let line = new_line(&app, &key).await;
        fake.run(&line, 1).await;
        lines.push(line);
    }
    crate::common::assert_lines_on_their_nodes(&app.db.pool, &lines, &["node-a", "node-b"]).await;
    for line in &lines {
        assert_eq!(fake.runs(line), 1, "one client for {line}");
    }
    other.shutdown().await;
    app.shutdown().await;
}
