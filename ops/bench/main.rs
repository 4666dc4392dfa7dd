//! Benchmarks of the write path, side by side with plain PostgreSQL doing the same writes.
//!
//!     cargo run --release --example bench -- [--n 4000] [--concurrency 16]
//!
//! Uses a database `bridge_bench` on the PostgreSQL the server would find (DATABASE_URL, else
//! 127.0.0.1:5432), recreated on every run. Prints one table; nothing here asserts on time.

use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wazion_bridge::commands::messages::{send, Send as SendMessage};
use wazion_bridge::config::Config;
use wazion_bridge::store::{Actor, Append, EventStore, Metadata, StreamAppend};

struct Figures {
    name: &'static str,
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn row(&self) -> String {
        let mut l = self.latencies.clone();
        l.sort();
        let p = |q: f64| l[((l.len() as f64 * q) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0;
        format!(
            "| {:<44} | {:>9.0} | {:>7.2} | {:>7.2} | {:>7.2} |",
            self.name,
            self.ops as f64 / self.elapsed.as_secs_f64(),
            p(0.50),
            p(0.95),
            p(0.99)
        )
    }
}

/// Run `op(i)` `n` times on `concurrency` tasks; collect throughput and latencies.
async fn measure<F, Fut>(name: &'static str, n: usize, concurrency: usize, op: F) -> Figures
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (op, next) = (op.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return latencies;
                }
                let t = Instant::now();
                op(i).await;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(n);
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    Figures { name, ops: n, elapsed: started.elapsed(), latencies }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = arg("--n", 4000);
    let concurrency = arg("--concurrency", 16);
    let mut config = Config::defaults();
    config.database.max_connections = (concurrency as u32 + 4).max(8);
    let server = wazion_bridge::db::locate_server(&config).await?;
    let mut admin = PgConnection::connect_with(&server.admin).await?;
    sqlx::query("DROP DATABASE IF EXISTS bridge_bench WITH (FORCE)").execute(&mut admin).await?;
    sqlx::query("CREATE DATABASE bridge_bench").execute(&mut admin).await?;
    let pool: PgPool = PgPoolOptions::new()
        .max_connections(config.database.max_connections)
        .connect_with(server.admin.clone().database("bridge_bench"))
        .await?;
    wazion_bridge::db::migrate(&pool).await?;
    // The same columns as the log, without its ordering machinery or projections.
    sqlx::query(
        "CREATE TABLE plain_events (id bigserial PRIMARY KEY, tenant_id text, stream_type text, stream_id text, \
         stream_version bigint, event_id text, event_type text, schema_version int, payload jsonb, metadata jsonb, \
         recorded_at timestamptz DEFAULT now(), UNIQUE (stream_type, stream_id, stream_version))",
    )
    .execute(&pool)
    .await?;

    // As the server runs it: appends announced after commit, coalesced.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (announcer, _announcing) = wazion_bridge::store::Announcer::start(pool.clone(), shutdown.clone());
    let store = EventStore::new(pool.clone(), EventStore::inline_projections()).with_announcer(announcer);
    let plans = Arc::new(config.plan_catalog()?);
    let mut rows = Vec::new();

    // 1. Append one event to a new stream, inline projections included.
    let s = store.clone();
    rows.push(
        measure("event store: append 1 event (inline projections)", n, concurrency, move |i| {
            let s = s.clone();
            async move {
                let append = Append {
                    tenant_id: "acc_bench".into(),
                    metadata: Metadata::new(Actor::System),
                    streams: vec![StreamAppend {
                        stream_type: "bench",
                        stream_id: format!("s{i}"),
                        expected_version: 0,
                        events: vec![("bench.e".into(), 1, json!({"i": i, "text": "Pedido confirmado"}))],
                    }],
                };
                s.append(&append).await.unwrap();
            }
        })
        .await,
    );
    // 2. Plain PostgreSQL: the same row, one INSERT in autocommit.
    let p = pool.clone();
    rows.push(
        measure("plain PostgreSQL: INSERT the same row", n, concurrency, move |i| {
            let p = p.clone();
            async move {
                sqlx::query("INSERT INTO plain_events (tenant_id, stream_type, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata) VALUES ($1, 'bench', $2, 1, $3, 'bench.e', 1, $4, '{}')")
                    .bind("acc_bench")
                    .bind(format!("s{i}"))
                    .bind(format!("evt_{i}"))
                    .bind(json!({"i": i, "text": "Pedido confirmado"}))
                    .execute(&p)
                    .await
                    .unwrap();
            }
        })
        .await,
    );

    // 3. The whole send decision: line check, quota (locked counter), append, three inline
    //    projections, NOTIFY. Accounts are spread so the per-account counter lock is not the
    //    only thing measured; one account shows the contended case.
    let operator = Metadata::new(Actor::Operator { name: "bench".into() });
    let mut accounts = Vec::new();
    for a in 0..concurrency {
        let (account, _) =
            wazion_bridge::commands::accounts::open(&store, &plans, &operator, &format!("bench {a}"), "business").await?;
        let line =
            wazion_bridge::commands::lines::create(&store, &plans, &operator, &account.id, domain::line::EngineKind::Sim).await?;
        wazion_bridge::commands::lines::handle(
            &store,
            &operator,
            &account.id,
            &line.line_id,
            domain::line::LineCommand::Connect { phone: domain::phone::PhoneNumber::parse(&format!("+3460000{a:04}")).unwrap() },
        )
        .await?;
        accounts.push((account.id, line.line_id));
    }
    let accounts = Arc::new(accounts);
    for (name, spread) in [("send decision (16 accounts)", true), ("send decision (1 account: one quota row)", false)] {
        let (s, p, a, o) = (store.clone(), plans.clone(), accounts.clone(), operator.clone());
        rows.push(
            measure(name, n, concurrency, move |i| {
                let (s, p, a, o) = (s.clone(), p.clone(), a.clone(), o.clone());
                async move {
                    let (account, line) = &a[if spread { i % a.len() } else { 0 }];
                    let message = SendMessage {
                        line_id: line.clone(),
                        to: domain::phone::PhoneNumber::parse("+34699999999").unwrap(),
                        content: domain::message::Content::Text {
                            text: domain::message::MessageText::parse("Pedido confirmado").unwrap(),
                        },
                        quoted_message_id: None,
                        archive_policy: Default::default(),
                        idempotency: Some(domain::message::Idempotency { key: format!("k{i}"), request_hash: "h".into() }),
                    };
                    send(&s, &p, &o, account, message).await.unwrap();
                }
            })
            .await,
        );
    }
    // 4. Plain PostgreSQL doing the same writes as a send: one transaction with the quota upsert,
    //    the event row, the idempotency row and the queue row.
    sqlx::query("CREATE TABLE plain_queue (id text PRIMARY KEY, line_id text, pos bigint)").execute(&pool).await?;
    sqlx::query("CREATE TABLE plain_idem (k text PRIMARY KEY, body jsonb)").execute(&pool).await?;
    sqlx::query("CREATE TABLE plain_usage (account text PRIMARY KEY, used bigint)").execute(&pool).await?;
    let p = pool.clone();
    rows.push(
        measure("plain PostgreSQL: the same writes in 1 tx", n, concurrency, move |i| {
            let p = p.clone();
            async move {
                let mut tx = p.begin().await.unwrap();
                sqlx::query("INSERT INTO plain_usage VALUES ($1, 1) ON CONFLICT (account) DO UPDATE SET used = plain_usage.used + 1").bind(format!("a{}", i % 16)).execute(&mut *tx).await.unwrap();
                sqlx::query("INSERT INTO plain_events (tenant_id, stream_type, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata) VALUES ('a', 'message', $1, 1, $1, 'message.queued', 1, $2, '{}')")
                    .bind(format!("m{i}"))
                    .bind(json!({"to": "+34699999999", "text": "Pedido confirmado"}))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                sqlx::query("INSERT INTO plain_idem VALUES ($1, '{}')").bind(format!("k{i}")).execute(&mut *tx).await.unwrap();
                sqlx::query("INSERT INTO plain_queue VALUES ($1, 'l', $2)").bind(format!("m{i}")).bind(i as i64).execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
            }
        })
        .await,
    );

    // 5. Over HTTP: the real server on loopback, authenticated from the cached key index.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let running = wazion_bridge::server::start(config.clone(), pool.clone(), listener).await?;
    let base = format!("http://{}", running.addr);
    let (_, secret) = wazion_bridge::commands::keys::create(&store, &operator, &accounts[0].0, None).await?;
    let key = secret.expose().to_owned();
    let http = reqwest::Client::new();
    let (h, b, k) = (http.clone(), base.clone(), key.clone());
    rows.push(
        measure("HTTP GET /v1/me (cached key)", n, concurrency, move |_| {
            let (h, b, k) = (h.clone(), b.clone(), k.clone());
            async move {
                let r = h.get(format!("{b}/v1/me")).bearer_auth(k).send().await.unwrap();
                assert!(r.status().is_success());
            }
        })
        .await,
    );
    let line = accounts[0].1.to_string();
    let (h, b, k) = (http.clone(), base.clone(), key.clone());
    rows.push(
        measure("HTTP POST /v1/messages/send", n, concurrency, move |i| {
            let (h, b, k, line) = (h.clone(), b.clone(), k.clone(), line.clone());
            async move {
                let r = h
                    .post(format!("{b}/v1/messages/send"))
                    .bearer_auth(k)
                    .header("Idempotency-Key", format!("http-{i}"))
                    .json(&json!({"line_id": line, "to": "+34699999999", "message": "Pedido confirmado"}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.status());
            }
        })
        .await,
    );
    running.shutdown().await;

    println!(
        "\n{n} operations each, {concurrency} concurrent clients, {} cores\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| {:<44} | {:>9} | {:>7} | {:>7} | {:>7} |", "what", "ops/s", "p50 ms", "p95 ms", "p99 ms");
    println!("|{}|{}|{}|{}|{}|", "-".repeat(46), "-".repeat(11), "-".repeat(9), "-".repeat(9), "-".repeat(9));
    for row in &rows {
        println!("{}", row.row());
    }
    pool.close().await;
    sqlx::query("DROP DATABASE IF EXISTS bridge_bench WITH (FORCE)").execute(&mut admin).await?;
    Ok(())
}
