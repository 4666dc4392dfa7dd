//! The `bridge` command: `serve`, `migrate`, and the operator commands. With `--json` a command
//! prints exactly one JSON object on stdout (scripts rely on the field names); logs go to stderr.

mod audit;
mod console_users;
mod progress;
mod projections;

use crate::commands::{accounts, keys, CommandError};
use crate::config::{Config, LogFormat};
use crate::db;
use crate::store::{Actor, EventStore, Metadata};
use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use domain::account::{AccountCommand, AccountError, OpenAccount};
use domain::api_key::ApiKeyError;
use domain::ids::{AccountId, KeyId};
use serde_json::{json, Value};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "bridge", version, about = "WAzion Bridge: an event-sourced WhatsApp API gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations.
    Migrate(JsonFlag),
    /// Run the server (listens on BRIDGE_LISTEN, default 127.0.0.1:8080).
    Serve {
        /// Create a demo account and API key and print a ready-to-paste curl line.
        #[arg(long)]
        demo: bool,
        /// What this node does, comma-separated: api, dispatch, webhooks, projections (default:
        /// the `roles` setting, which is all four).
        #[arg(long, value_delimiter = ',')]
        roles: Option<Vec<String>>,
    },
    /// The nodes sharing this database.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Check the configuration (defaults, bridge.toml, BRIDGE_* variables) and print what a node
    /// would run with, secrets only as set or not. Touches no database; exits 1 if invalid.
    CheckConfig(JsonFlag),
    /// Manage accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Console users: invitations and password reset links.
    #[command(subcommand)]
    Users(console_users::UsersCommand),
    /// Inspect, rebuild and verify the asynchronous projections.
    #[command(subcommand)]
    Projections(projections::ProjectionsCommand),
    /// For auditors: verify the log's integrity, replay an account's history, its past state.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// For billing: usage per account and billing cycle.
    #[command(subcommand)]
    Usage(audit::UsageCommand),
    /// Drive the simulated WhatsApp network.
    #[command(subcommand)]
    Sim(SimCommand),
}

#[derive(Subcommand)]
enum NodesCommand {
    /// Every node with its roles, heartbeat, status (live, draining, stale) and lines owned.
    List(JsonFlag),
}

#[derive(Subcommand)]
enum SimCommand {
    /// A simulated phone scans the line's QR code: the line links to that number and connects.
    Scan {
        line_id: String,
        #[arg(long)]
        phone: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Args, Clone, Copy)]
struct JsonFlag {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Open an account.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        plan: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Suspend an account: its keys get 402 everywhere but /v1/me and /v1/usage.
    Suspend {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Reactivate a suspended account.
    Activate {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Move an account to another plan.
    SetPlan {
        id: String,
        plan: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List accounts.
    List(JsonFlag),
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key; the secret is printed once and never again.
    Create {
        #[arg(long)]
        account: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Replace a key's secret; the old one stops after --grace (e.g. 30m, 24h, 7d), or without it
    /// at once, together with any secret still in the grace of an earlier rotation.
    Rotate {
        key_id: String,
        #[arg(long, value_parser = parse_duration)]
        grace: Option<chrono::Duration>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Revoke a key: it stops working at once.
    Revoke {
        key_id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// List an account's keys (never their secrets).
    List {
        #[arg(long)]
        account: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

/// `30s`, `15m`, `24h`, `7d`, or a bare number of seconds.
fn parse_duration(value: &str) -> Result<chrono::Duration, String> {
    let value = value.trim();
    let split = value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: i64 = number.parse().map_err(|_| format!("`{value}` is not a duration like 30s, 15m, 24h or 7d"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("`{value}`: unknown unit `{unit}` (use s, m, h or d)")),
    };
    Ok(chrono::Duration::seconds(seconds))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load().and_then(|c| crate::secrets::MasterKey::validate_configured(&c).map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config, matches!(cli.command, Command::Serve { .. }));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(cli, config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &Config, serving: bool) {
    use tracing_subscriber::EnvFilter;
    // Operator commands are quiet unless asked; the server logs requests.
    let default = if serving { "info,sqlx=warn" } else { "warn" };
    let filter = EnvFilter::try_from_env("BRIDGE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, never into files or log shippers.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        // Each line one object: the event's fields at the top, the request's (request_id,
        // account_id, line_id) under `span`.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
        LogFormat::Text => builder.init(),
    }
}

fn operator() -> Metadata {
    let name = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "operator".into());
    Metadata::new(Actor::Operator { name: format!("cli:{name}") })
}

/// The operator acting in `account_id`, as the caller of a command.
fn operator_in(account_id: AccountId) -> crate::api::tenant::Caller {
    crate::api::tenant::Caller { account_id, metadata: operator() }
}

fn print(json_out: bool, value: Value, text: impl FnOnce() -> String) {
    if json_out {
        println!("{value}");
    } else {
        println!("{}", text());
    }
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<ExitCode> {
    if let Command::CheckConfig(out) = cli.command {
        check_config(&config, out);
        return Ok(ExitCode::SUCCESS);
    }
    let database = db::open(&config).await?;
    let pool = database.pool.clone();
    let is_serve = matches!(cli.command, Command::Serve { .. });
    if matches!(cli.command, Command::Migrate(_)) || (is_serve && config.migrate_on_start) {
        db::migrate(&pool).await?;
    } else if !is_serve {
        // Operator commands need the schema too; migrating is idempotent and cheap when current.
        db::migrate(&pool).await?;
    }
    let plans = config.plan_catalog()?;
    let store = EventStore::new(pool.clone(), EventStore::inline_projections());

    let code = match cli.command {
        Command::Migrate(out) => {
            let applied = db::MIGRATOR.iter().count();
            print(out.json, json!({"ok": true, "migrations": applied}), || {
                format!("database is up to date ({applied} migrations)")
            });
            ExitCode::SUCCESS
        }
        Command::Serve { demo, roles } => {
            let mut config = config;
            if let Some(roles) = roles {
                crate::config::Roles::parse(&roles).context("--roles")?;
                config.roles = roles;
            }
            serve(config, pool, &store, &plans, demo).await.map(|()| ExitCode::SUCCESS)?
        }
        Command::CheckConfig(_) => unreachable!("answered before the database is opened"),
        Command::Nodes(NodesCommand::List(out)) => {
            nodes_list(&pool, std::time::Duration::from_secs(config.line_lease_secs), out).await?;
            ExitCode::SUCCESS
        }
        Command::Accounts(command) => accounts_command(command, &store, &plans, &pool).await.map(|()| ExitCode::SUCCESS)?,
        Command::Keys(command) => keys_command(command, &store, &pool).await.map(|()| ExitCode::SUCCESS)?,
        Command::Users(command) => {
            console_users::run(command, &config, &store, &pool, operator()).await.map(|()| ExitCode::SUCCESS)?
        }
        Command::Sim(SimCommand::Scan { line_id, phone, out }) => {
            sim_scan(&store, &line_id, &phone, out).await.map(|()| ExitCode::SUCCESS)?
        }
        // These exit 1 when they find something (a break in the log, a differing read model).
        Command::Projections(command) => projections::run(command, &pool).await?,
        Command::Audit(command) => audit::audit(command, &config, &pool).await?,
        Command::Usage(command) => audit::usage(command, &plans, &pool).await?,
    };
    // Last, so an embedded cluster stops only after everything is done with it.
    drop(database);
    Ok(code)
}

async fn serve(
    mut config: Config,
    pool: sqlx::PgPool,
    store: &EventStore,
    plans: &domain::plan::PlanCatalog,
    demo: bool,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (set BRIDGE_LISTEN)", config.listen))?;
    if demo {
        // A demo's lines are on the simulated network: nothing to link a real phone to.
        config.default_engine = "sim".into();
        let (account, _) = accounts::open(store, plans, &operator(), "Demo account", "pro").await?;
        let (key, secret) = keys::create(store, &operator_in(account.id.clone()), Some("demo".into())).await?;
        let base = format!("http://{}", listener.local_addr()?);
        println!("Demo account {} (plan pro), API key {}:\n\n  {}\n", account.id, key.key_id, secret.expose());
        println!("Try it:\n\n  curl -s {base}/api/bridge/v1/me -H \"Authorization: Bearer {}\"\n", secret.expose());
        let console_base = config.console.base_url.clone().unwrap_or(base);
        let (email, link) = console_users::demo_owner(store, &operator(), &account.id, &console_base).await?;
        println!("Console: set a password for {email} and sign in (the link works once, for 24 hours):\n\n  {link}\n");
    }
    // Install the handlers before serving, so that even a signal in the first moment is graceful.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let server = crate::server::start(config, pool, listener).await?;
    let stopper = server.stopper();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("draining: no new work; finishing what is under way, handing back the lines");
        stopper.stop().await;
    });
    server.wait().await;
    Ok(())
}

/// What `check-config` prints (the configuration was validated when it was loaded).
fn check_config(config: &Config, out: JsonFlag) {
    let value = json!({
        "valid": true,
        "listen": config.listen.to_string(),
        "metrics_listen": config.metrics_listen.map(|a| a.to_string()),
        "roles": config.roles().names(),
        "node_id": config.node_id,
        "log_format": match config.log_format { LogFormat::Json => "json", LogFormat::Text => "text" },
        "database_url": config.database_url.is_some(),
        "read_database_url": config.read_database_url.is_some(),
        "master_key": config.master_key.is_some(),
        "operator_token": config.operator_token.is_some(),
        "public_hosts": config.public_hosts,
    });
    print(out.json, value.clone(), || {
        format!(
            "configuration valid: listen {}, roles {}, metrics {}",
            config.listen,
            config.roles().names().join(","),
            config.metrics_listen.map_or("behind the operator token".into(), |a| format!("on {a}"))
        )
    });
}

async fn nodes_list(pool: &sqlx::PgPool, ttl: std::time::Duration, out: JsonFlag) -> anyhow::Result<()> {
    let nodes = crate::cluster::list(pool, ttl).await?;
    print(out.json, json!({"nodes": nodes}), || {
        if nodes.is_empty() {
            return "no nodes".into();
        }
        let mut text = format!("{:<28} {:<9} {:>8} {:>6}  {}", "NODE", "STATUS", "HEARTBEAT", "LINES", "ROLES");
        for n in &nodes {
            let age = format!("{:.1}s", n.heartbeat_age_ms as f64 / 1000.0);
            text.push_str(&format!("\n{:<28} {:<9} {:>8} {:>6}  {}", n.node_id, n.status, age, n.lines_owned, n.roles.join(",")));
        }
        text
    });
    Ok(())
}

fn account_json(a: &OpenAccount) -> Value {
    json!({"account_id": a.id, "name": a.name.as_str(), "plan": a.plan.as_str(), "status": a.status.as_str(), "cycle_anchor": a.cycle_anchor})
}

fn account_error(id: &str, e: CommandError<AccountError>) -> anyhow::Error {
    match e {
        CommandError::Rejected(AccountError::NotFound) => anyhow!("no account {id}"),
        CommandError::Rejected(e) => anyhow!("{e}"),
        other => anyhow::Error::new(other),
    }
}

fn parse_account(id: &str) -> anyhow::Result<AccountId> {
    AccountId::parse(id).map_err(|e| anyhow!("{e}"))
}

async fn accounts_command(
    command: AccountsCommand,
    store: &EventStore,
    plans: &domain::plan::PlanCatalog,
    pool: &sqlx::PgPool,
) -> anyhow::Result<()> {
    let (id, command, out, verb) = match command {
        AccountsCommand::Create { name, plan, out } => {
            let (account, _) = accounts::open(store, plans, &operator(), &name, &plan).await.map_err(|e| account_error("", e))?;
            print(out.json, account_json(&account), || {
                format!("created account {} ({}, plan {})", account.id, account.name.as_str(), account.plan)
            });
            return Ok(());
        }
        AccountsCommand::List(out) => {
            let rows: Vec<(String, String, String, String, chrono::DateTime<chrono::Utc>)> =
                sqlx::query_as("SELECT account_id, name, plan, status, created_at FROM accounts ORDER BY account_id")
                    .fetch_all(pool)
                    .await?;
            let list: Vec<Value> = rows
                .iter()
                .map(|(id, name, plan, status, created)| json!({"account_id": id, "name": name, "plan": plan, "status": status, "created_at": created}))
                .collect();
            print(out.json, json!({"accounts": list}), || {
                rows.iter()
                    .map(|(id, name, plan, status, _)| format!("{id}  {status:<9}  {plan:<9}  {name}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            return Ok(());
        }
        AccountsCommand::Suspend { id, reason, out } => (id, AccountCommand::Suspend { reason }, out, "suspended"),
        AccountsCommand::Activate { id, out } => (id, AccountCommand::Activate, out, "active"),
        AccountsCommand::SetPlan { id, plan, out } => (id, AccountCommand::ChangePlan { plan }, out, "updated"),
    };
    let account_id = parse_account(&id)?;
    let (account, changed) =
        accounts::handle(store, plans, &operator(), &account_id, command).await.map_err(|e| account_error(&id, e))?;
    let mut value = account_json(&account);
    value["changed"] = changed.into();
    print(out.json, value, || {
        let state = if changed { verb.to_owned() } else { format!("already {verb}") };
        format!("account {} {state} (status {}, plan {})", account.id, account.status.as_str(), account.plan)
    });
    Ok(())
}

fn key_error(id: &str, e: CommandError<ApiKeyError>) -> anyhow::Error {
    match e {
        CommandError::Rejected(ApiKeyError::NotFound) => anyhow!("no API key {id}"),
        CommandError::Rejected(e) => anyhow!("{id}: {e}"),
        other => anyhow::Error::new(other),
    }
}

/// The key `raw` names, in whichever account holds it (the operator acts for every account).
async fn operator_key(pool: &sqlx::PgPool, raw: &str) -> anyhow::Result<crate::queries::owned::OwnedKey> {
    let id = KeyId::parse(raw).map_err(|e| anyhow!("{e}"))?;
    let found = crate::queries::keys::for_operator(pool, &id).await?;
    found.map(|(key, _)| key).ok_or_else(|| key_error(raw, CommandError::Rejected(ApiKeyError::NotFound)))
}

async fn keys_command(command: KeysCommand, store: &EventStore, pool: &sqlx::PgPool) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { account, name, out } => {
            let account_id = parse_account(&account)?;
            let (key, secret) = keys::create(store, &operator_in(account_id), name).await.map_err(|e| match e {
                keys::KeyCommandError::AccountNotFound => anyhow!("no account {account}"),
                keys::KeyCommandError::Key(e) => key_error("", e),
            })?;
            print(out.json, json!({"key_id": key.key_id, "account_id": key.account_id, "api_key": secret.expose()}), || {
                format!(
                    "created key {} for {}\n\n  {}\n\nThis secret is shown once; store it now.",
                    key.key_id,
                    key.account_id,
                    secret.expose()
                )
            });
        }
        KeysCommand::Rotate { key_id, grace, out } => {
            let key = operator_key(pool, &key_id).await?;
            let (key, secret, until) = keys::rotate(store, &operator(), &key, grace).await.map_err(|e| key_error(&key_id, e))?;
            print(
                out.json,
                json!({"key_id": key.key_id, "account_id": key.account_id, "api_key": secret.expose(), "previous_valid_until": until}),
                || {
                    let old = until.map_or("stopped working now".to_owned(), |u| format!("works until {u}"));
                    format!(
                        "rotated key {}; the old secret {old}\n\n  {}\n\nThis secret is shown once; store it now.",
                        key.key_id,
                        secret.expose()
                    )
                },
            );
        }
        KeysCommand::Revoke { key_id, out } => {
            let key = operator_key(pool, &key_id).await?;
            let changed = keys::revoke(store, &operator(), &key).await.map_err(|e| key_error(&key_id, e))?;
            print(out.json, json!({"key_id": key_id, "status": "revoked", "changed": changed}), || {
                if changed {
                    format!("revoked key {key_id}")
                } else {
                    format!("key {key_id} was already revoked")
                }
            });
        }
        KeysCommand::List { account, out } => {
            let account_id = parse_account(&account)?;
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE account_id = $1)")
                .bind(account_id.as_str())
                .fetch_one(pool)
                .await?;
            if !exists {
                bail!("no account {account}");
            }
            let rows = crate::queries::keys::list(pool, &account_id).await?;
            let list: Vec<Value> = rows
                .iter()
                .map(|k| {
                    json!({"key_id": k.key_id, "name": k.name, "status": k.status, "created_at": k.created_at, "rotated_at": k.rotated_at, "revoked_at": k.revoked_at})
                })
                .collect();
            print(out.json, json!({"account_id": account, "keys": list}), || {
                rows.iter()
                    .map(|k| format!("{}  {:<8}  {}", k.key_id, k.status, k.name.as_deref().unwrap_or("-")))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}

async fn sim_scan(store: &EventStore, raw_line: &str, raw_phone: &str, out: JsonFlag) -> anyhow::Result<()> {
    use domain::line::{EngineKind, Line, LineCommand};
    let line_id = domain::ids::LineId::parse(raw_line).map_err(|e| anyhow!("{e}"))?;
    let phone = domain::phone::PhoneNumber::parse(raw_phone).map_err(|e| anyhow!("{e}"))?;
    let (line, _) = crate::commands::load::<Line>(store, line_id.as_str()).await.map_err(|e| anyhow!("{e}"))?;
    let line = line.line.ok_or_else(|| anyhow!("no line {raw_line}"))?;
    if line.engine != EngineKind::Sim {
        bail!("line {raw_line} does not use the sim engine");
    }
    // The operator acts on the line's own account, found as any account's line is.
    let (owned, _) = crate::queries::lines::owned(store.pool(), &line.account_id, &line_id)
        .await
        .map_err(|e| anyhow!("{raw_line}: {}", e.cause().unwrap_or(e.message())))?;
    let (line, _) = crate::commands::lines::handle(store, &operator(), &owned, LineCommand::Connect { phone, jid: None })
        .await
        .map_err(|e| match e {
        CommandError::Rejected(e) => anyhow!("{raw_line}: {e}"),
        other => anyhow::Error::new(other),
    })?;
    let phone = line.phone.as_ref().map(|p| p.to_string());
    print(out.json, json!({"line_id": line.line_id, "status": line.status.as_str(), "phone": phone}), || {
        format!("line {} is {} as {}", line.line_id, line.status.as_str(), phone.as_deref().unwrap_or("-"))
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap().num_seconds(), 90);
        assert_eq!(parse_duration("15m").unwrap().num_seconds(), 900);
        assert_eq!(parse_duration("24h").unwrap().num_seconds(), 86400);
        assert_eq!(parse_duration("7d").unwrap().num_days(), 7);
        assert!(parse_duration("7w").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
