//! The MCP server for agents, at `/api/bridge/mcp` (and `/mcp`): Model Context Protocol over
//! Streamable HTTP with the official SDK (`rmcp`), stateless so any node answers any request.
//!
//! The caller is authenticated before any MCP exchange, with the same keys and headers as REST
//! (a missing or bad key is HTTP 401 in the standard envelope). Each tool calls the service
//! function of its twin endpoint (see [`tools`]), so validation, quotas, events, limits, results
//! and errors are the REST ones; a business error comes back as a tool result with
//! `isError: true` whose content is the REST error body.

pub mod tools;

use crate::api::error::{ApiError, ErrorCode};
use crate::api::tenant::Tenant;
use crate::app::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::sync::Arc;

/// The MCP endpoint, mounted at both paths, behind key authentication.
pub fn router(state: AppState) -> Router<AppState> {
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(state.config.public_hosts.clone())
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(state.config.max_body_bytes);
    let (server_state, tools) = (state.clone(), tools::tools());
    let service = StreamableHttpService::new(
        move || Ok(tools::Bridge::new(server_state.clone(), tools.clone())),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    Router::new()
        .nest_service("/api/bridge/mcp", service.clone())
        .nest_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(state, authenticate))
}

/// Let only callers with a valid key and an active subscription reach the MCP service; the
/// tools find the tenant in the request's extensions.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match Tenant::from_request_parts(&mut parts, &state).await {
        Ok(tenant) => {
            parts.extensions.insert(tenant);
            let response = next.run(Request::from_parts(parts, body)).await;
            if response.status() == StatusCode::FORBIDDEN {
                return explain_refusal(response).await;
            }
            response
        }
        Err(rejection) => rejection.into_response(),
    }
}

/// The SDK refuses a request whose `Host` (or `Origin`) it does not allow with a plain-text 403
/// (its guard against DNS rebinding). Say the same in our envelope, naming the setting to change.
async fn explain_refusal(response: Response) -> Response {
    let bytes = axum::body::to_bytes(response.into_body(), 4096).await.unwrap_or_default();
    let reason = String::from_utf8_lossy(&bytes);
    let refused = if reason.contains("Host") {
        ApiError::from(ErrorCode::HostNotAllowed)
    } else {
        let reason = reason.trim_start_matches("Forbidden: ");
        ApiError::new(ErrorCode::Forbidden, format!("The MCP endpoint refused the request: {reason}."))
    };
    refused.into_response()
}
