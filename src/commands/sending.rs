//! Sends as REST and MCP request them (a text, a file, a quoting reply, a reaction), checked field
//! by field into a [`Send`] and run. A REST handler builds the request from its body, an MCP tool
//! from its arguments; both answer the typed [`Sent`]. The requests serialise as the REST bodies
//! do, and that is what an Idempotency-Key's request hash covers, whichever door it came through.

use super::messages::{Send, SendError, SendOutcome, SendResponse};
use crate::api::error::{ApiError, ErrorCode};
use crate::api::fields;
use crate::api::idempotency;
use crate::api::schemas;
use crate::api::tenant::Caller;
use crate::app::AppState;
use crate::queries::chats::{find_own_message, FoundMessage};
use crate::queries::owned::OwnedLine;
use domain::chat_id::ChatId;
use domain::message::{ArchivePolicy, Content, Emoji};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A text message (`POST /v1/messages/send`, `bridge_send_message`).
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"line_id": "line_xxx", "to": "+34600000000", "message": "Pedido confirmado"}))]
pub struct SendRequest {
    /// Connected line from which it is sent.
    #[schema(required = true, nullable = false, value_type = String)]
    pub line_id: Option<String>,
    /// Destination: a phone in international format (e.g. +34600000000), its jid, or a group's jid.
    #[schema(required = true, nullable = false, value_type = schemas::Chat)]
    pub to: Option<String>,
    /// Message text (at most 4096 characters).
    #[schema(required = true, nullable = false, value_type = schemas::MessageText)]
    pub message: Option<String>,
    /// `never` (default), `always` or `preserve_if_previously_archived`.
    #[schema(value_type = Option<schemas::ArchivePolicy>)]
    pub archive_policy: Option<String>,
}

/// A file (`POST /v1/messages/send-media`, `bridge_send_media`).
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"line_id": "line_xxx", "to": "+34600000000", "media_url": "https://tu-cdn.com/foto.jpg", "media_type": "image", "caption": "Hello"}))]
pub struct SendMediaRequest {
    /// Connected line from which it is sent.
    #[schema(required = true, nullable = false, value_type = String)]
    pub line_id: Option<String>,
    /// Destination: a phone in international format (e.g. +34600000000), its jid, or a group's jid.
    #[schema(required = true, nullable = false, value_type = schemas::Chat)]
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

/// A text quoting a message of the chat (`POST /v1/messages/reply`, `bridge_reply_message`).
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"line_id": "line_xxx", "to": "+34600000000", "message": "Sí, mañana", "quoted_message_id": "msg_xxx"}))]
pub struct ReplyRequest {
    /// Connected line from which it is sent.
    #[schema(required = true, nullable = false, value_type = String)]
    pub line_id: Option<String>,
    /// The chat: a phone in international format, its jid, or a group's jid.
    #[schema(required = true, nullable = false, value_type = schemas::Chat)]
    pub to: Option<String>,
    #[schema(required = true, nullable = false, value_type = schemas::MessageText)]
    pub message: Option<String>,
    /// The message quoted: our id (`msg_…`) or its WhatsApp id, from the same chat.
    #[schema(required = true, nullable = false, value_type = schemas::MessageRef)]
    pub quoted_message_id: Option<String>,
}

/// An emoji on a message of the chat (`POST /v1/messages/react`, `bridge_react_message`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"line_id": "line_xxx", "jid": "34600000000@s.whatsapp.net", "message_id": "msg_xxx", "emoji": "👍"}))]
pub struct ReactRequest {
    /// Connected line from which it is sent.
    #[schema(required = true, nullable = false, value_type = String)]
    pub line_id: Option<String>,
    /// The chat: a jid (`34600000000@s.whatsapp.net`, a group's `…@g.us`) or a phone.
    #[schema(required = true, nullable = false, value_type = schemas::Chat)]
    pub jid: Option<String>,
    /// The message reacted to: our id or its WhatsApp id.
    #[schema(required = true, nullable = false, value_type = schemas::MessageRef)]
    pub message_id: Option<String>,
    /// One emoji; empty removes this line's reaction.
    #[schema(required = true, nullable = false, value_type = schemas::Emoji)]
    pub emoji: Option<String>,
}

/// What a send answers: the response, and whether it is the saved one of an earlier request with
/// the same Idempotency-Key (REST says so in `Idempotent-Replayed`).
#[derive(Debug)]
pub struct Sent {
    pub response: SendResponse,
    pub replayed: bool,
}

pub async fn send_text(
    state: &AppState,
    caller: &Caller,
    request: SendRequest,
    idempotency_key: Option<String>,
) -> Result<Sent, ApiError> {
    let idempotency = idempotency::for_request(idempotency_key, "messages/send", &request);
    let send = Send {
        line_id: fields::line_id(&request.line_id)?,
        to: fields::chat("to", &request.to)?,
        content: Content::Text { text: fields::text("message", fields::required("message", &request.message)?)? },
        quoted_message_id: None,
        archive_policy: fields::archive_policy(&request.archive_policy)?,
        idempotency,
    };
    run(state, caller, send).await
}

pub async fn send_media(
    state: &AppState,
    caller: &Caller,
    request: SendMediaRequest,
    idempotency_key: Option<String>,
) -> Result<Sent, ApiError> {
    let idempotency = idempotency::for_request(idempotency_key, "messages/send-media", &request);
    let media_type = fields::media_type(&request.media_type)?;
    let caption = fields::caption(&request.caption)?;
    let send = Send {
        line_id: fields::line_id(&request.line_id)?,
        to: fields::chat("to", &request.to)?,
        content: Content::Media { media_url: fields::media_url(&request.media_url)?, media_type, caption },
        quoted_message_id: None,
        archive_policy: ArchivePolicy::default(),
        idempotency,
    };
    run(state, caller, send).await
}

pub async fn reply(
    state: &AppState,
    caller: &Caller,
    request: ReplyRequest,
    idempotency_key: Option<String>,
) -> Result<Sent, ApiError> {
    let idempotency = idempotency::for_request(idempotency_key, "messages/reply", &request);
    let line = fields::line_id(&request.line_id)?;
    let to = fields::chat("to", &request.to)?;
    let text = fields::text("message", fields::required("message", &request.message)?)?;
    let quoted_raw = fields::required("quoted_message_id", &request.quoted_message_id)?;
    let (line, _) = crate::queries::lines::owned(&state.pool, &caller.account_id, &line).await?;
    let quoted = chat_message(state, &line, &to, "quoted_message_id", quoted_raw).await?;
    let send = Send {
        line_id: line.id().clone(),
        to,
        content: Content::Text { text },
        quoted_message_id: Some(quoted.message_id),
        archive_policy: ArchivePolicy::default(),
        idempotency,
    };
    run(state, caller, send).await
}

pub async fn react(state: &AppState, caller: &Caller, request: ReactRequest) -> Result<Sent, ApiError> {
    let line = fields::line_id(&request.line_id)?;
    let chat = fields::chat("jid", &request.jid)?;
    let target_raw = fields::required("message_id", &request.message_id)?;
    let emoji = request
        .emoji
        .as_deref()
        .ok_or_else(|| ApiError::invalid_field("emoji", "`emoji` is required (empty removes the reaction)."))?;
    let emoji = Emoji::parse(emoji).map_err(|e| ApiError::invalid_field("emoji", format!("{e}.")))?;
    let (line, _) = crate::queries::lines::owned(&state.pool, &caller.account_id, &line).await?;
    let target = chat_message(state, &line, &chat, "message_id", target_raw).await?;
    // A message still queued on this line may be reacted to: the reaction is queued behind it
    // (one FIFO per line) and goes out with its WhatsApp id. One that failed never will.
    if target.engine_message_id.is_none() && target.status != "queued" {
        return Err(ApiError::invalid_field(
            "message_id",
            format!("That message was not sent ({}); it cannot be reacted to.", target.status),
        ));
    }
    let send = Send {
        line_id: line.id().clone(),
        to: chat,
        content: Content::Reaction {
            target_message_id: Some(target.message_id),
            target_engine_message_id: target.engine_message_id,
            emoji,
        },
        quoted_message_id: None,
        archive_policy: ArchivePolicy::default(),
        idempotency: None,
    };
    run(state, caller, send).await
}

/// The message of the chat being quoted or reacted to (`field` names where its id was given).
async fn chat_message(
    state: &AppState,
    line: &OwnedLine,
    chat: &ChatId,
    field: &str,
    id: &str,
) -> Result<FoundMessage, ApiError> {
    find_own_message(&state.pool, line, chat, id).await?.ok_or_else(|| {
        ApiError::invalid_field(field, format!("No message `{}` in this chat.", id.chars().take(64).collect::<String>()))
    })
}

/// Run a checked send; wake the line's dispatcher if it queued something.
async fn run(state: &AppState, caller: &Caller, send: Send) -> Result<Sent, ApiError> {
    let outcome = state.sends.send(&caller.metadata, &caller.account_id, send).await.map_err(send_error)?;
    match outcome {
        SendOutcome::Accepted { response, line_id } => {
            state.dispatcher.queued(&line_id);
            Ok(Sent { response, replayed: false })
        }
        SendOutcome::Replayed { response } => Ok(Sent { response, replayed: true }),
    }
}

fn send_error(e: SendError) -> ApiError {
    match e {
        SendError::Suspended => ErrorCode::SubscriptionRequired.into(),
        SendError::LineNotFound => ErrorCode::LineNotFound.into(),
        SendError::LineNotConnected => ErrorCode::LineNotConnected.into(),
        SendError::QuotaExceeded { used, limit, plan } => {
            ApiError::over_limit(ErrorCode::QuotaExceeded, "sent_messages", used, limit, plan)
        }
        SendError::IdempotencyConflict => ErrorCode::IdempotencyConflict.into(),
        other => ApiError::server(other),
    }
}
