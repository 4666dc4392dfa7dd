//! Layered configuration: embedded defaults, then `bridge.toml`, then `BRIDGE_*` environment
//! variables (and `DATABASE_URL`). Validated once at start, with messages that say what to fix.

mod secret;

pub use secret::Secret;

use anyhow::{bail, Context};
use domain::plan::{PlanCatalog, PlanLimits, PlanName};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

const DEFAULTS: &str = include_str!("defaults.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub migrate_on_start: bool,
    pub max_body_bytes: usize,
    pub unknown_key_cache_ms: u64,
    pub log_format: LogFormat,
    pub allow_private_urls: bool,
    pub line_send_interval_ms: u64,
    pub line_send_jitter_ms: u64,
    /// Concurrent sends share transactions (group commit), decided by this many shards per
    /// process (each account belongs to one). Off: one transaction per send.
    pub group_commit: bool,
    pub group_commit_shards: usize,
    /// Host names (or host:port) the MCP endpoint answers to: a list, or a comma-separated string
    /// (BRIDGE_PUBLIC_HOSTS=bridge.example.com,api.example.com).
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub public_hosts: Vec<String>,
    pub node_id: String,
    /// What this node does (`api`, `dispatch`, `webhooks`, `projections`): a list, or a
    /// comma-separated string (BRIDGE_ROLES=api,webhooks). `bridge serve --roles` overrides it.
    #[serde(deserialize_with = "list_or_comma_separated")]
    pub roles: Vec<String>,
    /// Where `/metrics` (Prometheus) is served on its own (BRIDGE_METRICS_LISTEN). Unset: on the
    /// main listener, behind the operator token.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// `/readyz` fails while an asynchronous projection of this node is further behind than this.
    pub ready_max_projection_lag_secs: u64,
    pub line_lease_secs: u64,
    pub send_timeout_ms: u64,
    pub media_max_bytes: usize,
    pub media_timeout_ms: u64,
    pub sim_delivered_after_ms: u64,
    pub sim_read_after_ms: u64,
    /// The engine of a line created without one: `whatsapp` (real numbers) or `sim` (the
    /// simulated network; `serve --demo` and the tests use it).
    pub default_engine: String,
    /// A dropped WhatsApp session connects again after this long, doubling up to the maximum.
    pub whatsapp_reconnect_min_ms: u64,
    pub whatsapp_reconnect_max_ms: u64,
    #[serde(default)]
    pub database_url: Option<Secret>,
    /// A streaming replica for the read endpoints (BRIDGE_READ_DATABASE_URL); unset: the primary.
    #[serde(default)]
    pub read_database_url: Option<Secret>,
    /// How long a read waits for the replica to replay the writes made before it, before it
    /// reads the primary instead.
    pub read_replica_max_wait_ms: u64,
    /// Seals webhook secrets (BRIDGE_MASTER_KEY): 32 bytes, hex or base64.
    #[serde(default)]
    pub master_key: Option<Secret>,
    /// Guards the operator HTTP API (BRIDGE_OPERATOR_TOKEN); without one that API is off.
    #[serde(default)]
    pub operator_token: Option<Secret>,
    /// How often the server signs a digest of the event log's stream heads.
    pub audit_digest_interval_secs: u64,
    pub database: DatabaseConfig,
    pub webhooks: WebhooksConfig,
    pub http: HttpConfig,
    pub rate_limits: RateLimitsConfig,
    pub console: ConsoleConfig,
    pub plans: BTreeMap<String, PlanLimits>,
}

/// The console, the web UI at `/console` (the `[console]` table; BRIDGE_CONSOLE__*).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Where people reach the console, for the links the CLI prints (`https://bridge.example.com`).
    /// Unset: `http://` and the listen address.
    #[serde(default)]
    pub base_url: Option<String>,
    /// A session unused for this long ends (fractions allowed).
    pub session_idle_minutes: f64,
    /// A session ends this long after sign-in, however much it is used.
    pub session_lifetime_hours: u64,
    /// Anyone may open an account on the `free` plan at /console/signup.
    pub signup: bool,
    /// Sign-in attempts per email address.
    pub sign_in_per_email: RateLimit,
    /// Sign-in attempts per client address.
    pub sign_in_per_address: RateLimit,
}

/// What one client may hold of the HTTP server (the `[http]` table; BRIDGE_HTTP__*).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// A connection must deliver a request's whole header within this time (an idle keep-alive
    /// connection too), or it is closed.
    pub header_read_timeout_ms: u64,
    /// A request not answered within this time is answered `server_error`.
    pub request_timeout_ms: u64,
    /// Connections served at once; more wait to be accepted until one closes.
    pub max_connections: usize,
}

/// Request rates (the `[rate_limits]` table; BRIDGE_RATE_LIMITS__*).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Every authenticated REST and MCP request, per API key.
    pub api_key: RateLimit,
    /// `POST /v1/webhooks/{id}/test`, per webhook.
    pub webhook_test: RateLimit,
    /// `POST /v1/sandbox/lines/{id}/inbound`, per line.
    pub sandbox_inbound: RateLimit,
}

/// A sustained rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests a second, sustained (fractions allowed: 0.1 is one every 10 seconds).
    pub per_second: f64,
    /// Requests allowed at once after a quiet spell.
    pub burst: u32,
}

impl RateLimit {
    fn validate(&self, name: &str) -> anyhow::Result<()> {
        // Less than one a day is a typo rather than a limit.
        if !(self.per_second.is_finite() && self.per_second >= 1.0 / 86400.0) || self.burst == 0 {
            bail!("{name}: per_second must be at least 1/86400 (one a day) and burst at least 1");
        }
        Ok(())
    }
}

/// Webhook delivery (the `[webhooks]` table; BRIDGE_WEBHOOKS__*).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// How long a receiver may take to answer.
    pub timeout_ms: u64,
    /// The wait before each retry after a failed attempt; when the list is used up the delivery is
    /// given up.
    pub retry_schedule_ms: Vec<u64>,
    /// Each wait is spread by up to this fraction either way.
    pub retry_jitter: f64,
    /// A webhook that has failed for this long with no success in between is disabled.
    pub disable_after_ms: u64,
    /// Lanes (a webhook and a line) sent at once per node; each lane's deliveries go one after
    /// another, in order.
    pub concurrency: usize,
    /// How many of a lane's deliveries are claimed, charged and recorded together (a window).
    pub window: usize,
    /// How often the worker looks for due deliveries when nothing wakes it.
    pub poll_ms: u64,
    /// How often deliveries held by the quota are checked again.
    pub held_recheck_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub max_connections: u32,
    /// How long a request waits for a connection before it is answered 503
    /// `service_unavailable` (the database is away, or every connection is busy).
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Load from the layers and validate.
    pub fn load() -> anyhow::Result<Self> {
        let file = std::env::var_os("BRIDGE_CONFIG").map(PathBuf::from);
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        match &file {
            Some(path) if !path.exists() => bail!("BRIDGE_CONFIG names {}, which does not exist", path.display()),
            Some(path) => figment = figment.merge(Toml::file(path)),
            None => figment = figment.merge(Toml::file("bridge.toml")),
        }
        // DATABASE_URL is the convention most tools share; BRIDGE_DATABASE_URL wins over it.
        figment = figment
            .merge(Env::raw().only(&["DATABASE_URL"]).map(|_| "database_url".into()))
            .merge(Env::prefixed("BRIDGE_").ignore(&["CONFIG", "LOG"]).split("__"));
        let config: Config = figment.extract().map_err(|e| anyhow::anyhow!(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// The embedded defaults alone, ignoring files and the environment (tests start from these).
    /// The engine of a line created without one (validated at start).
    pub fn default_engine(&self) -> domain::line::EngineKind {
        domain::line::EngineKind::parse(&self.default_engine).unwrap_or(domain::line::EngineKind::Whatsapp)
    }

    /// What this node does (validated at start).
    pub fn roles(&self) -> Roles {
        Roles::parse(&self.roles).unwrap_or(Roles::ALL)
    }

    pub fn defaults() -> Self {
        Figment::from(Toml::string(DEFAULTS)).extract().expect("embedded defaults are valid")
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.max_body_bytes < 1024 {
            bail!("max_body_bytes must be at least 1024 (got {})", self.max_body_bytes);
        }
        if domain::line::EngineKind::parse(&self.default_engine).is_none() {
            bail!("default_engine must be `whatsapp` or `sim` (got `{}`)", self.default_engine);
        }
        if self.whatsapp_reconnect_min_ms == 0 || self.whatsapp_reconnect_max_ms < self.whatsapp_reconnect_min_ms {
            bail!("whatsapp_reconnect_min_ms must be positive and at most whatsapp_reconnect_max_ms");
        }
        if self.group_commit && !(1..=64).contains(&self.group_commit_shards) {
            bail!("group_commit_shards must be 1 to 64 while group_commit is on (got {})", self.group_commit_shards);
        }
        if self.audit_digest_interval_secs == 0 {
            bail!("audit_digest_interval_secs must be positive");
        }
        if self.operator_token.as_ref().is_some_and(|t| t.expose().len() < 32) {
            bail!("BRIDGE_OPERATOR_TOKEN must be at least 32 characters");
        }
        Roles::parse(&self.roles)?;
        if self.ready_max_projection_lag_secs == 0 {
            bail!("ready_max_projection_lag_secs must be positive");
        }
        if self.line_lease_secs < 2 {
            bail!("line_lease_secs must be at least 2");
        }
        let w = &self.webhooks;
        if w.timeout_ms == 0 || w.concurrency == 0 || w.window == 0 || w.poll_ms == 0 || w.held_recheck_ms == 0 {
            bail!("webhooks.timeout_ms, concurrency, window, poll_ms and held_recheck_ms must be positive");
        }
        if !(0.0..1.0).contains(&w.retry_jitter) {
            bail!("webhooks.retry_jitter must be at least 0 and below 1 (got {})", w.retry_jitter);
        }
        let h = &self.http;
        if h.header_read_timeout_ms == 0 || h.max_connections == 0 {
            bail!("http.header_read_timeout_ms and http.max_connections must be positive");
        }
        // The webhook test waits for the receiver; it must not be cut before the receiver's time is up.
        if h.request_timeout_ms <= w.timeout_ms {
            bail!(
                "http.request_timeout_ms ({}) must be longer than webhooks.timeout_ms ({})",
                h.request_timeout_ms,
                w.timeout_ms
            );
        }
        let r = &self.rate_limits;
        for (name, limit) in [("api_key", r.api_key), ("webhook_test", r.webhook_test), ("sandbox_inbound", r.sandbox_inbound)] {
            limit.validate(&format!("rate_limits.{name}"))?;
        }
        let c = &self.console;
        if !(c.session_idle_minutes.is_finite() && c.session_idle_minutes > 0.0) || c.session_lifetime_hours == 0 {
            bail!("console.session_idle_minutes and console.session_lifetime_hours must be positive");
        }
        c.sign_in_per_email.validate("console.sign_in_per_email")?;
        c.sign_in_per_address.validate("console.sign_in_per_address")?;
        if let Some(base) = &c.base_url {
            if !(base.starts_with("http://") || base.starts_with("https://")) || url::Url::parse(base).is_err() {
                bail!("console.base_url must be an http:// or https:// URL (got {base})");
            }
        }
        if self.database.acquire_timeout_ms == 0 {
            bail!("database.acquire_timeout_ms must be positive");
        }
        if self.database.max_connections < 2 {
            bail!("database.max_connections must be at least 2");
        }
        for required in ["free", "starter", "pro", "business"] {
            if !self.plans.contains_key(required) {
                bail!("plans.{required} is missing: the plans free, starter, pro and business must be configured");
            }
        }
        self.plan_catalog().map(|_| ())
    }

    pub fn plan_catalog(&self) -> anyhow::Result<PlanCatalog> {
        let mut plans = BTreeMap::new();
        for (name, limits) in &self.plans {
            let name = PlanName::parse(name).with_context(|| format!("in [plans.{name}]"))?;
            plans.insert(name, *limits);
        }
        Ok(PlanCatalog::new(plans))
    }
}

/// What a node does. Any number of nodes with any roles share one database; each role's work is
/// safe to run on several nodes at once (leases, advisory locks, `SKIP LOCKED` claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The REST API, the MCP endpoint, the console and the operator API.
    pub api: bool,
    /// Sending: the per-line paced dispatcher and the WhatsApp sessions.
    pub dispatch: bool,
    /// Webhook deliveries, and the projector that makes them.
    pub webhooks: bool,
    /// The messages and chats read models, the audit digest and the maintenance sweeps.
    pub projections: bool,
}

impl Roles {
    pub const ALL: Roles = Roles { api: true, dispatch: true, webhooks: true, projections: true };
    pub const NAMES: [&'static str; 4] = ["api", "dispatch", "webhooks", "projections"];

    /// Roles from their names; at least one, each known.
    pub fn parse(names: &[String]) -> anyhow::Result<Self> {
        let mut roles = Roles { api: false, dispatch: false, webhooks: false, projections: false };
        for name in names {
            match name.trim() {
                "api" => roles.api = true,
                "dispatch" => roles.dispatch = true,
                "webhooks" => roles.webhooks = true,
                "projections" => roles.projections = true,
                other => bail!("unknown role `{other}` in roles: each must be one of api, dispatch, webhooks, projections"),
            }
        }
        if roles.names().is_empty() {
            bail!("roles must name at least one of api, dispatch, webhooks, projections");
        }
        Ok(roles)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let on = [self.api, self.dispatch, self.webhooks, self.projections];
        Self::NAMES.iter().zip(on).filter(|(_, on)| *on).map(|(name, _)| *name).collect()
    }
}

/// Figment's errors name the key and the layer; keep that and add what was expected.
fn describe(error: figment::Error) -> String {
    let mut out = String::from("invalid configuration:");
    for e in error {
        let key = if e.path.is_empty() { "(top level)".to_owned() } else { e.path.join(".") };
        let source = e.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_else(|| "unknown source".into());
        out.push_str(&format!("\n  - {key}: {} (from {source})", e.kind));
    }
    out
}

fn list_or_comma_separated<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Hosts {
        List(Vec<String>),
        Text(String),
    }
    let hosts = match Hosts::deserialize(deserializer)? {
        Hosts::List(list) => list,
        Hosts::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    Ok(hosts.into_iter().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_hosts_take_a_list_or_a_comma_separated_string() {
        let with = |value: figment::value::Value| -> Config {
            Figment::from(Toml::string(DEFAULTS)).merge(("public_hosts", value)).extract().unwrap()
        };
        let from_env = with("bridge.example.com, api.example.com:8443".into());
        assert_eq!(from_env.public_hosts, ["bridge.example.com", "api.example.com:8443"]);
        assert_eq!(Config::defaults().public_hosts, ["localhost", "127.0.0.1"]);
    }

    #[test]
    fn limits_are_validated() {
        let error = |change: fn(&mut Config)| {
            let mut config = Config::defaults();
            change(&mut config);
            config.validate().err().map(|e| e.to_string())
        };
        assert_eq!(error(|_| {}), None, "the defaults are valid");
        let cut = error(|c| c.http.request_timeout_ms = c.webhooks.timeout_ms).unwrap();
        assert!(cut.contains("http.request_timeout_ms"), "{cut}");
        assert!(error(|c| c.http.max_connections = 0).unwrap().contains("max_connections"));
        assert!(error(|c| c.rate_limits.webhook_test.per_second = 0.0).unwrap().contains("rate_limits.webhook_test"));
        assert!(error(|c| c.rate_limits.api_key.burst = 0).unwrap().contains("rate_limits.api_key"));
        assert_eq!(error(|c| c.rate_limits.sandbox_inbound.per_second = 0.5), None, "fractions are rates too");
    }
}
