//! `bridge serve` as an operator runs it: the demo account, a working curl line, and a graceful
//! shutdown on SIGTERM. And the embedded PostgreSQL used when no server answers.

use crate::common::TestDb;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn serve_demo_prints_a_working_key_and_stops_gracefully_on_sigterm() {
    let db = TestDb::new().await;
    let mut child = crate::common::bridge(&db)
        .args(["serve", "--demo"])
        .env("BRIDGE_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let curl = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.trim_start().starts_with("curl ") {
                return line;
            }
        }
        panic!("no curl line printed");
    })
    .await
    .expect("the demo prints a curl line");
    let invite = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("/console/invite/") {
                return line.trim().to_owned();
            }
        }
        panic!("no console sign-in link printed");
    })
    .await
    .expect("the demo prints a console sign-in link");

    // curl -s http://127.0.0.1:PORT/api/bridge/v1/me -H "Authorization: Bearer wzb_live_…"
    let url = curl.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    let key = curl.split("Bearer ").nth(1).unwrap().trim_end_matches('"').to_owned();
    assert!(key.starts_with("wzb_live_"));
    let client = reqwest::Client::new();
    // The line is printed just before the server starts accepting; connection refused until then.
    let me: serde_json::Value = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match client.get(&url).bearer_auth(&key).send().await {
                Ok(r) => break r.json().await.unwrap(),
                Err(e) if e.is_connect() => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the demo server answers");
    assert_eq!(me["plan"]["name"], "pro");
    assert_eq!(me["account"]["name"], "Demo account");
    let page = client.get(&invite).send().await.unwrap();
    assert_eq!(page.status(), reqwest::StatusCode::OK, "the printed link opens the console's set-password page");
    assert!(page.text().await.unwrap().contains("choose a password"));

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id().unwrap() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("exits after SIGTERM").unwrap();
    assert!(status.success(), "graceful exit, got {status}");
}

#[tokio::test]
async fn an_embedded_cluster_is_initialised_started_and_stopped_with_its_owner() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("embedded-{}", uuid::Uuid::new_v4().simple()));
    let started = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || wazion_bridge::db::embedded::EmbeddedPostgres::start(&dir)).await.unwrap()
    };
    let pg = match started {
        Ok(pg) => pg,
        // The suite can run against a remote DATABASE_URL on a machine without server binaries.
        Err(e) if e.to_string().contains("no PostgreSQL server binaries") && std::env::var_os("DATABASE_URL").is_some() => return,
        Err(e) => panic!("embedded PostgreSQL: {e:#}"),
    };
    assert!(dir.join("PG_VERSION").exists(), "the cluster is initialised under the data directory");
    let pool = sqlx::PgPool::connect_with(pg.connect_options().database("postgres")).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&pool).await.unwrap();
    assert_eq!(one, 1);
    pool.close().await;

    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
    assert!(!dir.join("postmaster.pid").exists(), "the last user out stopped the cluster");
    std::fs::remove_dir_all(&dir).ok();
}
