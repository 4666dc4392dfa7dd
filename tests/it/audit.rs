//! Auditors: `bridge audit verify` passes on a clean log and names each tampering made directly in
//! SQL (an edited payload, a deleted event, two swapped events, a rewritten chain, an edited
//! digest); `verify --against` a digest exported earlier catches deleted digests and the log
//! rewritten after them, and an edited export; `audit replay` and `audit state` are pinned by
//! snapshots and hold no secret.

use crate::common::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use std::path::{Path, PathBuf};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

async fn app() -> TestApp {
    TestApp::spawn_with(|c| {
        c.allow_private_urls = true;
        c.line_send_interval_ms = 20;
        c.line_send_jitter_ms = 0;
        c.sim_delivered_after_ms = 10;
        c.sim_read_after_ms = 20;
        // Digests are recorded by the tests, when they choose.
        c.audit_digest_interval_secs = 3600;
    })
    .await
}

/// Send `n` messages from `line` and wait until every one of them has been read.
async fn send_and_wait_until_read(app: &TestApp, key: &str, line: &str, n: usize) {
    let reads = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE event_type = 'message.read'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
    };
    let before = reads().await;
    for i in 0..n {
        let (status, body) =
            app.post(key, "/v1/messages/send", json!({"line_id": line, "to": "+34699000001", "message": format!("m{i}")})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    app.eventually("every message is read", WAIT, || async { reads().await == before + n as i64 }).await;
}

/// An account with a line that has sent three messages, all read; returns (app, account, key).
async fn populated() -> (TestApp, String, String) {
    let app = app().await;
    let (account, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000301").await;
    send_and_wait_until_read(&app, &key, &line, 3).await;
    (app, account, key)
}

/// Run SQL as someone with direct access to the database would: with the append-only trigger
/// (and every other trigger) switched off for this session.
async fn tamper(app: &TestApp, statements: &[&str]) {
    let mut conn = PgConnection::connect_with(&app.db.pool.connect_options()).await.unwrap();
    sqlx::query("SET session_replication_role = replica").execute(&mut conn).await.unwrap();
    for sql in statements {
        sqlx::query(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    conn.close().await.unwrap();
}

async fn position_of(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.db.pool).await.unwrap()
}

/// `bridge audit verify --json`: whether it exited 0, and its report.
async fn verify(app: &TestApp, account: Option<&str>) -> (bool, Value) {
    verify_with(app, account, &[]).await
}

/// `bridge audit verify --against FILE --json`.
async fn verify_against(app: &TestApp, file: &Path, account: Option<&str>) -> (bool, Value) {
    verify_with(app, account, &["--against", file.to_str().unwrap()]).await
}

async fn verify_with(app: &TestApp, account: Option<&str>, more: &[&str]) -> (bool, Value) {
    let mut args = vec!["audit", "verify", "--json"];
    if let Some(a) = account {
        args.extend(["--account", a]);
    }
    args.extend(more);
    let run = app.cli(&args).await;
    let report: Value = serde_json::from_str(&run.stdout()).unwrap_or_else(|e| panic!("{e}: {} {}", run.stdout(), run.stderr()));
    assert_eq!(run.ok(), report["ok"] == true, "the exit code says what the report says");
    (run.ok(), report)
}

async fn digest(app: &TestApp) -> Value {
    app.cli(&["audit", "digest", "--json"]).await.json()
}

/// Record digests until one covers the whole log. A digest never covers a transaction that may
/// still commit, and the horizon is server-wide (other tests' transactions hold it back too).
async fn digest_everything(app: &TestApp) {
    app.eventually("a digest covers the whole log", WAIT, || async {
        digest(app).await;
        sqlx::query_scalar::<_, bool>(
            "SELECT NOT EXISTS (SELECT 1 FROM events e, (SELECT * FROM log_digests ORDER BY digest_id DESC LIMIT 1) d \
                                WHERE (e.transaction_id, e.global_position) > (d.transaction_id, d.global_position)) \
                AND EXISTS (SELECT 1 FROM log_digests)",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
    })
    .await;
}

fn breaks(report: &Value) -> Vec<(String, Option<i64>)> {
    report["breaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["kind"].as_str().unwrap().to_owned(), b["position"].as_i64()))
        .collect()
}

#[tokio::test]
async fn a_clean_log_verifies_and_an_edited_payload_is_named_by_its_position() {
    let (app, account, _) = populated().await;
    digest_everything(&app).await;
    assert_eq!(digest(&app).await["recorded"], false, "nothing new to sign");
    let (ok, report) = verify(&app, None).await;
    assert!(ok, "{report}");
    assert!(report["digests_checked"].as_i64().unwrap() >= 1);
    assert_eq!(report["events_after_last_digest"], 0);
    assert_eq!(report["events_checked"].as_i64().unwrap(), position_of(&app, "SELECT count(*) FROM events").await);

    let target = position_of(
        &app,
        "SELECT global_position FROM events WHERE event_type = 'message.queued' ORDER BY global_position OFFSET 1 LIMIT 1",
    )
    .await;
    tamper(
        &app,
        &[&format!("UPDATE events SET payload = payload || '{{\"to\": \"+34611111111\"}}' WHERE global_position = {target}")],
    )
    .await;
    let (ok, report) = verify(&app, None).await;
    assert!(!ok);
    assert_eq!(breaks(&report), vec![("altered".to_owned(), Some(target))], "{report}");
    assert_eq!(report["breaks"][0]["version"], 1);
    // The same through the account's own streams.
    let (ok, report) = verify(&app, Some(&account)).await;
    assert!(!ok);
    assert_eq!(breaks(&report), vec![("altered".to_owned(), Some(target))]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_deleted_event_is_named_by_the_gap_it_leaves_and_a_deleted_head_by_the_digest() {
    let (app, _, _) = populated().await;
    digest_everything(&app).await;
    // A message's stream: queued, dispatch_started, sent, delivered, read. Delete `sent` of the
    // first message, and `read` (its newest event, which the digest signed) of the second.
    let first = "(SELECT stream_id FROM events WHERE event_type = 'message.queued' ORDER BY global_position LIMIT 1)";
    let second = "(SELECT stream_id FROM events WHERE event_type = 'message.queued' ORDER BY global_position OFFSET 1 LIMIT 1)";
    let sent = position_of(
        &app,
        &format!("SELECT global_position FROM events WHERE stream_id = {first} AND event_type = 'message.sent'"),
    )
    .await;
    let after_sent =
        position_of(&app, &format!("SELECT global_position FROM events WHERE stream_id = {first} AND stream_version = 4")).await;
    let read = position_of(
        &app,
        &format!("SELECT global_position FROM events WHERE stream_id = {second} AND event_type = 'message.read'"),
    )
    .await;
    tamper(&app, &[&format!("DELETE FROM events WHERE global_position IN ({sent}, {read})")]).await;

    let (ok, report) = verify(&app, None).await;
    assert!(!ok);
    let found = report["breaks"].as_array().unwrap();
    let gap = found.iter().find(|b| b["position"] == after_sent).expect("the gap is named");
    assert_eq!(gap["kind"], "removed");
    assert_eq!(gap["version"], 3);
    assert!(gap["detail"].as_str().unwrap().contains(&format!("before position {after_sent}")), "{gap}");
    let second_stream: String =
        sqlx::query_scalar(&format!("SELECT 'message/' || {second}")).fetch_one(&app.db.pool).await.unwrap();
    let head = found
        .iter()
        .find(|b| b["digest_id"].is_i64() && b["stream"] == second_stream.as_str())
        .expect("a digest names the missing head");
    assert_eq!(head["kind"], "removed");
    assert_eq!(head["version"], 5);
    // Nothing else is reported. (When another test's transaction held the horizon back, the first
    // digest stopped early and also signed the deleted `sent` as its stream's newest event then:
    // that digest names it too.)
    let first_stream: String =
        sqlx::query_scalar(&format!("SELECT 'message/' || {first}")).fetch_one(&app.db.pool).await.unwrap();
    for b in found {
        let about = (b["stream"].as_str(), b["version"].as_i64());
        assert!(
            b["kind"] == "removed" && (about == (Some(&first_stream), Some(3)) || about == (Some(&second_stream), Some(5))),
            "only the two deleted events are reported: {report}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn two_swapped_events_are_reported_as_reordered_at_their_positions() {
    let (app, _, _) = populated().await;
    digest_everything(&app).await;
    let stream = "(SELECT stream_id FROM events WHERE event_type = 'message.queued' ORDER BY global_position LIMIT 1)";
    let v2 =
        position_of(&app, &format!("SELECT global_position FROM events WHERE stream_id = {stream} AND stream_version = 2")).await;
    let v3 =
        position_of(&app, &format!("SELECT global_position FROM events WHERE stream_id = {stream} AND stream_version = 3")).await;
    // Swap their places in the stream (through a free version, as the key forbids a direct swap).
    tamper(
        &app,
        &[
            &format!("UPDATE events SET stream_version = 1000 WHERE global_position = {v2}"),
            &format!("UPDATE events SET stream_version = 2 WHERE global_position = {v3}"),
            &format!("UPDATE events SET stream_version = 3 WHERE global_position = {v2}"),
        ],
    )
    .await;
    let (ok, report) = verify(&app, None).await;
    assert!(!ok);
    let found = breaks(&report);
    for position in [v2, v3] {
        assert!(found.contains(&("reordered".to_owned(), Some(position))), "{report}");
        // Each also stands under a version it was not hashed with.
        assert!(found.contains(&("altered".to_owned(), Some(position))), "{report}");
    }
    assert!(found.iter().all(|(_, p)| *p == Some(v2) || *p == Some(v3)), "nothing else is blamed: {report}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_rewritten_chain_passes_the_chain_check_but_not_the_signed_digest() {
    let (app, account, _) = populated().await;
    digest_everything(&app).await;
    // Edit a stream's newest event and recompute its hash the way the database does, so its
    // chain is consistent again: only the digest, signed with a key the database does not
    // hold, can tell.
    let head = position_of(
        &app,
        "SELECT global_position FROM events WHERE event_type = 'message.read' ORDER BY global_position LIMIT 1",
    )
    .await;
    tamper(
        &app,
        &[
            &format!("UPDATE events SET recorded_at = recorded_at - interval '1 day' WHERE global_position = {head}"),
            &format!(
                "UPDATE events e SET hash = sha256(p.hash || convert_to(event_canonical_text(e), 'UTF8')) \
             FROM events p WHERE e.global_position = {head} AND p.stream_type = e.stream_type \
               AND p.stream_id = e.stream_id AND p.stream_version = e.stream_version - 1"
            ),
        ],
    )
    .await;
    let (ok, report) = verify(&app, None).await;
    assert!(!ok);
    assert_eq!(breaks(&report), vec![("altered".to_owned(), Some(head))], "{report}");
    assert!(report["breaks"][0]["digest_id"].is_i64(), "named by a digest: {report}");

    // Re-signing is out of reach too: an edited digest no longer matches its signature.
    tamper(&app, &["UPDATE log_digests SET root = sha256(root)"]).await;
    let (_, report) = verify(&app, Some(&account)).await;
    let kinds: Vec<String> = breaks(&report).into_iter().map(|(k, _)| k).collect();
    assert!(kinds.iter().filter(|k| *k == "digest").count() >= 2, "root and signature: {report}");

    // Another account's history is untouched, and says so.
    let (other, _, _) = app.account("free").await;
    let clean = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events WHERE tenant_id = $1")
        .bind(&other)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(clean > 0);
    let (_, report) = verify(&app, Some(&other)).await;
    assert!(breaks(&report).iter().all(|(k, _)| k == "digest"), "only the shared digests are blamed: {report}");
    app.shutdown().await;
}

/// `bridge audit digest --latest --json`, written to a file as an auditor would keep it.
async fn export_latest_digest(app: &TestApp, name: &str) -> (Value, PathBuf) {
    let exported = app.cli(&["audit", "digest", "--latest", "--json"]).await.json();
    let file = write_file(app, name, &exported);
    (exported, file)
}

fn write_file(app: &TestApp, name: &str, contents: &Value) -> PathBuf {
    let file = std::env::temp_dir().join(format!("{}-{name}.json", app.db.name));
    std::fs::write(&file, contents.to_string()).unwrap();
    file
}

async fn newest_digest_id(app: &TestApp) -> i64 {
    position_of(app, "SELECT COALESCE(max(digest_id), 0) FROM log_digests").await
}

/// A finding's kind, stream, version and digest.
type Finding = (String, Option<String>, Option<i64>, Option<i64>);

fn findings(report: &Value) -> Vec<Finding> {
    let mut found: Vec<_> = report["breaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["kind"].as_str().unwrap().to_owned(),
                b["stream"].as_str().map(str::to_owned),
                b["version"].as_i64(),
                b["digest_id"].as_i64(),
            )
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn deleting_the_newest_digests_and_rewriting_the_log_after_them_contradicts_an_exported_digest() {
    let app = app().await;
    let (account, _, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000331").await;
    send_and_wait_until_read(&app, &key, &line, 2).await;
    digest_everything(&app).await;
    let kept = newest_digest_id(&app).await;
    send_and_wait_until_read(&app, &key, &line, 2).await;
    digest_everything(&app).await;

    // The auditor keeps the newest digest outside the database; an untouched log extends it.
    let (exported, file) = export_latest_digest(&app, "newest").await;
    let newest = exported["digest_id"].as_i64().unwrap();
    assert_eq!(newest, newest_digest_id(&app).await);
    assert!(newest > kept);
    let (ok, report) = verify_against(&app, &file, None).await;
    assert!(ok, "{report}");
    assert_eq!(report["against_digest"], newest);

    // Someone with write access to the database deletes the digests that cover the newest
    // events, rewrites a message those digests signed, and recomputes its stream's chain.
    let head = exported["heads"].as_array().unwrap().iter().find(|h| h["stream_type"] == "message").expect("a message's head");
    let (stream_id, head_version) = (head["stream_id"].as_str().unwrap(), head["stream_version"].as_i64().unwrap());
    assert!(head_version > 1);
    tamper(
        &app,
        &[
            &format!("DELETE FROM log_digest_heads WHERE digest_id > {kept}"),
            &format!("DELETE FROM log_digests WHERE digest_id > {kept}"),
            &format!(
                "UPDATE events SET payload = payload || '{{\"text\": \"refund sent\"}}' \
                 WHERE stream_type = 'message' AND stream_id = '{stream_id}' AND stream_version = 1"
            ),
            &format!(
                "DO $$ DECLARE e events; previous bytea := decode(repeat('00', 32), 'hex'); BEGIN \
                   FOR e IN SELECT * FROM events WHERE stream_type = 'message' AND stream_id = '{stream_id}' ORDER BY stream_version LOOP \
                     UPDATE events SET prev_hash = previous, hash = sha256(previous || convert_to(event_canonical_text(e), 'UTF8')) \
                      WHERE global_position = e.global_position RETURNING hash INTO previous; \
                   END LOOP; END $$"
            ),
        ],
    )
    .await;
    let rewritten = format!("message/{stream_id}");

    // The log alone cannot tell: every chain checks out, and so does every digest left.
    let (ok, report) = verify(&app, None).await;
    assert!(ok, "{report}");
    assert!(report["events_after_last_digest"].as_i64().unwrap() > 0);

    // The exported digest can: it is gone, and the head it signed no longer hashes the same.
    let expected = vec![
        ("altered".to_owned(), Some(rewritten.clone()), Some(head_version), Some(newest)),
        ("digest".to_owned(), None, None, Some(newest)),
    ];
    let (ok, report) = verify_against(&app, &file, None).await;
    assert!(!ok);
    assert_eq!(findings(&report), expected, "{report}");
    let gone = report["breaks"].as_array().unwrap().iter().find(|b| b["kind"] == "digest").unwrap();
    assert_eq!(
        gone["detail"],
        format!("digest {newest}, the one exported, is gone from the database (its digests end at {kept})")
    );
    let head_position = position_of(
        &app,
        &format!("SELECT global_position FROM events WHERE stream_id = '{stream_id}' AND stream_version = {head_version}"),
    )
    .await;
    assert!(report["breaks"].as_array().unwrap().iter().any(|b| b["kind"] == "altered" && b["position"] == head_position));
    // The account's own check names its rewritten stream too.
    let (ok, report) = verify_against(&app, &file, Some(&account)).await;
    assert!(!ok);
    assert_eq!(findings(&report), expected, "{report}");

    // Then the head it signed is deleted: what is left of the stream still chains, but the
    // exported digest names the version that is gone.
    tamper(
        &app,
        &[&format!(
            "DELETE FROM events WHERE stream_type = 'message' AND stream_id = '{stream_id}' AND stream_version = {head_version}"
        )],
    )
    .await;
    let (ok, report) = verify(&app, None).await;
    assert!(ok, "{report}");
    let expected = vec![
        ("digest".to_owned(), None, None, Some(newest)),
        ("removed".to_owned(), Some(rewritten.clone()), Some(head_version), Some(newest)),
    ];
    let (ok, report) = verify_against(&app, &file, None).await;
    assert!(!ok);
    assert_eq!(findings(&report), expected, "{report}");

    // The server goes on signing new digests over the rewritten log, under the same ids: plain
    // verify still passes, and the exported digest shows its id was reused for another.
    app.eventually("digests are signed again up to the exported one's id", WAIT, || async {
        app.cli(&["accounts", "create", "--name", "Later Ltd", "--plan", "free"]).await;
        digest(&app).await;
        newest_digest_id(&app).await >= newest
    })
    .await;
    let (ok, report) = verify(&app, None).await;
    assert!(ok, "{report}");
    let (ok, report) = verify_against(&app, &file, None).await;
    assert!(!ok);
    assert_eq!(findings(&report), expected, "{report}");
    let replaced = report["breaks"].as_array().unwrap().iter().find(|b| b["kind"] == "digest").unwrap();
    assert_eq!(replaced["detail"], format!("digest {newest} in the database is not the one exported: it was replaced"));
    std::fs::remove_file(file).unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn an_edited_exported_digest_is_not_authentic_and_a_file_that_is_none_is_refused() {
    let (app, _, _) = populated().await;
    let run = app.cli(&["audit", "digest", "--latest", "--json"]).await;
    assert!(!run.ok());
    assert!(run.stderr().starts_with("error: no digest has been recorded yet"), "{}", run.stderr());
    assert!(run.stdout().is_empty());

    digest_everything(&app).await;
    let (exported, file) = export_latest_digest(&app, "exported").await;
    let id = exported["digest_id"].as_i64().unwrap();
    assert_eq!(exported["format"], "wazion-bridge/audit-digest/v1");
    assert_eq!(exported["root"].as_str().unwrap().len(), 64);
    assert!(!exported["heads"].as_array().unwrap().is_empty());
    let (ok, report) = verify_against(&app, &file, None).await;
    assert!(ok, "{report}");

    let flip = |hex: &Value| {
        let hex = hex.as_str().unwrap();
        format!("{}{}", if hex.starts_with('0') { '1' } else { '0' }, &hex[1..])
    };
    let mut edits: Vec<(&str, Value)> = Vec::new();
    let mut edited = exported.clone();
    edited["root"] = flip(&exported["root"]).into();
    edits.push(("root", edited));
    let mut edited = exported.clone();
    edited["heads"][0]["hash"] = flip(&exported["heads"][0]["hash"]).into();
    edits.push(("head-hash", edited));
    let mut edited = exported.clone();
    edited["heads"][0]["stream_version"] = (exported["heads"][0]["stream_version"].as_i64().unwrap() + 1).into();
    edits.push(("head-version", edited));
    let mut edited = exported.clone();
    edited["heads"].as_array_mut().unwrap().pop();
    edits.push(("head-dropped", edited));
    let mut edited = exported.clone();
    edited["covers"]["global_position"] = (exported["covers"]["global_position"].as_i64().unwrap() + 1).into();
    edits.push(("covers", edited));
    let mut edited = exported.clone();
    edited["signature"] = flip(&exported["signature"]).into();
    edits.push(("signature", edited));
    for (name, edited) in edits {
        let file = write_file(&app, name, &edited);
        let (ok, report) = verify_against(&app, &file, None).await;
        assert!(!ok, "{name}");
        assert_eq!(findings(&report), vec![("not_authentic".to_owned(), None, None, Some(id))], "{name}: {report}");
        assert!(report["breaks"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("the exported digest {id} is not authentic")));
        std::fs::remove_file(file).unwrap();
    }

    // Not an exported digest at all, or no file: an error, and no report.
    let other = write_file(&app, "other", &json!({"ok": true}));
    for (path, expected) in [
        (other.as_path(), "is not a digest printed by `bridge audit digest --latest --json`"),
        (Path::new("/nonexistent/digest.json"), "cannot read /nonexistent/digest.json"),
    ] {
        let run = app.cli(&["audit", "verify", "--against", path.to_str().unwrap(), "--json"]).await;
        assert!(!run.ok());
        assert!(run.stderr().starts_with("error: ") && run.stderr().contains(expected), "{}", run.stderr());
        assert!(run.stdout().is_empty());
    }
    std::fs::remove_file(other).unwrap();
    std::fs::remove_file(file).unwrap();
    app.shutdown().await;
}

fn redactions() -> insta::Settings {
    let mut settings = crate::common::redactions();
    settings.add_filter(r#""position": \d+"#, r#""position": "[position]""#);
    // The operator's name comes from the environment ($USER).
    settings.add_filter(r#""name": "cli:[^"]*""#, r#""name": "cli:[user]""#);
    settings
}

#[tokio::test]
async fn replay_prints_the_accounts_history_in_order_with_who_acted_and_no_secret() {
    let app = app().await;
    let (account, key_id, key) = app.account("pro").await;
    let line = app.connected_line(&key, "+34600000311").await;
    send_and_wait_until_read(&app, &key, &line, 1).await;
    let rotated = app.cli(&["keys", "rotate", &key_id, "--grace", "1h", "--json"]).await.json();
    let new_key = rotated["api_key"].as_str().unwrap().to_owned();
    let (status, hook) =
        app.post(&new_key, "/v1/webhooks", json!({"url": "https://127.0.0.1:9/wazion", "events": ["message.received"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let hook_id = hook["webhook"]["id"].as_str().unwrap();
    let (status, rotated_hook) = app.post(&new_key, &format!("/v1/webhooks/{hook_id}/rotate-secret"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rotated_hook}");
    assert!(app.cli(&["accounts", "set-plan", &account, "business"]).await.ok());

    let run = app.cli(&["audit", "replay", "--account", &account]).await;
    assert!(run.ok(), "{}", run.stderr());
    let out = run.stdout();
    for secret in [key.as_str(), new_key.as_str(), hook["secret"].as_str().unwrap(), rotated_hook["secret"].as_str().unwrap()] {
        assert!(!out.contains(secret), "a secret in the replay");
    }
    let sealed: Vec<String> = sqlx::query_scalar("SELECT payload->>'secret' FROM events WHERE payload ? 'secret'")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let hashes: Vec<String> = sqlx::query_scalar("SELECT payload->>'key_hash' FROM events WHERE payload ? 'key_hash'")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!((sealed.len(), hashes.len()), (2, 2));
    assert!(sealed.iter().chain(&hashes).all(|s| !out.contains(s.as_str())), "neither sealed secrets nor key hashes");
    let lines: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).expect("NDJSON")).collect();
    let positions: Vec<i64> = lines.iter().map(|l| l["position"].as_i64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "log order");
    redactions().bind(|| insta::assert_json_snapshot!("audit_replay", lines));

    // One stream, and a time window that ends before anything happened.
    let run = app.cli(&["audit", "replay", "--account", &account, "--stream", &format!("line/{line}")]).await;
    let types: Vec<String> =
        run.stdout().lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["type"].as_str().unwrap().to_owned()).collect();
    assert_eq!(types, ["line.created", "line.connected"]);
    let run = app.cli(&["audit", "replay", "--account", &account, "--to", "2020-01-01"]).await;
    assert!(run.ok() && run.stdout().is_empty());
    let run = app.cli(&["audit", "replay", "--account", "acc_00000000000000000000000000"]).await;
    assert!(!run.ok() && run.stderr().contains("no account"), "{}", run.stderr());
    app.shutdown().await;
}

async fn db_now(app: &TestApp) -> String {
    sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>("SELECT clock_timestamp()")
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
        .to_rfc3339()
}

#[tokio::test]
async fn state_as_of_shows_lines_keys_webhooks_and_usage_as_they_were() {
    let app = app().await;
    let (account, key_id, key) = app.account("starter").await;
    let line = app.connected_line(&key, "+34600000321").await;
    send_and_wait_until_read(&app, &key, &line, 2).await;
    let (_, hook) = app.post(&key, "/v1/webhooks", json!({"url": "https://127.0.0.1:9/orders", "description": "orders"})).await;
    let hook_id = hook["webhook"]["id"].as_str().unwrap().to_owned();
    let before = db_now(&app).await;

    // Then everything changes.
    let second = app.cli(&["keys", "create", "--account", &account, "--name", "second", "--json"]).await.json();
    assert!(app.cli(&["keys", "revoke", &key_id]).await.ok());
    let key = second["api_key"].as_str().unwrap().to_owned();
    let patched = app
        .http
        .patch(app.url(&format!("/v1/webhooks/{hook_id}")))
        .bearer_auth(&key)
        .json(&json!({"enabled": false, "events": ["message.status"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let logout = app.http.delete(app.url(&format!("/v1/lines/{line}"))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(logout.status(), StatusCode::OK);
    assert!(app.cli(&["accounts", "set-plan", &account, "pro"]).await.ok());
    assert!(app.cli(&["accounts", "suspend", &account]).await.ok());

    let then = app.cli(&["audit", "state", "--account", &account, "--as-of", &before, "--json"]).await.json();
    let now = app.cli(&["audit", "state", "--account", &account, "--as-of", &db_now(&app).await, "--json"]).await.json();
    assert_eq!(then["account"]["plan"], "starter");
    assert_eq!(then["lines"][0]["status"], "connected");
    assert_eq!(then["usage"]["sent_messages"], 2);
    assert_eq!(now["account"]["status"], "suspended");
    assert_eq!(now["lines"][0]["status"], "logged_out");
    assert!(!then.to_string().contains("wzb_"), "no secret: {then}");
    let settings = redactions();
    settings.bind(|| {
        insta::assert_json_snapshot!("audit_state_before", then, {".as_of" => "[time]"});
        insta::assert_json_snapshot!("audit_state_after", now, {".as_of" => "[time]"});
    });
    let before_anything = app.cli(&["audit", "state", "--account", &account, "--as-of", "2020-01-01", "--json"]).await.json();
    assert_eq!(before_anything["account"], Value::Null);
    assert_eq!(before_anything["events"], 0);
    app.shutdown().await;
}
