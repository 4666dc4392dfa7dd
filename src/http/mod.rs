//! The REST surface: v1 under `/api/bridge/v1` and `/v1`, the operator API, malformed requests in
//! our envelope, and the OpenAPI document. [`crate::server`] composes it with the MCP endpoint and
//! the global layers; [`serve`] runs the connections.

pub mod extract;
pub mod health;
pub mod openapi;
pub mod operator;
pub mod rejections;
pub mod serve;
pub mod v1;

/// Where the v1 handlers (`super::AppState`) find the state.
use crate::app::AppState;
use axum::Router;

/// REST v1, mounted at both of its published bases.
pub fn router() -> Router<AppState> {
    let api = v1::router();
    Router::new().nest("/api/bridge/v1", api.clone()).nest("/v1", api)
}
