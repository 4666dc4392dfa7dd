//! Chat commands: mark read and archive, as REST and MCP request them (checked, run, answered
//! with a typed result), and the command handler under them.

use super::{execute, CommandError};
use crate::api::error::ApiError;
use crate::api::fields;
use crate::api::schemas;
use crate::api::tenant::Caller;
use crate::app::AppState;
use crate::commands::lines::engine_line;
use crate::queries::chats::{inbound_engine_ids, unread_engine_ids};
use crate::queries::owned::OwnedLine;
use crate::store::{EventStore, Metadata};
use domain::chat::{self, Chat, ChatCommand, ChatError, ChatEvent};
use domain::chat_id::ChatId;
use domain::Aggregate;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// Archive or unarchive a chat (`POST /v1/chats/archive`, `bridge_archive_chat`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"line_id": "line_xxx", "phone": "+34600000000", "archive": true}))]
pub struct ArchiveRequest {
    /// Connected line of the chat.
    #[schema(required = true, nullable = false, value_type = String)]
    pub line_id: Option<String>,
    /// The chat: a phone in international format, its jid, or a group's jid.
    #[schema(required = true, nullable = false, value_type = schemas::Chat)]
    pub phone: Option<String>,
    /// `true` (default) archives, `false` unarchives.
    #[schema(value_type = Option<bool>)]
    pub archive: Option<bool>,
}

#[derive(Serialize, ToSchema)]
pub struct ArchiveResponse {
    pub ok: bool,
    pub line_id: String,
    pub phone: String,
    pub archived: bool,
}

/// Mark a chat's received messages read (`POST /v1/messages/read`): the chat as `phone` or `jid`,
/// and `message_ids` (ours or WhatsApp's), or every unread one when absent.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"line_id": "line_xxx", "phone": "+34600000000"}))]
pub struct ReadRequest {
    /// Connected line of the chat.
    #[schema(required = true, nullable = false, value_type = String)]
    pub line_id: Option<String>,
    /// The chat, as a phone… (one of `phone` and `jid` is required; `phone` wins when both are given)
    #[schema(value_type = Option<schemas::Chat>)]
    pub phone: Option<String>,
    /// …or as a jid.
    #[schema(value_type = Option<schemas::Chat>)]
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

/// The most ids one read may name.
const MAX_READ_IDS: usize = 500;

pub async fn archive(state: &AppState, caller: &Caller, request: ArchiveRequest) -> Result<ArchiveResponse, ApiError> {
    let chat = fields::chat("phone", &request.phone)?;
    let line = fields::line_id(&request.line_id)?;
    let (line, view) = crate::queries::lines::connected(&state.pool, &caller.account_id, &line).await?;
    let archived = request.archive.unwrap_or(true);
    let command =
        ChatCommand::Archive { account_id: line.account_id().clone(), line_id: line.id().clone(), phone: chat.clone(), archived };
    handle(&state.store, &caller.metadata, &line, &chat, command).await.map_err(ApiError::server)?;
    // The linked phone archives it too; recorded first, so a failure here is logged, not fatal.
    if let Err(e) = state.engine.archive(&engine_line(line.id(), &view), &chat, archived).await {
        tracing::warn!(line_id = %line.id(), error = %e, "archiving the chat on the phone failed");
    }
    Ok(ArchiveResponse { ok: true, line_id: line.id().to_string(), phone: chat.to_string(), archived })
}

pub async fn mark_read(state: &AppState, caller: &Caller, request: ReadRequest) -> Result<ReadResponse, ApiError> {
    let chat = match (&request.phone, &request.jid) {
        (Some(_), _) => fields::chat("phone", &request.phone)?,
        (None, Some(_)) => fields::chat("jid", &request.jid)?,
        (None, None) => return Err(ApiError::invalid_field("phone", "`phone` or `jid` is required.")),
    };
    let line = fields::line_id(&request.line_id)?;
    let (line, view) = crate::queries::lines::connected(&state.pool, &caller.account_id, &line).await?;
    crate::consistency::await_own_writes(&state.pool, line.account_id(), &["messages"], Duration::from_secs(5)).await?;
    let engine_ids = match &request.message_ids {
        None => unread_engine_ids(&state.pool, &line, &chat).await?,
        Some(ids) => {
            if ids.is_empty() || ids.len() > MAX_READ_IDS {
                return Err(ApiError::invalid_field("message_ids", "`message_ids` must list 1 to 500 ids."));
            }
            match inbound_engine_ids(&state.pool, &line, &chat, ids).await? {
                Ok(engine_ids) => engine_ids,
                Err(missing) => {
                    return Err(ApiError::invalid_field("message_ids", "Some ids are not received messages of this chat.")
                        .with("unknown_ids", missing.into_iter().take(20).collect::<Vec<_>>()))
                }
            }
        }
    };
    let command = ChatCommand::Read {
        account_id: line.account_id().clone(),
        line_id: line.id().clone(),
        phone: chat.clone(),
        engine_message_ids: engine_ids.clone(),
    };
    handle(&state.store, &caller.metadata, &line, &chat, command).await.map_err(ApiError::server)?;
    // Read receipts go out after the fact is recorded; a failure here is logged, not fatal.
    if let Err(e) = state.engine.mark_read(&engine_line(line.id(), &view), &chat, &engine_ids).await {
        tracing::warn!(line_id = %line.id(), error = %e, "sending read receipts failed");
    }
    Ok(ReadResponse { ok: true, line_id: line.id().to_string(), phone: chat.to_string(), marked_read: engine_ids.len() })
}

/// Run a command on a chat of the account's line.
pub async fn handle(
    store: &EventStore,
    metadata: &Metadata,
    line: &OwnedLine,
    phone: &ChatId,
    command: ChatCommand,
) -> Result<Vec<ChatEvent>, CommandError<ChatError>> {
    let tenant = line.account_id().to_string();
    let (_, stored) = execute::<Chat, _>(
        store,
        &chat::stream_id(line.id(), phone),
        |_| Some(tenant.clone()),
        metadata,
        |c: &Chat| c.decide(command.clone(), &()),
    )
    .await?;
    stored.iter().map(|e| e.decode().map_err(|e| CommandError::Projection(e.into()))).collect()
}
