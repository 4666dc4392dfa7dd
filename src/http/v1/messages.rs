//! Sending messages: text and media. Each request becomes one `send` command.

use crate::commands::messages::{self, Send, SendError, SendOutcome};
use crate::http::error::ApiError;
use crate::http::extract::{Json, Tenant};
use crate::http::schemas;
use crate::http::{idempotency, AppState};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use domain::ids::LineId;
use domain::message::{ArchivePolicy, Content, MediaType, MessageText};
use domain::phone::PhoneNumber;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

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

#[derive(Serialize, ToSchema)]
pub struct SendResponse {
    pub ok: bool,
    #[schema(example = "msg_01jdzq2m9a8x0v3k1s5t7w9y2b")]
    pub message_id: String,
    /// `queued`: the line's dispatcher sends it, spaced from the line's other sends.
    pub status: String,
    pub line_id: String,
    pub to: String,
}

pub fn required<'a>(field: &str, value: &'a Option<String>) -> Result<&'a str, ApiError> {
    value.as_deref().ok_or_else(|| ApiError::invalid_field(field, format!("`{field}` is required.")))
}

pub fn line_id(value: &Option<String>) -> Result<LineId, ApiError> {
    LineId::parse(required("line_id", value)?).map_err(|_| super::lines::line_not_found())
}

pub fn phone(field: &str, value: &Option<String>) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse_phone_or_jid(required(field, value)?).map_err(|e| ApiError::invalid_field(field, format!("{e}.")))
}

pub fn text(field: &str, value: &str) -> Result<MessageText, ApiError> {
    MessageText::parse(value).map_err(|e| ApiError::invalid_field(field, format!("`{field}` {e}.")))
}

fn archive_policy(value: &Option<String>) -> Result<ArchivePolicy, ApiError> {
    match value.as_deref() {
        None => Ok(ArchivePolicy::default()),
        Some(v) => ArchivePolicy::parse(v).ok_or_else(|| {
            ApiError::invalid_field(
                "archive_policy",
                "`archive_policy` must be one of never, always, preserve_if_previously_archived.",
            )
        }),
    }
}

/// http(s) URLs with a host, at most 2048 characters. Whether the host may be fetched is decided
/// when the file is downloaded.
pub fn media_url(value: &Option<String>) -> Result<String, ApiError> {
    let raw = required("media_url", value)?;
    let parsed = reqwest::Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some() && raw.len() <= 2048)
        .filter(|_| schemas::is_url(raw, false));
    parsed
        .map(|u| u.to_string())
        .ok_or_else(|| ApiError::invalid_field("media_url", "`media_url` must be a public http or https URL."))
}

pub fn send_error(e: SendError) -> ApiError {
    match e {
        SendError::Suspended => ApiError::SubscriptionRequired,
        SendError::LineNotFound => super::lines::line_not_found(),
        SendError::LineNotConnected => {
            ApiError::flat(StatusCode::CONFLICT, "line_not_connected", "The line is not connected to WhatsApp.")
        }
        SendError::QuotaExceeded { used, limit, plan } => {
            ApiError::flat(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", "Monthly quota exceeded")
                .with("metric", "sent_messages")
                .with("used", used)
                .with("limit", limit)
                .with("plan", plan)
        }
        SendError::IdempotencyConflict => ApiError::flat(
            StatusCode::CONFLICT,
            "idempotency_conflict",
            "This Idempotency-Key was already used with a different body.",
        ),
        other => ApiError::server(other),
    }
}

/// Run a validated send and shape the response (a replay says so in `Idempotent-Replayed`).
pub async fn run_send(state: &AppState, tenant: &Tenant, send: Send) -> Result<Response, ApiError> {
    match messages::send(&state.store, &state.plans, &tenant.metadata(), &tenant.identity.account_id, send)
        .await
        .map_err(send_error)?
    {
        SendOutcome::Accepted { status, body, line_id } => {
            state.dispatcher.wake(&line_id);
            Ok((StatusCode::from_u16(status).unwrap_or(StatusCode::OK), axum::Json(body)).into_response())
        }
        SendOutcome::Replayed { status, body } => {
            let mut response = (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), axum::Json(body)).into_response();
            response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(response)
        }
    }
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
    let idempotency = idempotency::for_request(&headers, "messages/send", &serde_json::to_value(&body).unwrap_or(Value::Null))?;
    let send = Send {
        line_id: line_id(&body.line_id)?,
        to: phone("to", &body.to)?,
        content: Content::Text { text: text("message", required("message", &body.message)?)? },
        quoted_message_id: None,
        archive_policy: archive_policy(&body.archive_policy)?,
        idempotency,
    };
    run_send(&state, &tenant, send).await
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
    let idempotency =
        idempotency::for_request(&headers, "messages/send-media", &serde_json::to_value(&body).unwrap_or(Value::Null))?;
    let media_type = match body.media_type.as_deref() {
        None => MediaType::Image,
        Some(t) => MediaType::parse(t)
            .ok_or_else(|| ApiError::invalid_field("media_type", "`media_type` must be one of image, video, audio, document."))?,
    };
    let caption = body.caption.as_deref().filter(|c| !c.is_empty()).map(|c| text("caption", c)).transpose()?;
    let send = Send {
        line_id: line_id(&body.line_id)?,
        to: phone("to", &body.to)?,
        content: Content::Media { media_url: media_url(&body.media_url)?, media_type, caption },
        quoted_message_id: None,
        archive_policy: ArchivePolicy::default(),
        idempotency,
    };
    run_send(&state, &tenant, send).await
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

/// A line of the caller that is connected, or the published error.
pub async fn connected_line(state: &AppState, tenant: &Tenant, raw: &Option<String>) -> Result<LineId, ApiError> {
    let line_id = line_id(raw)?;
    let line = super::lines::fetch_line(&state.pool, &tenant.identity.account_id, &line_id).await?;
    if line.status != "connected" {
        return Err(send_error(SendError::LineNotConnected));
    }
    Ok(line_id)
}

/// Find a message of the chat for quoting or reacting, after the caller's own writes are visible.
async fn chat_message(
    state: &AppState,
    tenant: &Tenant,
    line_id: &LineId,
    chat: &PhoneNumber,
    field: &str,
    id: &str,
) -> Result<crate::commands::chats::FoundMessage, ApiError> {
    crate::consistency::await_own_writes(
        &state.pool,
        &tenant.identity.account_id,
        &["messages"],
        std::time::Duration::from_secs(5),
    )
    .await?;
    crate::commands::chats::find_message(&state.pool, line_id, chat, id).await?.ok_or_else(|| {
        ApiError::invalid_field(field, format!("No message `{}` in this chat.", id.chars().take(64).collect::<String>()))
    })
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
    let idempotency = idempotency::for_request(&headers, "messages/reply", &serde_json::to_value(&body).unwrap_or(Value::Null))?;
    let line = line_id(&body.line_id)?;
    let to = phone("to", &body.to)?;
    let text = text("message", required("message", &body.message)?)?;
    let quoted_raw = required("quoted_message_id", &body.quoted_message_id)?;
    super::lines::fetch_line(&state.pool, &tenant.identity.account_id, &line).await?;
    let quoted = chat_message(&state, &tenant, &line, &to, "quoted_message_id", quoted_raw).await?;
    let send = Send {
        line_id: line,
        to,
        content: Content::Text { text },
        quoted_message_id: Some(quoted.message_id),
        archive_policy: ArchivePolicy::default(),
        idempotency,
    };
    run_send(&state, &tenant, send).await
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
    let line = line_id(&body.line_id)?;
    let chat = phone("jid", &body.jid)?;
    let target_raw = required("message_id", &body.message_id)?;
    let emoji = body
        .emoji
        .as_deref()
        .ok_or_else(|| ApiError::invalid_field("emoji", "`emoji` is required (empty removes the reaction)."))?;
    let emoji = domain::message::Emoji::parse(emoji).map_err(|e| ApiError::invalid_field("emoji", format!("{e}.")))?;
    super::lines::fetch_line(&state.pool, &tenant.identity.account_id, &line).await?;
    let target = chat_message(&state, &tenant, &line, &chat, "message_id", target_raw).await?;
    // A message still queued on this line may be reacted to: the reaction is queued behind it
    // (one FIFO per line) and goes out with its WhatsApp id. One that failed never will.
    if target.engine_message_id.is_none() && target.status != "queued" {
        return Err(ApiError::invalid_field(
            "message_id",
            format!("That message was not sent ({}); it cannot be reacted to.", target.status),
        ));
    }
    let target_engine_message_id = target.engine_message_id;
    let send = Send {
        line_id: line,
        to: chat,
        content: Content::Reaction { target_message_id: Some(target.message_id), target_engine_message_id, emoji },
        quoted_message_id: None,
        archive_policy: ArchivePolicy::default(),
        idempotency: None,
    };
    run_send(&state, &tenant, send).await
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

#[derive(Serialize, ToSchema)]
pub struct ReadResponse {
    pub ok: bool,
    pub line_id: String,
    pub phone: String,
    /// How many messages were marked read.
    pub marked_read: usize,
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
    let chat = match (&body.phone, &body.jid) {
        (Some(_), _) => phone("phone", &body.phone)?,
        (None, Some(_)) => phone("jid", &body.jid)?,
        (None, None) => return Err(ApiError::invalid_field("phone", "`phone` or `jid` is required.")),
    };
    let line = connected_line(&state, &tenant, &body.line_id).await?;
    let account_id = &tenant.identity.account_id;
    crate::consistency::await_own_writes(&state.pool, account_id, &["messages"], std::time::Duration::from_secs(5)).await?;
    let engine_ids = match &body.message_ids {
        None => crate::commands::chats::unread_engine_ids(&state.pool, &line, &chat).await?,
        Some(ids) => {
            if ids.is_empty() || ids.len() > 500 {
                return Err(ApiError::invalid_field("message_ids", "`message_ids` must list 1 to 500 ids."));
            }
            match crate::commands::chats::inbound_engine_ids(&state.pool, &line, &chat, ids).await? {
                Ok(engine_ids) => engine_ids,
                Err(missing) => {
                    return Err(ApiError::invalid_field("message_ids", "Some ids are not received messages of this chat.")
                        .with("unknown_ids", missing.into_iter().take(20).collect::<Vec<_>>()))
                }
            }
        }
    };
    let command = domain::chat::ChatCommand::Read {
        account_id: account_id.clone(),
        line_id: line.clone(),
        phone: chat.clone(),
        engine_message_ids: engine_ids.clone(),
    };
    crate::commands::chats::handle(&state.store, &tenant.metadata(), account_id, &line, &chat, command)
        .await
        .map_err(ApiError::server)?;
    // Read receipts go out after the fact is recorded; a failure here is logged, not fatal.
    if let Err(e) = state.engine.mark_read(&line, &chat, &engine_ids).await {
        tracing::warn!(line_id = %line, error = %e, "sending read receipts failed");
    }
    Ok(axum::Json(ReadResponse { ok: true, line_id: line.to_string(), phone: chat.to_string(), marked_read: engine_ids.len() }))
}
