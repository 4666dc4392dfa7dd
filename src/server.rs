//! Wiring: the HTTP server and the background tasks that go with it, under one shutdown token.
//! The REST, operator and MCP routers are composed here, under the layers every route shares.

use crate::api::error::{ApiError, ErrorCode};
use crate::api::{rate_limit, request_id};
use crate::app::AppState;
use crate::auth::Authenticator;
use crate::cluster::Membership;
use crate::config::Config;
use crate::dispatch::DispatchConfig;
use crate::engine::sim::SimNetwork;
use crate::engine::whatsapp::seam::WaConnector;
use crate::engine::whatsapp::sessions::{SessionStores, WhatsappConfig, WhatsappEngine};
use crate::engine::Engines;
use crate::http::health::{MetricsAccess, Probe};
use crate::store::EventStore;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use projections::notify::LogWatcher;
use projections::runtime::{Runner, RunnerConfig};
use projections::webhook_deliveries::{LaneHints, WebhookDeliveries};
use projections::Projection;
use sqlx::PgPool;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{Any, CorsLayer};

/// Every route: REST v1 (at both bases), the operator API and the MCP endpoint, with request ids,
/// CORS, a request timeout, malformed requests in our envelope, rate limits, a body size limit,
/// and JSON 404/405s.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let request_timeout = Duration::from_millis(state.config.http.request_timeout_ms);
    let rate_limits = rate_limit::RateLimits::new(&state.config.rate_limits);
    Router::new()
        .merge(crate::http::router())
        .nest("/operator/v1", crate::http::operator::router())
        .merge(crate::mcp::router(state.clone()))
        .nest("/console", crate::console::router(&state))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(max_body))
        .layer(Extension(rate_limits))
        .layer(axum::middleware::from_fn_with_state(state, crate::http::rejections::middleware))
        .layer(axum::middleware::from_fn_with_state(request_timeout, timeout))
        .layer(cors())
        .layer(axum::middleware::from_fn(request_id::middleware))
}

/// Answer `server_error` when the handler has not answered in time (it is dropped there).
async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    tokio::time::timeout(limit, next.run(request)).await.unwrap_or_else(|_| ApiError::timeout(limit).into_response())
}

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-bridge-key"),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static(request_id::HEADER),
            // What MCP clients in a browser send.
            HeaderName::from_static("mcp-session-id"),
            HeaderName::from_static("mcp-protocol-version"),
            header::ACCEPT,
            HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            HeaderName::from_static(request_id::HEADER),
            HeaderName::from_static("idempotent-replayed"),
            HeaderName::from_static("mcp-session-id"),
        ])
        .max_age(Duration::from_secs(86400))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("No route for {method} {}.", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, format!("{method} is not allowed on {}.", uri.path()))
}

/// The asynchronous projections this server keeps up to date.
pub fn async_projections() -> Vec<Arc<dyn Projection>> {
    async_projections_telling(None)
}

/// [`async_projections`], with the webhook projector telling `lanes` which lanes got deliveries.
fn async_projections_telling(lanes: Option<LaneHints>) -> Vec<Arc<dyn Projection>> {
    let webhook_deliveries = match lanes {
        Some(lanes) => WebhookDeliveries::with_lane_hints(lanes),
        None => WebhookDeliveries::default(),
    };
    vec![
        Arc::new(projections::conversations::Messages),
        Arc::new(projections::conversations::Chats),
        Arc::new(webhook_deliveries),
    ]
}

pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where `/metrics` is served on its own (`metrics_listen`), if it is.
    pub metrics_addr: Option<SocketAddr>,
    pub state: AppState,
    pub watcher: LogWatcher,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    membership: Membership,
    /// Held until every task has stopped, so no process can take this node's id (and with it the
    /// leases and claims still being finished) while it drains.
    node: crate::node::NodeIdentity,
}

impl RunningServer {
    /// Drain: stop accepting requests and taking work, let in-flight work finish, hand back
    /// the lines, and stop.
    pub async fn shutdown(self) {
        self.stopper().stop().await;
        self.wait().await
    }

    /// Wait until the server is stopped elsewhere (a [`Stopper`], a signal) and everything has
    /// stopped; then the node leaves the cluster.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
        self.membership.leave().await;
        drop(self.node);
    }

    /// The id this node claimed (see [`crate::node`]).
    pub fn node_id(&self) -> &str {
        self.node.id()
    }

    pub fn stopper(&self) -> Stopper {
        Stopper { membership: self.membership.clone(), shutdown: self.shutdown.clone() }
    }
}

/// Begins a server's drain from anywhere (a signal handler).
#[derive(Clone)]
pub struct Stopper {
    membership: Membership,
    shutdown: CancellationToken,
}

impl Stopper {
    /// Tell the other nodes this one is leaving (so they take its lines as it hands them back),
    /// then stop everything.
    pub async fn stop(&self) {
        if !self.shutdown.is_cancelled() {
            // Bounded: a node cut off from the database still stops.
            let _ = tokio::time::timeout(Duration::from_secs(2), self.membership.drain()).await;
        }
        self.shutdown.cancel();
    }
}

/// A server listening beyond loopback is meant to be reached by name; if `public_hosts` lists
/// only local names, the MCP endpoint will refuse every such client. Say so at start.
fn warn_if_unreachable_by_name(addr: SocketAddr, public_hosts: &[String]) {
    let local = |host: &str| {
        let name = host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
        let name = name.trim_matches(|c| c == '[' || c == ']');
        name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    };
    if !addr.ip().is_loopback() && public_hosts.iter().all(|h| local(h)) {
        tracing::warn!(
            %addr,
            public_hosts = %public_hosts.join(","),
            "listening beyond loopback, but public_hosts names only local hosts: the MCP endpoint will refuse clients \
             that reach this server by any other name; list those names in public_hosts (BRIDGE_PUBLIC_HOSTS)"
        );
    }
}

/// What a server is started with beyond its configuration: the seams to the outside world that
/// tests replace.
#[derive(Default)]
pub struct StartOptions {
    /// How `whatsapp` lines reach WhatsApp (`None`: the live client).
    pub whatsapp: Option<Arc<dyn WaConnector>>,
    /// Where `whatsapp` sessions keep their state (`None`: PostgreSQL).
    pub session_stores: Option<Arc<dyn SessionStores>>,
}

/// Start serving on `listener` with background tasks; returns once the server accepts requests.
pub async fn start(config: Config, pool: PgPool, listener: TcpListener) -> anyhow::Result<RunningServer> {
    start_with(config, pool, listener, StartOptions::default()).await
}

/// [`start`], with the seams of `options`. What runs follows the node's roles: `api` serves the
/// REST, MCP, console and operator routes (a node without it serves only `/healthz`, `/readyz`
/// and `/metrics`); `dispatch` sends and runs WhatsApp sessions; `webhooks` makes and delivers
/// webhook deliveries; `projections` keeps the read models, signs digests and sweeps.
pub async fn start_with(
    config: Config,
    pool: PgPool,
    listener: TcpListener,
    options: StartOptions,
) -> anyhow::Result<RunningServer> {
    let shutdown = CancellationToken::new();
    let roles = config.roles();
    let plans = Arc::new(config.plan_catalog()?);
    let lease_ttl = Duration::from_secs(config.line_lease_secs);
    // Before anything that takes leases or claims: no live twin may share this node's id, and
    // every node must share one master key.
    let node = crate::node::NodeIdentity::claim(&pool, crate::node::resolve_id(&config.node_id), shutdown.clone()).await?;
    let master_key = Arc::new(crate::secrets::MasterKey::load_checked(&config, &pool).await?);
    let membership = Membership::join(pool.clone(), node.id(), roles, lease_ttl, shutdown.clone()).await?;
    tracing::info!(node = node.id(), roles = %roles.names().join(","), "node id claimed");
    let (announcer, announcing) = crate::store::Announcer::start(pool.clone(), Some(node.id().to_owned()), shutdown.clone());
    let watcher = LogWatcher::default();
    let store = EventStore::new(pool.clone(), EventStore::inline_projections())
        .with_announcer(announcer)
        .with_local_wakeups(watcher.clone());
    let auth = Arc::new(Authenticator::new(pool.clone(), Duration::from_millis(config.unknown_key_cache_ms)));
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        let _ = announcing.await;
    });
    tasks.spawn(watcher.clone().run(pool.clone(), shutdown.clone()));
    if roles.api {
        tasks.spawn(auth.clone().follow(watcher.changes(), shutdown.clone()));
    }
    if roles.projections {
        tasks.spawn(crate::maintenance::run(pool.clone(), Duration::from_secs(600), shutdown.clone()));
        tasks.spawn(crate::audit::digest::run(
            pool.clone(),
            *master_key.audit_key(),
            Duration::from_secs(config.audit_digest_interval_secs),
            shutdown.clone(),
        ));
    }

    let deliverer = crate::webhook_delivery::Deliverer::new(
        store.clone(),
        plans.clone(),
        master_key.clone(),
        crate::webhook_delivery::DeliveryConfig::from_config(&config, node.id()),
    );
    // The webhook projector runs where deliveries are sent (it tells the local worker which lanes
    // got deliveries); the read models where the projections are.
    let (mut projection_names, mut runs) = (Vec::new(), Vec::new());
    for projection in async_projections_telling(Some(deliverer.lane_hints())) {
        projection_names.push(projection.name().to_owned());
        let is_webhooks = projection.name() == WebhookDeliveries::default().name();
        let runs_here = if is_webhooks { roles.webhooks } else { roles.projections };
        if !runs_here {
            continue;
        }
        runs.push(projection.name().to_owned());
        let runner = Runner::new(pool.clone(), projection.clone(), watcher.wakeups(), RunnerConfig::default());
        if is_webhooks {
            tasks.spawn(deliverer.clone().run(runner.progress(), watcher.changes(), shutdown.clone()));
        }
        tasks.spawn(runner.run(shutdown.clone()));
    }

    let sim = Arc::new(SimNetwork::new(
        store.clone(),
        Duration::from_millis(config.sim_delivered_after_ms),
        Duration::from_millis(config.sim_read_after_ms),
        shutdown.clone(),
    ));
    let (whatsapp, whatsapp_supervisor) = WhatsappEngine::start(
        store.clone(),
        match options.whatsapp {
            Some(connector) => connector,
            None => crate::engine::whatsapp::live_connector()?,
        },
        options.session_stores.unwrap_or_else(|| crate::engine::whatsapp::session_stores(pool.clone(), master_key.clone())),
        WhatsappConfig {
            node: node.id().to_owned(),
            lease_ttl,
            scan_interval: Duration::from_secs(2),
            min_backoff: Duration::from_millis(config.whatsapp_reconnect_min_ms),
            max_backoff: Duration::from_millis(config.whatsapp_reconnect_max_ms),
            sessions: roles.dispatch,
        },
        shutdown.clone(),
    );
    tasks.spawn(async move {
        let _ = whatsapp_supervisor.await;
    });
    let engine: Arc<dyn crate::engine::SessionEngine> = Arc::new(Engines { sim, whatsapp: whatsapp.clone() });
    let dispatcher = if roles.dispatch {
        let dispatch_config = DispatchConfig {
            interval: Duration::from_millis(config.line_send_interval_ms),
            jitter: Duration::from_millis(config.line_send_jitter_ms),
            lease_ttl,
            node: node.id().to_owned(),
            send_timeout: Duration::from_millis(config.send_timeout_ms),
            // Often enough that a dead node's lines are found soon after its lease runs out.
            scan_interval: (lease_ttl / 5).min(Duration::from_secs(2)),
            idle_timeout: Duration::from_secs(60),
            media: crate::media::MediaFetcher::new(
                config.media_max_bytes,
                Duration::from_millis(config.media_timeout_ms),
                config.allow_private_urls,
            ),
        };
        let (dispatcher, supervisor) =
            crate::dispatch::start(store.clone(), engine.clone(), dispatch_config, Some(watcher.changes()), shutdown.clone());
        whatsapp.set_dispatcher(dispatcher.clone());
        tasks.spawn(async move {
            let _ = supervisor.await;
        });
        dispatcher
    } else {
        crate::dispatch::Dispatcher::disabled()
    };

    let shards = if config.group_commit && roles.api { config.group_commit_shards } else { 0 };
    let sends = crate::commands::group_commit::SendBatcher::start(store.clone(), plans.clone(), shards);
    let metrics_listen = config.metrics_listen;
    let probe = |metrics| {
        Arc::new(Probe {
            pool: pool.clone(),
            node: node.id().to_owned(),
            roles,
            membership: membership.clone(),
            projections: projection_names.clone(),
            runs: runs.clone(),
            max_projection_lag: Duration::from_secs(config.ready_max_projection_lag_secs),
            metrics,
        })
    };
    let main_probe = probe(MetricsAccess::OperatorToken(config.operator_token.clone()));
    let open_probe = probe(MetricsAccess::Open);
    let reads = match &config.read_database_url {
        Some(url) => Some(Arc::new(crate::read_replica::ReadReplica::new(
            url.expose(),
            config.database.max_connections,
            Duration::from_millis(config.read_replica_max_wait_ms),
        )?)),
        None => None,
    };
    let state = AppState {
        config: Arc::new(config),
        plans,
        pool: pool.clone(),
        store,
        auth,
        dispatcher,
        engine,
        master_key,
        deliverer,
        sends,
        reads,
    };
    let app = if roles.api {
        router(state.clone()).merge(crate::http::health::router(main_probe))
    } else {
        crate::http::health::router(main_probe)
    };
    let addr = listener.local_addr()?;
    let http = state.config.http.clone();
    let metrics_addr = match metrics_listen {
        Some(at) => {
            let metrics_listener = TcpListener::bind(at)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {at} for metrics (BRIDGE_METRICS_LISTEN): {e}"))?;
            let metrics_addr = metrics_listener.local_addr()?;
            let (token, http) = (shutdown.clone(), http.clone());
            tasks.spawn(async move {
                crate::http::serve::serve(metrics_listener, crate::http::health::router(open_probe), &http, token).await;
            });
            tracing::info!(metrics_at = %metrics_addr, "metrics served at /metrics");
            Some(metrics_addr)
        }
        None => None,
    };
    let token = shutdown.clone();
    tasks.spawn(async move {
        crate::http::serve::serve(listener, app, &http, token.clone()).await;
        // Whatever stopped the server stops everything else too.
        token.cancel();
    });

    warn_if_unreachable_by_name(addr, &state.config.public_hosts);
    tracing::info!(%addr, "WAzion Bridge is listening");
    Ok(RunningServer { addr, metrics_addr, state, watcher, shutdown, tasks, membership, node })
}
