//! The integration-test harness: a fresh database per test, cloned from a migrated template, and
//! the real server on port 0 over real HTTP. Background work is driven explicitly, never slept for.
#![allow(dead_code)]

pub mod browser;
pub mod console;
pub mod mcp_client;
pub mod partition;
pub mod pg_cluster;
pub mod proxy_trap;
pub mod receiver;

use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use std::process::Output;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::OnceCell;
use wazion_bridge::config::Config;
use wazion_bridge::db;
use wazion_bridge::engine::whatsapp::fake::FakeWhatsapp;
use wazion_bridge::server::RunningServer;

struct PgServer {
    admin: PgConnectOptions,
    /// How a URL reaches a database of this server (the CLI takes URLs).
    url_base: String,
    url_query: String,
    _embedded: Option<db::embedded::EmbeddedPostgres>,
}

static SERVER: OnceCell<PgServer> = OnceCell::const_new();
static TEMPLATE: OnceCell<String> = OnceCell::const_new();

async fn pg_server() -> &'static PgServer {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                let admin = PgConnectOptions::from_str(&url).expect("DATABASE_URL is a PostgreSQL URL").database("postgres");
                let (base, query) =
                    url.split_once('?').map_or((url.clone(), String::new()), |(b, q)| (b.to_owned(), format!("?{q}")));
                let base = base.rsplit_once('/').map_or(base.clone(), |(b, _)| b.to_owned());
                return PgServer { admin, url_base: base, url_query: query, _embedded: None };
            }
            let mut config = Config::defaults();
            config.data_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bridge-test");
            let server = db::locate_server(&config).await.expect("a PostgreSQL server for the tests");
            let (url_base, url_query) = match &server.embedded {
                None => ("postgres://postgres@127.0.0.1:5432".to_owned(), String::new()),
                Some(_) => {
                    ("postgres://postgres@localhost".to_owned(), format!("?host={}", config.data_dir.join("postgres").display()))
                }
            };
            PgServer { admin: server.admin, url_base, url_query, _embedded: server.embedded }
        })
        .await
}

/// A database with every migration applied, built once per migration set and cloned per test.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let server = pg_server().await;
            let mut hash = 0u64;
            for m in db::MIGRATOR.iter() {
                for b in m.checksum.iter() {
                    hash = hash.wrapping_mul(31).wrapping_add(u64::from(*b));
                }
            }
            let name = format!("bridge_tpl_{hash:016x}");
            let mut admin = PgConnection::connect_with(&server.admin).await.expect("admin connection");
            // One test process builds it; the others wait here.
            sqlx::query("SELECT pg_advisory_lock(1463943170)").execute(&mut admin).await.unwrap();
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(&name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
            if !exists {
                let building = format!("{name}_building");
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{building}\"")).execute(&mut admin).await.unwrap();
                sqlx::query(&format!("CREATE DATABASE \"{building}\"")).execute(&mut admin).await.unwrap();
                let pool = PgPool::connect_with(server.admin.clone().database(&building)).await.unwrap();
                db::migrate(&pool).await.expect("migrations apply");
                pool.close().await;
                sqlx::query(&format!("ALTER DATABASE \"{building}\" RENAME TO \"{name}\"")).execute(&mut admin).await.unwrap();
            }
            sqlx::query("SELECT pg_advisory_unlock(1463943170)").execute(&mut admin).await.unwrap();
            admin.close().await.ok();
            name
        })
        .await
}

/// A fresh, migrated database of its own; dropped when the value is.
pub struct TestDb {
    pub name: String,
    pub pool: PgPool,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let template = template().await;
        let server = pg_server().await;
        let name = format!("bridge_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect_with(&server.admin).await.expect("admin connection");
        // PostgreSQL refuses to clone a template that another CREATE DATABASE is reading, so test
        // processes take turns (each clone takes milliseconds).
        sqlx::query("SELECT pg_advisory_lock(1463943171)").execute(&mut admin).await.unwrap();
        let created = sqlx::query(&format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"")).execute(&mut admin).await;
        sqlx::query("SELECT pg_advisory_unlock(1463943171)").execute(&mut admin).await.unwrap();
        created.unwrap_or_else(|e| panic!("creating the test database: {e}"));
        admin.close().await.ok();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(10)
            .connect_with(server.admin.clone().database(&name))
            .await
            .expect("test database");
        let url = format!("{}/{name}{}", server.url_base, server.url_query);
        Self { name, pool, url }
    }
}

impl TestDb {
    /// Write `contents` to a file of this test's own (under the target's test scratch directory);
    /// its path.
    pub fn scratch_file(&self, name: &str, contents: &[u8]) -> String {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(&self.name);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }

    /// Await `check` becoming true, within `timeout`. It is re-evaluated whenever the event log
    /// announces an append on this database (LISTEN `bridge_events`, which every server and CLI
    /// process notifies), so a test reacts to the change itself, across processes. Effects that
    /// no append announces (a key cache dropped just after the NOTIFY, PostgreSQL's transaction
    /// horizon moving) are re-checked at least every 100 ms.
    pub async fn await_condition<F, Fut>(&self, what: &str, timeout: Duration, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        assert!(self.condition_within(timeout, check).await, "timed out waiting for: {what}");
    }

    /// Like [`TestDb::await_condition`], but says whether the condition held in time.
    pub async fn condition_within<F, Fut>(&self, timeout: Duration, check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        condition_within_on(&self.pool, timeout, check).await
    }
}

/// [`TestDb::await_condition`] on any database (a cluster of a test's own).
pub async fn await_condition_on<F, Fut>(pool: &PgPool, what: &str, timeout: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    assert!(condition_within_on(pool, timeout, check).await, "timed out waiting for: {what}");
}

/// [`TestDb::condition_within`] on any database.
pub async fn condition_within_on<F, Fut>(pool: &PgPool, timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut changes = sqlx::postgres::PgListener::connect_with(pool).await.expect("a listener");
    changes.listen(projections::notify::CHANNEL).await.expect("LISTEN");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return false;
        }
        let wait = (deadline - now).min(Duration::from_millis(100));
        if let Ok(received) = tokio::time::timeout(wait, changes.recv()).await {
            received.expect("the listener works");
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let Some(server) = SERVER.get() else { return };
        let admin = server.admin.clone();
        // Drop runs outside any runtime we could block on; use a small one of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        })
        .join();
    }
}

/// What a run of the `bridge` binary printed.
pub struct CliRun {
    pub output: Output,
}

impl CliRun {
    pub fn ok(&self) -> bool {
        self.output.status.success()
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    /// The one JSON object a `--json` command prints.
    pub fn json(&self) -> Value {
        assert!(self.ok(), "command failed: {}", self.stderr());
        serde_json::from_slice(&self.output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout()))
    }
}

/// The real server, on its own database, listening on an ephemeral port.
pub struct TestApp {
    pub db: TestDb,
    pub server: Option<RunningServer>,
    pub base: String,
    pub http: reqwest::Client,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new().await;
        let mut config = test_config();
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = wazion_bridge::server::start(config, db.pool.clone(), listener).await.expect("server starts");
        let base = format!("http://{}", server.addr);
        Self { db, server: Some(server), base, http: reqwest::Client::new() }
    }

    /// A server whose `whatsapp` lines talk to the scripted `fake` (and keep their session state
    /// in this test's PostgreSQL, as in production).
    pub async fn spawn_with_whatsapp(fake: &FakeWhatsapp, configure: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new().await;
        let mut config = test_config();
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = wazion_bridge::server::start_with(config, db.pool.clone(), listener, whatsapp_options(fake))
            .await
            .expect("server starts");
        let base = format!("http://{}", server.addr);
        Self { db, server: Some(server), base, http: reqwest::Client::new() }
    }

    /// Start a server again on this test's database (after `stop_server`), its `whatsapp` lines
    /// talking to `fake`.
    pub async fn start_server_with_whatsapp(&mut self, fake: &FakeWhatsapp, configure: impl FnOnce(&mut Config)) {
        assert!(self.server.is_none(), "stop the running server first");
        let mut config = test_config();
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = wazion_bridge::server::start_with(config, self.db.pool.clone(), listener, whatsapp_options(fake))
            .await
            .expect("server starts");
        self.base = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Run `bridge` against this test's database.
    pub async fn cli(&self, args: &[&str]) -> CliRun {
        cli(&self.db, args).await
    }

    /// A new account on `plan` with one key: `(account_id, key_id, api_key)`.
    pub async fn account(&self, plan: &str) -> (String, String, String) {
        let account = self.cli(&["accounts", "create", "--name", "Acme Ltd", "--plan", plan, "--json"]).await.json();
        let account_id = account["account_id"].as_str().unwrap().to_owned();
        let key = self.cli(&["keys", "create", "--account", &account_id, "--name", "test", "--json"]).await.json();
        (account_id, key["key_id"].as_str().unwrap().to_owned(), key["api_key"].as_str().unwrap().to_owned())
    }

    /// POST a JSON body with the key; the status and the JSON answer.
    pub async fn post(&self, key: &str, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
        let r = self.http.post(self.url(path)).bearer_auth(key).json(&body).send().await.unwrap();
        (r.status(), r.json().await.unwrap())
    }

    /// Every payload and metadata of the event log, as one text (to prove what it does not hold).
    pub async fn whole_log(&self) -> String {
        sqlx::query_scalar("SELECT COALESCE(string_agg(payload::text || metadata::text, ' '), '') FROM events")
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// A new sim line of the key's account, linked to `phone` by a sandbox scan.
    pub async fn connected_line(&self, key: &str, phone: &str) -> String {
        let (status, created) = self.post(key, "/v1/lines", serde_json::json!({})).await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{created}");
        let line_id = created["line"]["line_id"].as_str().unwrap().to_owned();
        let (status, scanned) =
            self.post(key, &format!("/v1/sandbox/lines/{line_id}/scan"), serde_json::json!({"phone": phone})).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{scanned}");
        line_id
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(key).send().await.unwrap()
    }

    /// Await `check` becoming true (see [`TestDb::await_condition`]).
    pub async fn eventually<F, Fut>(&self, what: &str, timeout: Duration, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        self.db.await_condition(what, timeout, check).await
    }

    /// Start a server again on this test's database (after `stop_server`).
    pub async fn start_server(&mut self, configure: impl FnOnce(&mut Config)) {
        assert!(self.server.is_none(), "stop the running server first");
        let mut config = test_config();
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = wazion_bridge::server::start(config, self.db.pool.clone(), listener).await.expect("server starts");
        self.base = format!("http://{}", server.addr);
        self.server = Some(server);
    }

    /// Stop the server and its background work, keeping the database for inspection.
    pub async fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

fn whatsapp_options(fake: &FakeWhatsapp) -> wazion_bridge::server::StartOptions {
    wazion_bridge::server::StartOptions { whatsapp: Some(std::sync::Arc::new(fake.clone())), session_stores: None }
}

/// The `bridge` binary set up to see nothing of the machine it runs on: none of the developer's
/// `BRIDGE_*` variables, no `bridge.toml` (it runs in a fresh directory of its own, which is also
/// its data directory), the tests' master key, and this test's database.
pub fn bridge(db: &TestDb) -> tokio::process::Command {
    bridge_on(&db.url)
}

/// [`bridge`] on the database at `url`.
pub fn bridge_on(url: &str) -> tokio::process::Command {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("bridge-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a working directory for bridge");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bridge"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("BRIDGE_") {
            command.env_remove(name);
        }
    }
    command
        .current_dir(&dir)
        .env("BRIDGE_DATA_DIR", &dir)
        .env("BRIDGE_MASTER_KEY", TEST_MASTER_KEY)
        .env("BRIDGE_LOG", "warn")
        .env("BRIDGE_DEFAULT_ENGINE", "sim")
        .env("DATABASE_URL", url)
        .kill_on_drop(true);
    command
}

/// Run `bridge` with `args` against `db`.
pub async fn cli(db: &TestDb, args: &[&str]) -> CliRun {
    CliRun { output: bridge(db).args(args).output().await.expect("bridge runs") }
}

/// `bridge serve` as a real process (node `node-a`) on the test database, with extra `BRIDGE_*`
/// settings; returns it, its base URL, and the file its log is copied to (for failure messages).
pub async fn serve_process(db: &TestDb, env: &[(&str, &str)]) -> (tokio::process::Child, String, std::path::PathBuf) {
    serve_process_on(&db.url, env).await
}

/// [`serve_process`] on the database at `url`.
pub async fn serve_process_on(url: &str, env: &[(&str, &str)]) -> (tokio::process::Child, String, std::path::PathBuf) {
    use tokio::io::AsyncBufReadExt;
    let mut child = bridge_on(url)
        .arg("serve")
        .env("BRIDGE_LISTEN", "127.0.0.1:0")
        .env("BRIDGE_NODE_ID", "node-a")
        .env("BRIDGE_LOG", "info")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    // What it logged up to listening, kept for the log file below.
    let mut start = Vec::new();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            start.push(line.clone());
            if let Some(i) = line.find("addr=") {
                return line[i + 5..].split_whitespace().next().unwrap().trim_matches('"').to_owned();
            }
            // BRIDGE_LOG_FORMAT=json
            if let Some(i) = line.find(r#""addr":""#) {
                return line[i + 8..].split('"').next().unwrap().to_owned();
            }
        }
        panic!("the server exited before listening");
    })
    .await
    .expect("the server starts");
    // Keep draining its log (so it never blocks on a full pipe), and keep it for failure messages.
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("serve-{}.log", child.id().unwrap_or(0)));
    let path = log.clone();
    std::fs::write(&path, start.join("\n")).unwrap();
    tokio::spawn(async move {
        let mut out = start;
        while let Ok(Some(line)) = lines.next_line().await {
            out.push(line);
            let _ = std::fs::write(&path, out.join("\n"));
        }
    });
    (child, format!("http://{addr}"), log)
}

/// A file server of our own (an image, `held.jpg`) that answers each request only once the test
/// says so; it counts the requests.
pub async fn held_file() -> (String, tokio::sync::watch::Receiver<usize>, std::sync::Arc<tokio::sync::Notify>) {
    let (requests_tx, requests) = tokio::sync::watch::channel(0usize);
    let requests_tx = std::sync::Arc::new(requests_tx);
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let released = release.clone();
    let app = axum::Router::new().route(
        "/held.jpg",
        axum::routing::get(move || {
            let (requests_tx, released) = (requests_tx.clone(), released.clone());
            async move {
                requests_tx.send_modify(|n| *n += 1);
                released.notified().await;
                ([(axum::http::header::CONTENT_TYPE, "image/jpeg")], vec![0xFFu8; 100])
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/held.jpg", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, requests, release)
}

/// The master key of every test server and CLI run (so no key file is written).
pub const TEST_MASTER_KEY: &str = "7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e";

/// The embedded defaults, with a fixed master key (no key file is written).
pub fn test_config() -> Config {
    let mut config = Config::defaults();
    config.master_key = Some(wazion_bridge::config::Secret::new(TEST_MASTER_KEY));
    // The tests' lines are on the simulated network unless they ask for the `whatsapp` engine.
    config.default_engine = "sim".into();
    config.whatsapp_reconnect_min_ms = 20;
    config
}

/// The one set of insta settings every snapshot uses: it redacts what changes from run to run
/// (every kind of id, times, WhatsApp ids, webhook secrets, ports, durations).
pub fn redactions() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    for prefix in ["acc", "key", "line", "msg", "evt", "wh", "dlv", "req"] {
        settings.add_filter(&format!(r"{prefix}_[0-9a-z]{{26,32}}"), format!("{prefix}_[id]"));
    }
    settings.add_filter(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", "[time]");
    settings.add_filter(r#""(engine_message_id|whatsapp_id)": "[^"]+""#, r#""$1": "[whatsapp id]""#);
    settings.add_filter(r"wzb_whsec_[0-9A-Za-z]{40}", "wzb_whsec_[secret]");
    settings.add_filter(r#""(latency_ms|duration_ms|last_duration_ms)": \d+"#, r#""$1": "[ms]""#);
    // Ephemeral ports of the tests' own receivers (a fixed port in a URL stays as it is).
    settings.add_filter(r"127\.0\.0\.1:\d{4,5}", "127.0.0.1:[port]");
    settings
}

/// Each of `lines` is held by the node the rendezvous hash over `nodes` names for it (how dispatch
/// nodes share the lines: `wazion_bridge::dispatch::ownership`).
pub async fn assert_lines_on_their_nodes(pool: &PgPool, lines: &[String], nodes: &[&str]) {
    let expected = wazion_bridge::dispatch::ownership::Ownership::new("observer");
    expected.update(nodes.iter().map(|n| n.to_string()).collect());
    for line in lines {
        let owner: String =
            sqlx::query_scalar("SELECT owner FROM line_leases WHERE line_id = $1").bind(line).fetch_one(pool).await.unwrap();
        assert_eq!(Some(owner), expected.node_for(line), "{line} is held by its node");
    }
}

/// `n` connected sim lines, made through the nodes in turn; the phones are `phone_prefix` and
/// the line's index.
pub async fn sim_lines(bases: &[String], key: &str, n: usize, phone_prefix: &str) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut lines = Vec::new();
    for i in 0..n {
        let base = &bases[i % bases.len()];
        let created: serde_json::Value = http
            .post(format!("{base}/v1/lines"))
            .bearer_auth(key)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let line = created["line"]["line_id"].as_str().unwrap().to_owned();
        let scanned = http
            .post(format!("{base}/v1/sandbox/lines/{line}/scan"))
            .bearer_auth(key)
            .json(&serde_json::json!({"phone": format!("{phone_prefix}{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(scanned.status(), reqwest::StatusCode::OK);
        lines.push(line);
    }
    lines
}

/// A new account on `plan` with one API key, made with the CLI on the database at `url`:
/// `(account_id, api_key)`.
pub async fn account_on(url: &str, plan: &str) -> (String, String) {
    let run = |args: Vec<String>| async move {
        let out = bridge_on(url).args(&args).output().await.expect("bridge runs");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let account = run(["accounts", "create", "--name", "Acme Ltd", "--plan", plan, "--json"].map(String::from).to_vec()).await;
    let account_id = account["account_id"].as_str().unwrap().to_owned();
    let key = run(["keys", "create", "--account", &account_id, "--json"].map(String::from).to_vec()).await;
    (account_id, key["api_key"].as_str().unwrap().to_owned())
}

/// Another node in this test process, on `pool`, with the tests' configuration as `configure`
/// changes it; its base URL.
pub async fn node_on(pool: &PgPool, configure: impl FnOnce(&mut Config)) -> (wazion_bridge::server::RunningServer, String) {
    let mut config = test_config();
    configure(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = wazion_bridge::server::start(config, pool.clone(), listener).await.expect("the node starts");
    let base = format!("http://{}", server.addr);
    (server, base)
}
