//! Benchmarks of the write path, side by side with plain PostgreSQL doing the same writes.
//!
//!     ops/bench/run [--n 4000] [--concurrency 16] [--log-events 1000000] [--verify 1]
//!                   [--lines 10000] [--busy-lines 200] [--only-pacing 1]
//!
//! Uses databases `bridge_bench` and `bridge_bench_pacing` (the dispatcher's, `pacing.rs`) on the
//! PostgreSQL the server would find (DATABASE_URL, else 127.0.0.1:5432), recreated on every run.
//! Prints its tables; nothing here asserts on time.

mod pacing;

use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wazion_bridge::api::tenant::Caller;
use wazion_bridge::commands::group_commit::SendBatcher;
use wazion_bridge::commands::messages::{send, Send as SendMessage};
use wazion_bridge::config::Config;
use wazion_bridge::store::{Actor, Append, EventStore, Metadata, StreamAppend};

/// The system allocator, counting the bytes live: memory per idle line is read off it. (A relaxed
/// atomic add per allocation; the other figures carry that small cost.)
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
            LIVE.fetch_add(new_size, std::sync::atomic::Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap_live() -> usize {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

struct Figures {
    name: String,
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, q: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        l[((l.len() as f64 * q) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0
    }

    fn row(&self) -> String {
        format!(
            "| {:<44} | {:>9.0} | {:>7.2} | {:>7.2} | {:>7.2} |",
            self.name,
            self.rate(),
            self.percentile(0.50),
            self.percentile(0.95),
            self.percentile(0.99)
        )
    }
}

/// Arrivals at the bench receiver: for each request, how long after the event it carries was
/// recorded (its `created_at`) it arrived.
type Arrivals = Arc<std::sync::Mutex<Vec<Duration>>>;

/// A webhook receiver on loopback that answers 200 and notes each arrival's lag.
async fn receiver() -> anyhow::Result<(String, Arrivals)> {
    let arrivals: Arrivals = Arc::default();
    let noted = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let noted = noted.clone();
            async move {
                let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let lag = event["created_at"]
                    .as_str()
                    .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
                    .and_then(|t| (chrono::Utc::now() - t).to_std().ok())
                    .unwrap_or_default();
                noted.lock().unwrap().push(lag);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, arrivals))
}

async fn wait_for_arrivals(arrivals: &Arrivals, n: usize, timeout: Duration) -> Vec<Duration> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = arrivals.lock().unwrap().clone();
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        // A benchmark may poll: nothing here is a test.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run `op(i)` `n` times on `concurrency` tasks; collect throughput and latencies.
async fn measure<F, Fut>(name: impl Into<String>, n: usize, concurrency: usize, op: F) -> Figures
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
    Figures { name: name.into(), ops: n, elapsed: started.elapsed(), latencies }
}

/// A text message arriving on `line` from `from`, under WhatsApp id `engine_message_id`.
fn bench_inbound(
    line: domain::ids::LineId,
    from: &str,
    engine_message_id: String,
    text: &str,
) -> wazion_bridge::commands::messages::Inbound {
    wazion_bridge::commands::messages::Inbound {
        line_id: line,
        from: domain::phone::PhoneNumber::parse(from).unwrap(),
        group: None,
        engine_message_id,
        content: domain::message::Content::Text { text: domain::message::MessageText::parse(text).unwrap() },
        quoted_engine_message_id: None,
    }
}

/// The send every command-path row makes, under its own Idempotency-Key.
fn bench_send(line: &domain::ids::LineId, key: String) -> SendMessage {
    SendMessage {
        line_id: line.clone(),
        to: domain::chat_id::ChatId::parse("+34699999999").unwrap(),
        content: domain::message::Content::Text { text: domain::message::MessageText::parse("Pedido confirmado").unwrap() },
        quoted_message_id: None,
        archive_policy: Default::default(),
        idempotency: Some(domain::message::Idempotency { key, request_hash: "h".into() }),
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // What the server and the rebuilds log (phase timings at info), on stderr: RUST_LOG=info.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let n = arg("--n", 4000);
    let concurrency = arg("--concurrency", 16);
    let mut config = Config::defaults();
    config.database.max_connections = (concurrency as u32 + 4).max(8);
    // The webhook receiver is on loopback.
    config.allow_private_urls = true;
    // One key makes thousands of requests a second here: measure the server, not its rate limit.
    config.rate_limits.api_key = wazion_bridge::config::RateLimit { per_second: 1e9, burst: u32::MAX };
    let server = wazion_bridge::db::locate_server(&config).await?;
    let mut admin = PgConnection::connect_with(&server.admin).await?;
    sqlx::query("DROP DATABASE IF EXISTS bridge_bench WITH (FORCE)").execute(&mut admin).await?;
    sqlx::query("CREATE DATABASE bridge_bench").execute(&mut admin).await?;
    // The bench's own pool: 64 clients of plain PostgreSQL at the sweep's top (the server keeps its
    // configured pool).
    let pool: PgPool =
        PgPoolOptions::new().max_connections(66).connect_with(server.admin.clone().database("bridge_bench")).await?;
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
    let (announcer, _announcing) = wazion_bridge::store::Announcer::start(pool.clone(), None, shutdown.clone());
    let store = EventStore::new(pool.clone(), EventStore::inline_projections()).with_announcer(announcer);
    let plans = Arc::new(config.plan_catalog()?);

    // 0. The dispatcher at `--lines` connected lines (first, while the process holds little else),
    //    in a database of its own: what it leaves behind (ten thousand lines and their messages)
    //    is not in the log the rest of the bench measures.
    sqlx::query("DROP DATABASE IF EXISTS bridge_bench_pacing WITH (FORCE)").execute(&mut admin).await?;
    sqlx::query("CREATE DATABASE bridge_bench_pacing").execute(&mut admin).await?;
    let pacing_pool: PgPool =
        PgPoolOptions::new().max_connections(66).connect_with(server.admin.clone().database("bridge_bench_pacing")).await?;
    wazion_bridge::db::migrate(&pacing_pool).await?;
    let pacing_store = EventStore::new(pacing_pool.clone(), EventStore::inline_projections());
    let busy = [arg("--busy-lines", 200), 1_000];
    let pacing = pacing::run(&pacing_store, &plans, heap_live, arg("--lines", 10_000), &busy, 6).await?;
    drop(pacing_store);
    pacing_pool.close().await;
    sqlx::query("DROP DATABASE bridge_bench_pacing WITH (FORCE)").execute(&mut admin).await?;
    if arg("--only-pacing", 0) == 1 {
        pacing.print();
        return Ok(());
    }
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
        let (owned, _) = wazion_bridge::queries::lines::owned(store.pool(), &account.id, &line.line_id)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        wazion_bridge::commands::lines::handle(
            &store,
            &operator,
            &owned,
            domain::line::LineCommand::Connect {
                phone: domain::phone::PhoneNumber::parse(&format!("+3460000{a:04}")).unwrap(),
                jid: None,
            },
        )
        .await?;
        accounts.push((account.id, line.line_id));
    }
    let accounts = Arc::new(accounts);
    // Each send in a transaction of its own, then group commit (concurrent sends share one).
    let batchers = [2, 4, 8].map(|shards| SendBatcher::start(store.clone(), plans.clone(), shards));
    for (name, spread, batched) in [
        ("send decision (16 accounts)", true, None),
        ("send decision (1 account: one quota row)", false, None),
        ("send decision, group commit (16 accounts, 2 shards)", true, Some(0)),
        ("send decision, group commit (16 accounts, 4 shards)", true, Some(1)),
        ("send decision, group commit (16 accounts, 8 shards)", true, Some(2)),
        ("send decision, group commit (1 account)", false, Some(2)),
    ] {
        let batcher = batched.map(|i| batchers[i].clone());
        let (s, p, a, o, b) = (store.clone(), plans.clone(), accounts.clone(), operator.clone(), batcher);
        rows.push(
            measure(name, n, concurrency, move |i| {
                let (s, p, a, o, b) = (s.clone(), p.clone(), a.clone(), o.clone(), b.clone());
                async move {
                    let (account, line) = &a[if spread { i % a.len() } else { 0 }];
                    let message = bench_send(line, format!("k{i}-{name}"));
                    match &b {
                        Some(batcher) => batcher.send(&o, account, message).await.unwrap(),
                        None => send(&s, &p, &o, account, message).await.unwrap(),
                    };
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
    let (_, secret) = wazion_bridge::commands::keys::create(
        &store,
        &Caller { account_id: accounts[0].0.clone(), metadata: operator.clone() },
        None,
    )
    .await?;
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
    // The sweep: HTTP sends and the command path (group commit, as the server runs it) on one
    // account and on all of them, at 1, 16 and 64 connections, each against single-row INSERTs
    // per commit at the same concurrency, measured just before.
    let mut keys = vec![key.clone()];
    for (account, _) in accounts.iter().skip(1) {
        let caller = Caller { account_id: account.clone(), metadata: operator.clone() };
        keys.push(wazion_bridge::commands::keys::create(&store, &caller, None).await?.1.expose().to_owned());
    }
    let keys = Arc::new(keys);
    let mut sweep: Vec<(usize, Figures, f64)> = Vec::new();
    for conns in [1, 16, 64] {
        let p = pool.clone();
        let insert = measure("plain PostgreSQL: single-row INSERT per commit", n, conns, move |i| {
            let p = p.clone();
            async move {
                sqlx::query("INSERT INTO plain_events (tenant_id, stream_type, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata) VALUES ($1, 'sweep', $2, 1, $3, 'bench.e', 1, $4, '{}')")
                    .bind("acc_bench")
                    .bind(format!("c{conns}-{i}"))
                    .bind(format!("evt_{i}"))
                    .bind(json!({"i": i, "text": "Pedido confirmado"}))
                    .execute(&p)
                    .await
                    .unwrap();
            }
        })
        .await;
        let bare = insert.rate();
        sweep.push((conns, insert, bare));
        for spread in [false, true] {
            let accounts_used = if spread { accounts.len() } else { 1 };
            let (a, o, batcher) = (accounts.clone(), operator.clone(), batchers[0].clone());
            let name = format!("command path, group commit ({accounts_used} account{})", if spread { "s" } else { "" });
            let figures = measure(name, n, conns, move |i| {
                let (a, o, batcher) = (a.clone(), o.clone(), batcher.clone());
                async move {
                    let (account, line) = &a[if spread { i % a.len() } else { 0 }];
                    let message = bench_send(line, format!("sweep-{conns}-{spread}-{i}"));
                    batcher.send(&o, account, message).await.unwrap();
                }
            })
            .await;
            sweep.push((conns, figures, bare));
        }
        for spread in [false, true] {
            let accounts_used = if spread { accounts.len() } else { 1 };
            let (h, b, a, k) = (http.clone(), base.clone(), accounts.clone(), keys.clone());
            let name = format!("HTTP POST /v1/messages/send ({accounts_used} account{})", if spread { "s" } else { "" });
            let figures = measure(name, n, conns, move |i| {
                let (h, b, a, k) = (h.clone(), b.clone(), a.clone(), k.clone());
                async move {
                    let which = if spread { i % a.len() } else { 0 };
                    let r = h
                        .post(format!("{b}/v1/messages/send"))
                        .bearer_auth(&k[which])
                        .header("Idempotency-Key", format!("http-{conns}-{spread}-{i}"))
                        .json(&json!({"line_id": a[which].1, "to": "+34699999999", "message": "Pedido confirmado"}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                }
            })
            .await;
            sweep.push((conns, figures, bare));
        }
    }

    // 6. Webhooks end to end: inbound messages appended to the log, turned into deliveries by the
    //    projector, signed and POSTed by the worker to a receiver on loopback, outcomes recorded.
    //    Latency is from the event's time in the log to its arrival at the receiver.
    let (receiver_url, arrivals) = receiver().await?;
    let (status, _) = {
        let r = http
            .post(format!("{base}/v1/webhooks"))
            .bearer_auth(&key)
            .json(&json!({"url": receiver_url, "events": ["message.received"]}));
        let r = r.send().await?;
        (r.status(), r.bytes().await?)
    };
    anyhow::ensure!(status.is_success(), "creating the bench webhook: {status}");
    let started = Instant::now();
    let (st, ac) = (store.clone(), accounts.clone());
    let receive = move |i: usize| {
        let (s, a) = (st.clone(), ac.clone());
        async move {
            let (account, line) = &a[0];
            let inbound = bench_inbound(line.clone(), "+34699999999", format!("3EB0BENCH{i:08}"), "Pedido confirmado");
            wazion_bridge::commands::messages::receive(&s, &Metadata::new(Actor::System), account, inbound).await.unwrap();
        }
    };
    measure("(appending the inbound messages)", n, concurrency, receive).await;
    let arrived = wait_for_arrivals(&arrivals, n, Duration::from_secs(600)).await;
    rows.push(Figures {
        name: "webhooks, 1 line: append → POST received".into(),
        ops: n,
        elapsed: started.elapsed(),
        latencies: arrived,
    });

    // The same over the other accounts' lines, each with its own webhook: lines go in parallel
    // (one line's events go out one at a time, in order).
    for secret in keys.iter().skip(1) {
        let r = http.post(format!("{base}/v1/webhooks")).bearer_auth(secret);
        let r = r.json(&json!({"url": receiver_url, "events": ["message.received"]})).send().await?;
        anyhow::ensure!(r.status().is_success(), "creating a bench webhook: {}", r.status());
    }
    let started = Instant::now();
    let (st, ac) = (store.clone(), accounts.clone());
    let receive = move |i: usize| {
        let (s, a) = (st.clone(), ac.clone());
        async move {
            let (account, line) = &a[1 + i % (a.len() - 1)];
            let inbound = bench_inbound(line.clone(), "+34699999999", format!("3EB0MANY{i:08}"), "Pedido confirmado");
            wazion_bridge::commands::messages::receive(&s, &Metadata::new(Actor::System), account, inbound).await.unwrap();
        }
    };
    measure("(appending the inbound messages)", n, concurrency, receive).await;
    let arrived = wait_for_arrivals(&arrivals, 2 * n, Duration::from_secs(600)).await;
    rows.push(Figures {
        name: "webhooks, 15 lines: append → POST received".into(),
        ops: n,
        elapsed: started.elapsed(),
        latencies: arrived[n..].to_vec(),
    });

    // A steady 500 events/s on one line (account 0's webhook): event → received.
    let steady = 2_500;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    let started = Instant::now();
    let mut appends = tokio::task::JoinSet::new();
    for i in 0..steady {
        tick.tick().await;
        let (s, (account, line)) = (store.clone(), accounts[0].clone());
        appends.spawn(async move {
            let inbound = bench_inbound(line, "+34699999999", format!("3EB0STEADY{i:08}"), "Pedido confirmado");
            wazion_bridge::commands::messages::receive(&s, &Metadata::new(Actor::System), &account, inbound).await.unwrap();
        });
    }
    while appends.join_next().await.is_some() {}
    let arrived = wait_for_arrivals(&arrivals, 2 * n + steady, Duration::from_secs(600)).await;
    rows.push(Figures {
        name: "webhooks, 1 line, steady 500/s: event → received".into(),
        ops: steady,
        elapsed: started.elapsed(),
        latencies: arrived[2 * n..].to_vec(),
    });
    running.shutdown().await;

    // 7. Plain HTTP: the same number of POSTs of a similar body, straight to the receiver.
    let body = json!({"id": "evt_x", "event": "message.received", "data": {"text": "Pedido confirmado"}}).to_string();
    let (h, u) = (http.clone(), receiver_url.clone());
    rows.push(
        measure("plain HTTP: POST the same bodies to the receiver", n, concurrency, move |_| {
            let (h, u, body) = (h.clone(), u.clone(), body.clone());
            async move {
                let r = h.post(&u).header("content-type", "application/json").body(body).send().await.unwrap();
                assert!(r.status().is_success());
            }
        })
        .await,
    );

    // 8. The operator's whole-log passes over everything the runs above wrote: a signed digest of
    //    every stream head, the audit (every chain and digest), a rebuild and a verification of
    //    the messages read model (from position zero, while nothing else runs).
    //    The log is first grown to `--log-events` (one million by default) with inbound messages
    //    on every line from a thousand phones, a transaction of 2 000 at a time.
    let target = arg("--log-events", 1_000_000) as i64;
    let mut events: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&pool).await?;
    let grown = Instant::now();
    let metadata = Metadata::new(Actor::System);
    let mut i = 0usize;
    while events < target {
        let chunk = (target - events).min(2_000) as usize;
        let appends: Vec<Append> = (0..chunk)
            .map(|j| {
                let (account, line) = &accounts[(i + j) % accounts.len()];
                let inbound = bench_inbound(
                    line.clone(),
                    &format!("+3465{:07}", (i + j) % 1000),
                    format!("3EB0LOG{:010}", i + j),
                    "Pedido confirmado, gracias",
                );
                wazion_bridge::commands::messages::inbound_append(&metadata, account, inbound).0
            })
            .collect();
        let mut tx = pool.begin().await?;
        store.append_batch_in(&mut tx, &appends.iter().collect::<Vec<_>>()).await?;
        tx.commit().await?;
        i += chunk;
        events += chunk as i64;
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&pool).await?;
    println!("(the log was grown to {events} events in {:.1} s)", grown.elapsed().as_secs_f64());
    // The key the bench server signed its digests with.
    let key = *wazion_bridge::secrets::MasterKey::load(&config)?.audit_key();
    let mut passes = Vec::new();
    let t = Instant::now();
    wazion_bridge::audit::digest::record(&pool, &key).await?;
    passes.push(("audit digest (every stream head)", t.elapsed()));
    let t = Instant::now();
    let report = wazion_bridge::audit::verify(&pool, &key, None).await?;
    anyhow::ensure!(report.ok, "the bench log does not verify: {:?}", report.breaks);
    passes.push(("audit verify (chains and digests)", t.elapsed()));
    let messages = projections::conversations::Messages;
    let t = Instant::now();
    projections::rebuild::rebuild(&pool, &messages, 1000, |_| {}).await?;
    passes.push(("projections rebuild messages (bulk COPY)", t.elapsed()));
    let t = Instant::now();
    projections::rebuild::rebuild(&pool, &projections::conversations::Chats, 1000, |_| {}).await?;
    passes.push(("projections rebuild chats (bulk COPY)", t.elapsed()));
    // A replay with the projection's SQL, event by event (as rebuilds went before the bulk load),
    // checks the bulk rebuild; it takes minutes over a million events, so only when asked.
    if arg("--verify", 0) == 1 {
        let t = Instant::now();
        let verified = projections::rebuild::verify(&pool, &messages, 1000, |_| {}).await?;
        anyhow::ensure!(verified.differences.is_empty(), "the rebuilt read model differs from a replay");
        passes.push(("projections verify messages (replay with SQL)", t.elapsed()));
    }

    println!(
        "\n{n} operations each, {concurrency} concurrent clients, {} cores\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| {:<44} | {:>9} | {:>7} | {:>7} | {:>7} |", "what", "ops/s", "p50 ms", "p95 ms", "p99 ms");
    println!("|{}|{}|{}|{}|{}|", "-".repeat(46), "-".repeat(11), "-".repeat(9), "-".repeat(9), "-".repeat(9));
    for row in &rows {
        println!("{}", row.row());
    }
    println!("\nThe sweep: each path against single-row INSERTs per commit at the same concurrency, measured just before it\n");
    println!("| {:<48} | {:>5} | {:>9} | {:>7} | {:>7} | {:>8} |", "what", "conns", "ops/s", "p50 ms", "p99 ms", "ratio");
    println!("|{}|{}|{}|{}|{}|{}|", "-".repeat(50), "-".repeat(7), "-".repeat(11), "-".repeat(9), "-".repeat(9), "-".repeat(10));
    for (conns, f, bare) in &sweep {
        println!(
            "| {:<48} | {:>5} | {:>9.0} | {:>7.2} | {:>7.2} | {:>8.2} |",
            f.name,
            conns,
            f.rate(),
            f.percentile(0.5),
            f.percentile(0.99),
            f.rate() / bare
        );
    }
    println!("\nWhole-log passes over {events} events:\n");
    println!("| {:<44} | {:>9} | {:>9} |", "what", "seconds", "events/s");
    println!("|{}|{}|{}|", "-".repeat(46), "-".repeat(11), "-".repeat(11));
    for (name, took) in passes {
        println!("| {name:<44} | {:>9.2} | {:>9.0} |", took.as_secs_f64(), events as f64 / took.as_secs_f64());
    }
    pacing.print();
    pool.close().await;
    sqlx::query("DROP DATABASE IF EXISTS bridge_bench WITH (FORCE)").execute(&mut admin).await?;
    Ok(())
}
