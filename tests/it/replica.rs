//! Reads from a real streaming replica, made in the test with `pg_basebackup` from a cluster of
//! the test's own: the read endpoints are served by the replica, and a tenant always reads its own
//! writes, from the primary when the replica cannot catch up in time.

use crate::common::pg_cluster::PgCluster;
use crate::common::{bridge_on, test_config};
use reqwest::StatusCode;
use serde_json::{json, Value};
use wazion_bridge::config::Secret;

const OPERATOR_TOKEN: &str = "operator-token-for-the-replica-tests-0123456789";

async fn post(http: &reqwest::Client, url: String, key: &str, body: Value) -> Value {
    let r = http.post(url).bearer_auth(key).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

async fn get(http: &reqwest::Client, url: String, key: &str) -> Value {
    let r = http.get(url).bearer_auth(key).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn cli(url: &str, args: &[&str]) -> Value {
    let out = bridge_on(url).args(args).output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// This process's count of reads served as `served_by`.
async fn reads(http: &reqwest::Client, base: &str, served_by: &str) -> f64 {
    let text = http.get(format!("{base}/metrics")).bearer_auth(OPERATOR_TOKEN).send().await.unwrap().text().await.unwrap();
    let series = format!(r#"bridge_replica_reads_total{{served_by="{served_by}"}} "#);
    text.lines().find_map(|l| l.strip_prefix(&series)).map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_the_replica_and_a_tenant_reads_its_own_writes_even_when_the_replica_lags() {
    let primary = PgCluster::primary().await;
    let url = primary.url("bridge");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    wazion_bridge::db::migrate(&pool).await.unwrap();
    let replica = PgCluster::replica_of(&primary).await;
    let replica_pool = sqlx::PgPool::connect(&replica.url("bridge")).await.unwrap();
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&replica_pool).await.unwrap();
    assert!(in_recovery, "the replica is a standby");

    let mut config = test_config();
    config.read_database_url = Some(Secret::new(replica.url("bridge")));
    config.operator_token = Some(Secret::new(OPERATOR_TOKEN));
    config.read_replica_max_wait_ms = 300;
    config.line_send_interval_ms = 20;
    config.line_send_jitter_ms = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = wazion_bridge::server::start(config, pool.clone(), listener).await.unwrap();
    let base = format!("http://{}", server.addr);
    let http = reqwest::Client::new();

    let account = cli(&url, &["accounts", "create", "--name", "Replica", "--plan", "pro", "--json"]).await;
    let account_id = account["account_id"].as_str().unwrap();
    let key = cli(&url, &["keys", "create", "--account", account_id, "--json"]).await["api_key"].as_str().unwrap().to_owned();
    let created: Value = post(&http, format!("{base}/v1/lines"), &key, json!({})).await;
    let line = created["line"]["line_id"].as_str().unwrap().to_owned();

    // A write, then at once a read of it: the replica has it (the read waited for it).
    let listed: Value = get(&http, format!("{base}/v1/lines"), &key).await;
    assert_eq!(listed["lines"][0]["line_id"], line.as_str(), "{listed}");
    assert_eq!(reads(&http, &base, "replica").await, 1.0, "served by the replica");

    post(&http, format!("{base}/v1/sandbox/lines/{line}/scan"), &key, json!({"phone": "+34600000801"})).await;
    let sent: Value =
        post(&http, format!("{base}/v1/messages/send"), &key, json!({"line_id": line, "to": "+34699000801", "message": "first"}))
            .await;
    let first = sent["message_id"].as_str().unwrap().to_owned();
    let page: Value = get(&http, format!("{base}/v1/messages?line_id={line}&phone=%2B34699000801"), &key).await;
    assert_eq!(page["messages"][0]["message_id"], first.as_str(), "{page}");
    assert_eq!(reads(&http, &base, "replica").await, 2.0);

    // The replica stops replaying: a new write cannot reach it, so the read after it goes to the
    // primary after the bounded wait, and still sees the write.
    sqlx::query("SELECT pg_wal_replay_pause()").execute(&replica_pool).await.unwrap();
    let sent: Value = post(
        &http,
        format!("{base}/v1/messages/send"),
        &key,
        json!({"line_id": line, "to": "+34699000801", "message": "second"}),
    )
    .await;
    let second = sent["message_id"].as_str().unwrap().to_owned();
    let page: Value = get(&http, format!("{base}/v1/messages?line_id={line}&phone=%2B34699000801"), &key).await;
    assert_eq!(page["messages"][0]["message_id"], second.as_str(), "the newest write is read: {page}");
    assert_eq!(reads(&http, &base, "primary_replica_behind").await, 1.0, "read from the primary");
    let on_replica: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_messages WHERE message_id = $1")
        .bind(&second)
        .fetch_one(&replica_pool)
        .await
        .unwrap();
    assert_eq!(on_replica, 0, "the paused replica indeed does not have it");

    // Replay again: reads go back to the replica.
    sqlx::query("SELECT pg_wal_replay_resume()").execute(&replica_pool).await.unwrap();
    let usage = get(&http, format!("{base}/v1/usage"), &key).await;
    assert_eq!(usage["usage"]["sent_messages"]["used"], 2, "{usage}");
    assert_eq!(reads(&http, &base, "replica").await, 3.0);

    // The replica gone: reads go to the primary, and nothing fails.
    drop(replica_pool);
    tokio::task::block_in_place(|| replica.stop());
    let listed = http.get(format!("{base}/v1/lines")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(reads(&http, &base, "primary_replica_unavailable").await, 1.0);
    server.shutdown().await;
    pool.close().await;
}
