//! The dispatcher at scale: thousands of connected sim lines served by one dispatcher, as the
//! server runs it (a worker and a lease per line, one renewer for all the leases), in a database
//! of its own.
//!
//! 1. Every line sends one message, so each gets its worker; once all are sent and acknowledged,
//!    the workers sit idle holding their leases. Memory per idle line is the heap that stays
//!    allocated for them (counted by the bench's allocator), and the resident set's growth.
//! 2. Then some of the lines (200, then 1 000) each send a run of messages at the configured
//!    interval (no jitter), while the rest stay connected and idle. The pacing error is how much later than
//!    the interval each send reached the network after the one before it on its line, from the
//!    simulated network's own record of when each send reached it.

use std::sync::Arc;
use std::time::{Duration, Instant};
use wazion_bridge::commands::group_commit::SendBatcher;
use wazion_bridge::store::{Actor, EventStore, Metadata};

pub struct Pacing {
    pub lines: usize,
    pub interval: Duration,
    pub runs: Vec<PacedRun>,
    pub heap_per_line: f64,
    pub rss_per_line: f64,
    /// How long one message on every line took to go out (the first sends, through the dispatcher).
    pub first_sends: Duration,
}

impl Pacing {
    /// The dispatcher's table.
    pub fn print(&self) {
        println!(
            "\nThe dispatcher at {} connected sim lines ({:.1} s to send one message on each, through the dispatcher):\n",
            self.lines,
            self.first_sends.as_secs_f64()
        );
        println!("| {:<84} | {:>24} |", "what", "figure");
        println!("|{}|{}|", "-".repeat(86), "-".repeat(26));
        for run in &self.runs {
            let paced = format!("{} lines a send every {} ms ({:.0} sends/s)", run.busy, self.interval.as_millis(), run.rate);
            let figures = format!("{:.1} / {:.1} / {:.1} ms", run.percentile(0.0), run.percentile(0.5), run.percentile(0.99));
            println!("| {:<84} | {:>24} |", format!("pacing error min/p50/p99, {paced}"), figures);
        }
        println!(
            "| {:<84} | {:>24} |",
            "heap per idle line (worker, lease keeper, pacer)",
            format!("{:.0} B", self.heap_per_line)
        );
        println!("| {:<84} | {:>24} |", "resident set growth per idle line", format!("{:.0} B", self.rss_per_line));
    }
}

/// One pacing run: `busy` lines each sending a run of messages at the interval.
pub struct PacedRun {
    pub busy: usize,
    /// Sends per second over the busy lines.
    pub rate: f64,
    /// Lateness of each paced send past its interval, in milliseconds, sorted (negative: early).
    pub errors_ms: Vec<f64>,
}

impl PacedRun {
    pub fn percentile(&self, q: f64) -> f64 {
        let e = &self.errors_ms;
        if e.is_empty() {
            return f64::NAN;
        }
        e[((e.len() as f64 * q) as usize).min(e.len() - 1)]
    }
}

/// The process's resident set, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()).unwrap_or(0) * 4096
}

/// Wait until `sql` (a count) reaches `n`. A benchmark may poll: nothing here is a test.
async fn until_count(pool: &sqlx::PgPool, sql: &str, n: i64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let got: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
        if got >= n {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "gave up waiting: {sql} is {got} of {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(
    store: &EventStore,
    plans: &Arc<domain::plan::PlanCatalog>,
    heap: fn() -> usize,
    lines: usize,
    busy: &[usize],
    run_length: usize,
) -> anyhow::Result<Pacing> {
    let pool = store.pool().clone();
    let operator = Metadata::new(Actor::Operator { name: "bench".into() });
    // Business accounts hold ten lines each.
    let per_account = 10;
    let made = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..16 {
        let (store, plans, operator, next) = (store.clone(), plans.clone(), operator.clone(), next.clone());
        tasks.spawn(async move {
            let mut made = Vec::new();
            loop {
                let a = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if a * per_account >= lines {
                    return Ok::<_, anyhow::Error>(made);
                }
                let (account, _) =
                    wazion_bridge::commands::accounts::open(&store, &plans, &operator, &format!("pacing {a}"), "business")
                        .await?;
                for l in 0..per_account.min(lines - a * per_account) {
                    let line = wazion_bridge::commands::lines::create(
                        &store,
                        &plans,
                        &operator,
                        &account.id,
                        domain::line::EngineKind::Sim,
                    )
                    .await?;
                    let (owned, _) = wazion_bridge::queries::lines::owned(store.pool(), &account.id, &line.line_id)
                        .await
                        .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
                    let phone = domain::phone::PhoneNumber::parse(&format!("+3461{:07}", a * per_account + l)).unwrap();
                    wazion_bridge::commands::lines::handle(
                        &store,
                        &operator,
                        &owned,
                        domain::line::LineCommand::Connect { phone, jid: None },
                    )
                    .await?;
                    made.push((account.id.clone(), line.line_id));
                }
            }
        });
    }
    let mut all = Vec::with_capacity(lines);
    while let Some(made) = tasks.join_next().await {
        all.extend(made??);
    }
    println!("({} connected sim lines made in {:.1} s)", all.len(), made.elapsed().as_secs_f64());

    let interval = Duration::from_millis(3000);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let sim = Arc::new(wazion_bridge::engine::sim::SimNetwork::new(
        store.clone(),
        Duration::from_millis(200),
        Duration::from_millis(1000),
        shutdown.clone(),
    ));
    let config = wazion_bridge::dispatch::DispatchConfig {
        interval,
        jitter: Duration::ZERO,
        lease_ttl: Duration::from_secs(15),
        node: "bench-dispatch".into(),
        send_timeout: Duration::from_secs(30),
        scan_interval: Duration::from_secs(2),
        // Long enough that no worker lets its line go during the measurement.
        idle_timeout: Duration::from_secs(3600),
        media: wazion_bridge::media::MediaFetcher::new(1 << 20, Duration::from_secs(5), true),
    };
    let (dispatcher, supervisor) = wazion_bridge::dispatch::start(store.clone(), sim, config, None, shutdown.clone());
    let batcher = SendBatcher::start(store.clone(), plans.clone(), 2);
    let all = Arc::new(all);

    // 1. One message on every line, then idle.
    let (heap_before, rss_before) = (heap(), rss());
    let started = Instant::now();
    let queue = |indexes: Vec<usize>, tag: &'static str| {
        let (all, batcher, dispatcher, operator) = (all.clone(), batcher.clone(), dispatcher.clone(), operator.clone());
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            // Each message under its own Idempotency-Key: its place in the list (a line may be
            // in it many times).
            let messages: Vec<(usize, usize)> = indexes.into_iter().enumerate().collect();
            for chunk in messages.chunks(messages.len().div_ceil(32).max(1)) {
                let (all, batcher, dispatcher, operator, chunk) =
                    (all.clone(), batcher.clone(), dispatcher.clone(), operator.clone(), chunk.to_vec());
                tasks.spawn(async move {
                    for (i, line_index) in chunk {
                        let (account, line) = &all[line_index];
                        let send = super::bench_send(line, format!("{tag}-{i}"));
                        batcher.send(&operator, account, send).await.unwrap();
                        dispatcher.queued(line);
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        }
    };
    queue((0..all.len()).collect(), "first").await;
    let n = all.len() as i64;
    until_count(
        &pool,
        "SELECT count(*) FROM sim_deliveries WHERE from_line IN (SELECT line_id FROM lines WHERE phone LIKE '+3461%')",
        n,
    )
    .await?;
    let first_sends = started.elapsed();
    // Every receipt recorded: nothing but the idle workers is left of the burst.
    until_count(&pool, "SELECT count(*) FROM events WHERE event_type = 'message.read' AND tenant_id IN (SELECT account_id FROM accounts WHERE name LIKE 'pacing %')", n).await?;
    let (heap_idle, rss_idle) = (heap(), rss());
    let heap_per_line = (heap_idle as f64 - heap_before as f64) / n as f64;
    let rss_per_line = (rss_idle as f64 - rss_before as f64) / n as f64;

    // 2. A run of messages on each of the busy lines, queued at once; the pacer spaces them.
    let mut runs = Vec::new();
    for &busy in busy {
        let busy = busy.min(all.len());
        let before: i64 = sqlx::query_scalar("SELECT count(*) FROM sim_deliveries").fetch_one(&pool).await?;
        let paced_from = chrono::Utc::now();
        let started = Instant::now();
        let tag = if runs.is_empty() { "paced" } else { "paced-more" };
        queue((0..busy * run_length).map(|i| (i % busy) * (all.len() / busy)).collect(), tag).await;
        until_count(&pool, "SELECT count(*) FROM sim_deliveries", before + (busy * run_length) as i64).await?;
        let took = started.elapsed();
        // Not clamped: a negative error would be a send sooner than the interval, a bug to see.
        let errors_ms: Vec<f64> = sqlx::query_scalar(
            "SELECT extract(epoch FROM gap)::float8 * 1000 - $2 FROM ( \
                 SELECT delivered_at - lag(delivered_at) OVER (PARTITION BY from_line ORDER BY delivered_at) AS gap \
                   FROM sim_deliveries WHERE delivered_at >= $1) g \
              WHERE gap IS NOT NULL ORDER BY 1",
        )
        .bind(paced_from)
        .bind(interval.as_millis() as f64)
        .fetch_all(&pool)
        .await?;
        runs.push(PacedRun { busy, rate: (busy * run_length) as f64 / took.as_secs_f64(), errors_ms });
    }

    shutdown.cancel();
    let _ = supervisor.await;
    Ok(Pacing { lines: all.len(), interval, runs, heap_per_line, rss_per_line, first_sends })
}
