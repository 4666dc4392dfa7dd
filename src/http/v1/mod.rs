//! REST v1, mounted at both `/api/bridge/v1` and `/v1`.

pub mod me;
pub mod usage;

use super::AppState;
use axum::routing::get;
use axum::Router;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/me", get(me::me))
        .route("/usage", get(usage::usage))
        .route("/openapi.json", get(super::openapi::document))
}
