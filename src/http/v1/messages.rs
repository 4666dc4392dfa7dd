//! Sending messages: text, media, replies and reactions, and marking a chat read. Each handler
//! turns its body into the request the service layer takes (see [`crate::commands::sending`]) and
//! answers the typed result.

use crate::api::error::ApiError;
use crate::api::idempotency;
use crate::api::schemas;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::commands::chats::{self as chat_commands, ChatToRead};
use crate::commands::sending::{self, MediaMessage, Reaction, Reply, Sent, TextMessage};
use crate::http::extract::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use crate::commands::chats::ReadResponse;
pub use crate::commands::messages::SendResponse;

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"line_id": "line_xxx", "to": "+34600000000", "message": "Pedido confirmado"}))]
pub struct SendRequest {
    /// Connected line from which it is sent.
    #[schema(required = true, nullable = false, value_type = String)]
    pub line_id: Option<String>,
    /// Destination phone in international format, e.g. +34600000000.
    #[schema(required = true, nullable = false, value_type = schemas::Phone)]
    pub to: Option<String>,
    /// Message text (at most 4096 characters).
    #[schema(required = true, nullable = false, value_type = schemas::MessageText)]
    pub message: Option<String>,
    /// `never` (default), `always` or `preserve_if_previously_archived`.
    #[schema(value_type = Option<schemas::ArchivePolicy>)]
    pub archive_policy: Option<String>,
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"line_id": "line_xxx", "to": "+34600000000", "media_url": "https://tu-cdn.com/foto.jpg", "media_type": "image", "caption": "Hello"}))]
pub struct SendMediaRequest {
    /// Connected line from which it is sent.
    #[schema(required = true, nullable = false, value_type = String)]
    pub line_id: Option<String>,
    /// Destination phone in international format, e.g. +34600000000.
    #[schema(required = true, nullable = false, value_type = schemas::Phone)]
    pub to: Option<String>,
    /// Public http(s) URL of the file; the server downloads it.
    #[schema(required = true, nullable = false, value_type = schemas::MediaUrl)]
    pub media_url: Option<String>,
    /// `image` (default), `video`, `audio` or `document`.
    #[schema(value_type = Option<schemas::MediaType>)]
    pub media_type: Option<String>,
    /// Text attached to the file (at most 4096 characters).
    #[schema(value_type = Option<schemas::Caption>)]
    pub caption: Option<String>,
}

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
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe for 24 hours: the same key with the same body returns the first answer (with `Idempotent-Replayed: true`); with another body, 409 idempotency_conflict. Printable ASCII, 1 to 255 characters.", min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$")),
    responses((status = 200, description = "Queued: the line's dispatcher sends it, spaced from the line's other sends", body = SendResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn send(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    Json(body): Json<SendRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency::key(&headers)?;
    let request = TextMessage { line_id: body.line_id, to: body.to, message: body.message, archive_policy: body.archive_policy };
    sending::send_text(&state, &tenant, request, key).await.map(sent)
}

/// Send image, video, audio or document.
#[utoipa::path(post, path = "/v1/messages/send-media", tag = "messages", operation_id = "sendMedia", request_body = SendMediaRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe for 24 hours: the same key with the same body returns the first answer (with `Idempotent-Replayed: true`); with another body, 409 idempotency_conflict. Printable ASCII, 1 to 255 characters.", min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$")),
    responses((status = 200, description = "Queued; the file is downloaded when it is sent", body = SendResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn send_media(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    Json(body): Json<SendMediaRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency::key(&headers)?;
    let SendMediaRequest { line_id, to, media_url, media_type, caption } = body;
    sending::send_media(&state, &tenant, MediaMessage { line_id, to, media_url, media_type, caption }, key).await.map(sent)
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"line_id": "line_xxx", "to": "+34600000000", "message": "Sí, mañana", "quoted_message_id": "msg_xxx"}))]
pub struct ReplyRequest {
    /// Connected line from which it is sent.
    #[schema(required = true, nullable = false, value_type = String)]
    pub line_id: Option<String>,
    /// The chat: destination phone in international format (or its jid).
    #[schema(required = true, nullable = false, value_type = schemas::Phone)]
    pub to: Option<String>,
    #[schema(required = true, nullable = false, value_type = schemas::MessageText)]
    pub message: Option<String>,
    /// The message quoted: our id (`msg_…`) or its WhatsApp id, from the same chat.
    #[schema(required = true, nullable = false, value_type = schemas::MessageRef)]
    pub quoted_message_id: Option<String>,
}

/// Respond by quoting.
#[utoipa::path(post, path = "/v1/messages/reply", tag = "messages", operation_id = "replyMessage", request_body = ReplyRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe for 24 hours: the same key with the same body returns the first answer (with `Idempotent-Replayed: true`); with another body, 409 idempotency_conflict. Printable ASCII, 1 to 255 characters.", min_length = 1, max_length = 255, pattern = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$")),
    responses((status = 200, description = "Queued", body = SendResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn reply(
    State(state): State<AppState>,
    tenant: Tenant,
    headers: HeaderMap,
    Json(body): Json<ReplyRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency::key(&headers)?;
    let ReplyRequest { line_id, to, message, quoted_message_id } = body;
    sending::reply(&state, &tenant, Reply { line_id, to, message, quoted_message_id }, key).await.map(sent)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"line_id": "line_xxx", "jid": "34600000000@s.whatsapp.net", "message_id": "msg_xxx", "emoji": "👍"}))]
pub struct ReactRequest {
    /// Connected line from which it is sent.
    #[schema(required = true, nullable = false, value_type = String)]
    pub line_id: Option<String>,
    /// The chat: a jid (`34600000000@s.whatsapp.net`) or a phone.
    #[schema(required = true, nullable = false, value_type = schemas::Phone)]
    pub jid: Option<String>,
    /// The message reacted to: our id or its WhatsApp id.
    #[schema(required = true, nullable = false, value_type = schemas::MessageRef)]
    pub message_id: Option<String>,
    /// One emoji; empty removes this line's reaction.
    #[schema(required = true, nullable = false, value_type = schemas::Emoji)]
    pub emoji: Option<String>,
}

/// React with emoji.
#[utoipa::path(post, path = "/v1/messages/react", tag = "messages", operation_id = "reactMessage", request_body = ReactRequest,
    responses((status = 200, description = "Queued", body = SendResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn react(State(state): State<AppState>, tenant: Tenant, Json(body): Json<ReactRequest>) -> Result<Response, ApiError> {
    let ReactRequest { line_id, jid, message_id, emoji } = body;
    sending::react(&state, &tenant, Reaction { line_id, jid, message_id, emoji }).await.map(sent)
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"line_id": "line_xxx", "phone": "+34600000000"}))]
pub struct ReadRequest {
    /// Connected line of the chat.
    #[schema(required = true, nullable = false, value_type = String)]
    pub line_id: Option<String>,
    /// The chat, as a phone… (one of `phone` and `jid` is required; `phone` wins when both are given)
    #[schema(value_type = Option<schemas::Phone>)]
    pub phone: Option<String>,
    /// …or as a jid.
    #[schema(value_type = Option<schemas::Phone>)]
    pub jid: Option<String>,
    /// Only these messages (our ids or WhatsApp ids, 1 to 500); all unread ones when absent.
    #[schema(value_type = Option<Vec<schemas::MessageRef>>, min_items = 1, max_items = 500)]
    pub message_ids: Option<Vec<String>>,
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
    let ReadRequest { line_id, phone, jid, message_ids } = body;
    chat_commands::mark_read(&state, &tenant, ChatToRead { line_id, phone, jid, message_ids }).await.map(axum::Json)
}
