//! What load balancers and monitoring ask of a node: `/healthz` (the process lives), `/readyz`
//! (it can do its work now) and `/metrics` (Prometheus). Every node serves them, whatever its
//! roles; `/metrics` is either on a listener of its own (`metrics_listen`) or behind the operator
//! token.

use crate::cluster::Membership;
use crate::config::{Roles, Secret};
use crate::metrics;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;

/// How long `/readyz` and a scrape wait for the database before counting it as unreachable.
const DATABASE_WAIT: Duration = Duration::from_secs(2);

pub struct Probe {
    pub pool: PgPool,
    pub node: String,
    pub roles: Roles,
    pub membership: Membership,
    /// The asynchronous projections whose lag `/metrics` reports.
    pub projections: Vec<String>,
    /// Those this node runs, whose lag `/readyz` checks.
    pub runs: Vec<String>,
    pub max_projection_lag: Duration,
    pub metrics: MetricsAccess,
}

/// Who may read `/metrics`.
#[derive(Clone)]
pub enum MetricsAccess {
    /// Anyone who reaches the listener (the metrics listener, meant for a private network).
    Open,
    /// Whoever presents the operator token (the main listener; `None`: no token, so nobody).
    OperatorToken(Option<Secret>),
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn router(probe: Arc<Probe>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(scrape)).with_state(probe)
}

async fn healthz(State(probe): State<Arc<Probe>>) -> Json<Value> {
    Json(json!({"status": "ok", "node": probe.node}))
}

/// Ready when the database answers, its migrations are this binary's, this node's heartbeat is
/// fresh (else other nodes may be taking its lines), and the projections it runs are not too far
/// behind (another node running them would have them, so only this node's are checked). 503
/// otherwise, saying which check failed.
async fn readyz(State(probe): State<Arc<Probe>>) -> Response {
    let mut checks = Map::new();
    let mut ready = true;
    let mut fail = |checks: &mut Map<String, Value>, name: &str, why: String| {
        ready = false;
        checks.insert(name.into(), why.into());
    };
    let expected = crate::db::MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let read = tokio::time::timeout(DATABASE_WAIT, readiness(&probe.pool, &probe.runs)).await;
    match read {
        Ok(Ok((migrated, lags))) => {
            checks.insert("database".into(), "ok".into());
            if migrated.unwrap_or(0) == expected {
                checks.insert("migrations".into(), "ok".into());
            } else {
                fail(&mut checks, "migrations", format!("the database is at {migrated:?}, this binary expects {expected}"));
            }
            if !probe.runs.is_empty() {
                let behind: Vec<String> = lags
                    .iter()
                    .filter(|(_, secs)| *secs > probe.max_projection_lag.as_secs_f64())
                    .map(|(name, secs)| format!("{name} is {secs:.0} s behind"))
                    .collect();
                if behind.is_empty() {
                    checks.insert("projections".into(), "ok".into());
                } else {
                    fail(&mut checks, "projections", behind.join("; "));
                }
            }
        }
        Ok(Err(e)) => fail(&mut checks, "database", format!("unreachable: {e}")),
        Err(_) => fail(&mut checks, "database", format!("no answer within {} s", DATABASE_WAIT.as_secs())),
    }
    if probe.membership.fresh() {
        checks.insert("heartbeat".into(), "ok".into());
    } else {
        fail(&mut checks, "heartbeat", "this node's heartbeat could not be written for a lease TTL".into());
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({"status": if ready { "ready" } else { "not_ready" }, "node": probe.node, "checks": checks});
    (status, Json(body)).into_response()
}

/// The migration the database is at, and each projection's lag in seconds (one round trip).
async fn readiness(pool: &PgPool, projections: &[String]) -> Result<(Option<i64>, Vec<(String, f64)>), sqlx::Error> {
    let row: (Option<i64>, Value) = sqlx::query_as(&format!(
        "SELECT (SELECT max(version) FROM _sqlx_migrations WHERE success), \
                COALESCE((SELECT json_agg(json_build_array(c.name, {LAG_SECONDS})) FROM {CHECKPOINTS}), '[]')"
    ))
    .bind(projections)
    .fetch_one(pool)
    .await?;
    let lags = serde_json::from_value::<Vec<(String, f64)>>(row.1).unwrap_or_default();
    Ok((row.0, lags))
}

/// Where each projection named in `$1` has got to, as `c (name, global_position)`: one that has
/// never run (no checkpoint yet) is at the start of the log.
const CHECKPOINTS: &str = "(SELECT n.name, COALESCE(p.global_position, 0) AS global_position FROM unnest($1::text[]) AS n(name) \
     LEFT JOIN projection_checkpoints p ON p.name = n.name) c";

/// How long the oldest event a projection (checkpoint `c`) has not applied has waited, in seconds.
const LAG_SECONDS: &str = "COALESCE(extract(epoch FROM now() - (SELECT e.recorded_at FROM events e \
     WHERE e.global_position > c.global_position ORDER BY e.global_position LIMIT 1))::float8, 0)";

async fn scrape(State(probe): State<Arc<Probe>>, headers: HeaderMap) -> Response {
    if let MetricsAccess::OperatorToken(token) = &probe.metrics {
        if let Err(e) = super::operator::check_token(token.as_ref(), &headers) {
            return e.into_response();
        }
    }
    let mut out = String::with_capacity(16 * 1024);
    metrics::global().render(&mut out);
    render_node(&probe, &mut out);
    let read = tokio::time::timeout(DATABASE_WAIT, render_database(&probe, &mut out)).await;
    metrics::header(&mut out, "bridge_database_up", "gauge", "1 when this node could read its figures from the database.");
    match read {
        Ok(Ok(())) => metrics::gauge(&mut out, "bridge_database_up", &[], 1.0),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: reading the database's figures failed");
            metrics::gauge(&mut out, "bridge_database_up", &[], 0.0);
        }
        Err(_) => metrics::gauge(&mut out, "bridge_database_up", &[], 0.0),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

fn render_node(probe: &Probe, out: &mut String) {
    metrics::header(out, "bridge_node_info", "gauge", "This node: its id, roles and version (always 1).");
    let roles = probe.roles.names().join(",");
    metrics::gauge(
        out,
        "bridge_node_info",
        &[("node", &probe.node), ("roles", &roles), ("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    metrics::header(out, "bridge_node_heartbeat_fresh", "gauge", "1 while this node's heartbeat is within the lease TTL.");
    metrics::gauge(out, "bridge_node_heartbeat_fresh", &[], if probe.membership.fresh() { 1.0 } else { 0.0 });
    metrics::header(out, "bridge_db_pool_connections", "gauge", "This node's database connections, by state.");
    let (size, idle) = (probe.pool.size() as f64, probe.pool.num_idle() as f64);
    metrics::gauge(out, "bridge_db_pool_connections", &[("state", "in_use")], size - idle);
    metrics::gauge(out, "bridge_db_pool_connections", &[("state", "idle")], idle);
    metrics::header(out, "bridge_db_pool_max_connections", "gauge", "The most connections this node's pool opens.");
    metrics::gauge(out, "bridge_db_pool_max_connections", &[], f64::from(probe.pool.options().get_max_connections()));
}

/// The figures read from the database: the same on every node (aggregate them with `max`).
async fn render_database(probe: &Probe, out: &mut String) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, String, String, f64)> = sqlx::query_as(&format!(
        "SELECT 'lag_events', c.name, '', ((SELECT COALESCE(max(global_position), 0) FROM events) - c.global_position)::float8 \
           FROM {CHECKPOINTS} \
         UNION ALL SELECT 'lag_seconds', c.name, '', {LAG_SECONDS} FROM {CHECKPOINTS} \
         UNION ALL SELECT 'lines', engine, status, count(*)::float8 FROM lines GROUP BY engine, status \
         UNION ALL SELECT 'queue', COALESCE(l.owner, ''), '', count(*)::float8 FROM dispatch_queue q \
                     LEFT JOIN line_leases l ON l.line_id = q.line_id AND l.expires_at > now() GROUP BY 2 \
         UNION ALL SELECT 'webhook_backlog', state, '', count(*)::float8 FROM webhook_deliveries \
                    WHERE state IN ('pending', 'held', 'in_flight') GROUP BY state"
    ))
    .bind(&probe.projections)
    .fetch_all(&probe.pool)
    .await?;
    let of = |kind: &'static str| rows.iter().filter(move |r| r.0 == kind);
    metrics::header(
        out,
        "bridge_projection_lag_events",
        "gauge",
        "Events appended that an asynchronous projection has not applied yet.",
    );
    for (_, name, _, v) in of("lag_events") {
        metrics::gauge(out, "bridge_projection_lag_events", &[("projection", name)], *v);
    }
    metrics::header(
        out,
        "bridge_projection_lag_seconds",
        "gauge",
        "How long the oldest event a projection has not applied has waited.",
    );
    for (_, name, _, v) in of("lag_seconds") {
        metrics::gauge(out, "bridge_projection_lag_seconds", &[("projection", name)], *v);
    }
    metrics::header(out, "bridge_lines", "gauge", "Lines, by engine and status.");
    for (_, engine, status, v) in of("lines") {
        metrics::gauge(out, "bridge_lines", &[("engine", engine), ("status", status)], *v);
    }
    metrics::header(
        out,
        "bridge_dispatch_queue_depth",
        "gauge",
        "Messages waiting to be sent, by the node holding their line (\"\": no node holds it now).",
    );
    let mut queued = false;
    for (_, node, _, v) in of("queue") {
        metrics::gauge(out, "bridge_dispatch_queue_depth", &[("node", node)], *v);
        queued = true;
    }
    if !queued {
        metrics::gauge(out, "bridge_dispatch_queue_depth", &[("node", "")], 0.0);
    }
    metrics::header(out, "bridge_webhook_backlog", "gauge", "Webhook deliveries not yet delivered or given up, by state.");
    for (_, state, _, v) in of("webhook_backlog") {
        metrics::gauge(out, "bridge_webhook_backlog", &[("state", state)], *v);
    }
    Ok(())
}
