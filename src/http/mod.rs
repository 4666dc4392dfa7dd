//! The HTTP surface: REST v1 under `/api/bridge/v1` and `/v1`, with request ids, CORS, a body
//! size limit, a request timeout, rate limits, malformed requests and JSON 404/405s in our
//! envelope, and the OpenAPI document. [`serve`] runs the connections.

pub mod error;
pub mod extract;
pub mod idempotency;
pub mod nul;
pub mod openapi;
pub mod operator;
pub mod rate_limit;
pub mod rejections;
pub mod request_id;
pub mod schemas;
pub mod serve;
pub mod v1;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::store::EventStore;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderName, Method, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use domain::plan::PlanCatalog;
use error::ApiError;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tower_http::cors::{Any, CorsLayer};

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub plans: Arc<PlanCatalog>,
    pub pool: PgPool,
    pub store: EventStore,
    pub auth: Arc<Authenticator>,
    pub dispatcher: crate::dispatch::Dispatcher,
    pub engine: Arc<dyn crate::engine::SessionEngine>,
    pub master_key: Arc<crate::secrets::MasterKey>,
    pub deliverer: crate::webhook_delivery::Deliverer,
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let request_timeout = Duration::from_millis(state.config.http.request_timeout_ms);
    let rate_limits = rate_limit::RateLimits::new(&state.config.rate_limits);
    let api = v1::router();
    Router::new()
        .nest("/api/bridge/v1", api.clone())
        .nest("/v1", api)
        .nest("/operator/v1", operator::router())
        .merge(crate::mcp::router(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(max_body))
        .layer(Extension(rate_limits))
        .layer(axum::middleware::from_fn_with_state(state, rejections::middleware))
        .layer(axum::middleware::from_fn_with_state(request_timeout, timeout))
        .layer(cors())
        .layer(axum::middleware::from_fn(request_id::middleware))
}

/// Answer `server_error` when the handler has not answered in time (it is dropped there).
async fn timeout(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    tokio::time::timeout(limit, next.run(request)).await.unwrap_or_else(|_| ApiError::Timeout(limit).into_response())
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
    ApiError::not_found("not_found", format!("No route for {method} {}.", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::flat(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}.", uri.path()),
    )
}
