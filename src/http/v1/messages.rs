//! Sending messages: text, media, replies and reactions, and marking a chat read. Each handler
//! turns its body into the request the service layer takes (see [`crate::commands::sending`]) and
//! answers the typed result.

use crate::api::error::ApiError;
use crate::api::idempotency;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::commands::chats::{self as chat_commands, ReadRequest};
use crate::commands::sending::{self, ReactRequest, ReplyRequest, SendMediaRequest, SendRequest, Sent};
use crate::http::extract::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

pub use crate::commands::chats::ReadResponse;
pub use crate::commands::messages::SendResponse;

/// A send's answer; a replay says so in `Idempotent-Replayed`.
fn sent(sent: Sent) -> Response {
    let mut response = axum::Json(sent.response).into_response();
    if sent.replayed {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// Send text.
#[utoipa::path(post, path = "/v1/messages/send", tag = "messages", operation_id = "sendMessage", request_body = SendRequest,
    responses((status = 200, description = "Queued: the line's dispatcher sends it, spaced from the line's other sends", body = SendResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn send(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    Json(body): Json<SendRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency::key(&headers)?;
    sending::send_text(&state, &tenant, body, key).await.map(sent)
}

/// Send image, video, audio or document.
#[utoipa::path(post, path = "/v1/messages/send-media", tag = "messages", operation_id = "sendMedia", request_body = SendMediaRequest,
    responses((status = 200, description = "Queued; the file is downloaded when it is sent", body = SendResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn send_media(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    Json(body): Json<SendMediaRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency::key(&headers)?;
    sending::send_media(&state, &tenant, body, key).await.map(sent)
}

/// Respond by quoting.
#[utoipa::path(post, path = "/v1/messages/reply", tag = "messages", operation_id = "replyMessage", request_body = ReplyRequest,
    responses((status = 200, description = "Queued", body = SendResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn reply(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    Json(body): Json<ReplyRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency::key(&headers)?;
    sending::reply(&state, &tenant, body, key).await.map(sent)
}

/// React with emoji.
#[utoipa::path(post, path = "/v1/messages/react", tag = "messages", operation_id = "reactMessage", request_body = ReactRequest,
    responses((status = 200, description = "Queued", body = SendResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn react(State(state): State<AppState>, tenant: Tenant, Json(body): Json<ReactRequest>) -> Result<Response, ApiError> {
    sending::react(&state, &tenant, body).await.map(sent)
}

/// Mark as read.
#[utoipa::path(post, path = "/v1/messages/read", tag = "messages", operation_id = "markRead", request_body = ReadRequest,
    responses((status = 200, description = "The messages marked read", body = ReadResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn read(
    State(state): State<AppState>,
    tenant: Tenant,
    Json(body): Json<ReadRequest>,
) -> Result<axum::Json<ReadResponse>, ApiError> {
    chat_commands::mark_read(&state, &tenant, body).await.map(axum::Json)
}
