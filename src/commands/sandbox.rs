//! The sandbox: drive the simulated network of the caller's own `sim` lines (a phone scans the QR
//! code, the session drops, a message arrives), as REST (`/v1/sandbox/lines/{id}/…`) and the
//! console's Lines page request it.

use super::lines::{handle, line_error};
use crate::api::error::{ApiError, ErrorCode};
use crate::api::fields::{self, parse_line_id, required, text};
use crate::api::rate_limit::RateLimits;
use crate::api::tenant::Caller;
use crate::app::AppState;
use crate::queries::lines::{self as line_queries, LineView};
use domain::chat_id::{ChatId, GroupJid};
use domain::line::LineCommand;
use domain::message::{Content, Emoji};
use domain::phone::PhoneNumber;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A simulated phone numbered `phone` scans the QR code of the caller's sim line `raw_line_id`:
/// the line links to that number and connects. The line as it is then.
pub async fn scan(state: &AppState, caller: &Caller, raw_line_id: &str, phone: &str) -> Result<LineView, ApiError> {
    let phone = PhoneNumber::parse(phone).map_err(|e| ApiError::invalid_field("phone", format!("{e}.")))?;
    let (line, _) = line_queries::sim(&state.pool, &caller.account_id, &parse_line_id(raw_line_id)?).await?;
    handle(&state.store, &caller.metadata, &line, LineCommand::Connect { phone, jid: None }).await.map_err(line_error)?;
    // A line that comes back sends what queued up while it was away.
    state.dispatcher.wake(line.id());
    line_queries::view(&state.pool, &line).await
}

/// The session of the caller's sim line drops, for `reason` (`sandbox` when none).
pub async fn disconnect(
    state: &AppState,
    caller: &Caller,
    raw_line_id: &str,
    reason: Option<String>,
) -> Result<LineView, ApiError> {
    let (line, _) = line_queries::sim(&state.pool, &caller.account_id, &parse_line_id(raw_line_id)?).await?;
    let reason = reason.unwrap_or_else(|| "sandbox".into());
    handle(&state.store, &caller.metadata, &line, LineCommand::Disconnect { reason }).await.map_err(line_error)?;
    state.dispatcher.wake(line.id());
    line_queries::view(&state.pool, &line).await
}

/// A message arriving on a sim line: exactly one of text, a file, or a reaction, from `from`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct InboundRequest {
    pub from: Option<String>,
    /// The group it arrives in (`…@g.us`); a direct chat with `from` when absent.
    pub group: Option<String>,
    /// Text…
    pub message: Option<String>,
    /// …or a file…
    pub media_url: Option<String>,
    pub media_type: Option<String>,
    pub caption: Option<String>,
    /// …or a reaction to a message of the chat (our id or WhatsApp id; empty emoji removes it).
    pub react_to: Option<String>,
    pub emoji: Option<String>,
    /// A message of the chat this one quotes.
    pub quoted_message_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct InboundResponse {
    pub ok: bool,
    pub message_id: String,
}

/// A message arrives on the caller's connected sim line from a simulated phone. Limited per line
/// (`rate_limits.sandbox_inbound`).
pub async fn inbound(
    state: &AppState,
    caller: &Caller,
    limits: &RateLimits,
    raw_line_id: &str,
    request: InboundRequest,
) -> Result<InboundResponse, ApiError> {
    let from = fields::phone("from", &request.from)?;
    let group =
        match request.group.as_deref() {
            None => None,
            Some(raw) => Some(GroupJid::parse(raw).ok_or_else(|| {
                ApiError::invalid_field("group", "`group` must be a group's jid, e.g. 120363041234567890@g.us.")
            })?),
        };
    let chat = match &group {
        Some(group) => ChatId::Group(group.clone()),
        None => ChatId::Phone(from.clone()),
    };
    let (line, view) = line_queries::sim(&state.pool, &caller.account_id, &parse_line_id(raw_line_id)?).await?;
    limits.sandbox_inbound(line.id())?;
    if view.status != "connected" {
        return Err(ErrorCode::LineNotConnected.into());
    }
    let account_id = line.account_id();
    let find = |field: &'static str, id: String| {
        let (state, line, chat) = (&state, &line, &chat);
        async move {
            crate::queries::chats::find_own_message(&state.pool, line, chat, &id)
                .await?
                .and_then(|m| m.engine_message_id)
                .ok_or_else(|| ApiError::invalid_field(field, "No sent or received message with that id in this chat."))
        }
    };
    let content = match (&request.message, &request.media_url, &request.react_to) {
        (Some(_), None, None) => Content::Text { text: text("message", required("message", &request.message)?)? },
        (None, Some(url), None) => Content::Media {
            media_url: fields::media_url(&Some(url.clone()))?,
            media_type: fields::media_type(&request.media_type)?,
            caption: fields::caption(&request.caption)?,
        },
        (None, None, Some(target)) => Content::Reaction {
            target_message_id: None,
            target_engine_message_id: Some(find("react_to", target.clone()).await?),
            emoji: Emoji::parse(request.emoji.as_deref().unwrap_or(""))
                .map_err(|e| ApiError::invalid_field("emoji", format!("{e}.")))?,
        },
        _ => return Err(ApiError::validation("Give exactly one of `message`, `media_url` or `react_to`.")),
    };
    let quoted_engine_message_id = match request.quoted_message_id.clone() {
        Some(id) => Some(find("quoted_message_id", id).await?),
        None => None,
    };
    let inbound = super::messages::Inbound {
        line_id: line.id().clone(),
        from,
        group,
        engine_message_id: crate::engine::new_engine_message_id(),
        content,
        quoted_engine_message_id,
    };
    let message_id =
        super::messages::receive(&state.store, &caller.metadata, account_id, inbound).await.map_err(ApiError::server)?;
    Ok(InboundResponse { ok: true, message_id: message_id.to_string() })
}
