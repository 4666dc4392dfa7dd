//! The eight published MCP tools. Each one calls the service function its REST twin calls (see
//! [`crate::commands`] and [`crate::queries`]) with the same request, and answers the same typed
//! result: as JSON text and as structured content. A refusal is a result with `isError: true`
//! whose content is the REST error body, e.g. `{"error": "line_not_found", "message": …}`.

use crate::api::error::ApiError;
use crate::api::fields::{parse_chat, parse_line_id};
use crate::api::idempotency;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::commands::chats::{self as chat_commands, ArchiveRequest};
use crate::commands::sending::{self, ReactRequest, ReplyRequest, SendMediaRequest, SendRequest, Sent};
use crate::queries::chats::{self as chat_queries, ChatFilter};
use crate::queries::lines as line_queries;
use crate::queries::messages::{self as message_queries, MessageFilter};
use axum::http::request::Parts;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::{Extension, ToolCallContext};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// The MCP server of one request (the service is stateless): the state, and the tools, which are
/// built once and shared by every request (see [`tools`]).
#[derive(Clone)]
pub struct Bridge {
    state: AppState,
    /// What `call_tool`, `list_tools` and `get_tool` dispatch through.
    tool_router: Arc<ToolRouter<Self>>,
}

/// The tools, with their schemas: they never change, so the server builds them once.
pub fn tools() -> Arc<ToolRouter<Bridge>> {
    Arc::new(Bridge::tool_router())
}

impl Bridge {
    pub fn new(state: AppState, tools: Arc<ToolRouter<Self>>) -> Self {
        Self { state, tool_router: tools }
    }
}

const LINE_ID: &str = "The line to act on: a `line_…` id from bridge_list_lines. The line must be connected to send.";
const CHAT: &str = "The chat: a phone number in international format with a leading +, e.g. +34600000000 (its WhatsApp jid, 34600000000@s.whatsapp.net, is accepted too), or a group's jid such as 120363041234567890@g.us (the `phone` of a group chat in bridge_get_chats).";
const IDEMPOTENCY_KEY: &str = "Optional. A unique key for this operation (at most 255 characters): retrying with the same key and the same arguments returns the first result instead of sending again, for 24 hours; the same key with other arguments is refused with idempotency_conflict.";

#[derive(Deserialize, schemars::JsonSchema)]
pub struct SendMessageArgs {
    #[schemars(description = LINE_ID)]
    pub line_id: String,
    #[schemars(description = CHAT)]
    pub to: String,
    /// The text to send, at most 4096 characters.
    pub message: String,
    /// What happens to the chat's archived state after sending: `never` (default: the chat is
    /// unarchived), `always` (archived after sending), or `preserve_if_previously_archived`.
    pub archive_policy: Option<ArchivePolicy>,
    #[schemars(description = IDEMPOTENCY_KEY)]
    pub idempotency_key: Option<String>,
}

#[derive(Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ArchivePolicy {
    Never,
    Always,
    PreserveIfPreviouslyArchived,
}

#[derive(Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MediaType {
    Image,
    Video,
    Audio,
    Document,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct SendMediaArgs {
    #[schemars(description = LINE_ID)]
    pub line_id: String,
    #[schemars(description = CHAT)]
    pub to: String,
    /// A public http(s) URL of the file; the server downloads it when the message is sent.
    pub media_url: String,
    /// The kind of file: image (default), video, audio or document.
    pub media_type: Option<MediaType>,
    /// Optional text shown with the file, at most 4096 characters.
    pub caption: Option<String>,
    #[schemars(description = IDEMPOTENCY_KEY)]
    pub idempotency_key: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct ReplyArgs {
    #[schemars(description = LINE_ID)]
    pub line_id: String,
    #[schemars(description = CHAT)]
    pub to: String,
    /// The reply's text, at most 4096 characters.
    pub message: String,
    /// The message being answered: its `msg_…` id or its WhatsApp id, from bridge_get_messages.
    pub quoted_message_id: String,
    #[schemars(description = IDEMPOTENCY_KEY)]
    pub idempotency_key: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct ReactArgs {
    #[schemars(description = LINE_ID)]
    pub line_id: String,
    #[schemars(description = CHAT)]
    pub jid: String,
    /// The message to react to: its `msg_…` id or its WhatsApp id, from bridge_get_messages.
    pub message_id: String,
    /// One emoji, e.g. 👍; an empty string removes your reaction.
    pub emoji: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct ChatsArgs {
    #[schemars(description = LINE_ID)]
    pub line_id: String,
    /// How many chats, newest activity first: 1 to 500 (default 500).
    #[schemars(range(min = 1, max = 500))]
    pub limit: Option<u32>,
    /// true: only archived chats; false: only chats not archived; absent: both.
    pub archived: Option<bool>,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct MessagesArgs {
    #[schemars(description = LINE_ID)]
    pub line_id: String,
    #[schemars(description = CHAT)]
    pub phone: String,
    /// How many messages, newest first: 1 to 200 (default 200).
    #[schemars(range(min = 1, max = 200))]
    pub limit: Option<u32>,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct ArchiveArgs {
    #[schemars(description = LINE_ID)]
    pub line_id: String,
    #[schemars(description = CHAT)]
    pub phone: String,
    /// true (default) archives the chat; false unarchives it.
    pub archive: Option<bool>,
}

/// The caller, as the authentication layer put it in the request (it always does: the service
/// is only reachable through it).
fn tenant(parts: &Parts) -> Result<Tenant, ErrorData> {
    parts.extensions.get::<Tenant>().cloned().ok_or_else(|| ErrorData::internal_error("no authenticated caller", None))
}

/// `idempotency_key`, checked as REST checks its `Idempotency-Key` header.
fn idempotency_key(key: Option<String>) -> Result<Option<String>, ApiError> {
    key.map(|k| {
        idempotency::parse_key(&k).ok_or_else(|| {
            ApiError::invalid_field("idempotency_key", "`idempotency_key` must be 1 to 255 visible ASCII characters.")
        })
    })
    .transpose()
}

/// An enum argument as the string REST takes in its place.
fn to_value<T: Serialize>(value: &Option<T>) -> Option<String> {
    value.as_ref().and_then(|v| serde_json::to_value(v).ok()).and_then(|v| v.as_str().map(str::to_owned))
}

/// A service's answer as a tool result: the typed result, or the error body with `isError`.
fn answer<T: Serialize>(result: Result<T, ApiError>) -> Result<CallToolResult, ErrorData> {
    match result {
        Ok(value) => {
            let body = serde_json::to_value(value).map_err(|e| ErrorData::internal_error(format!("the answer: {e}"), None))?;
            Ok(tool_result(body, false))
        }
        Err(refused) => {
            if let Some(cause) = refused.cause() {
                tracing::error!(code = %refused.code, cause, "MCP tool call failed");
            }
            Ok(tool_result(refused.body(), true))
        }
    }
}

fn tool_result(body: Value, is_error: bool) -> CallToolResult {
    let content = vec![ContentBlock::text(body.to_string())];
    let mut result = if is_error { CallToolResult::error(content) } else { CallToolResult::success(content) };
    result.structured_content = Some(body);
    result
}

/// A send's answer (MCP has no header to say it was a replay).
fn sent(result: Result<Sent, ApiError>) -> Result<CallToolResult, ErrorData> {
    answer(result.map(|sent| sent.response))
}

#[tool_router]
impl Bridge {
    #[tool(
        name = "bridge_list_lines",
        description = "List the WhatsApp lines of your account. Returns {ok, lines: [{line_id, status (pending_qr, qr_expired, connected, disconnected or logged_out), phone, engine, created_at, …}]}. Use a connected line's line_id with the other tools.",
        annotations(read_only_hint = true)
    )]
    async fn bridge_list_lines(&self, Extension(parts): Extension<Parts>) -> Result<CallToolResult, ErrorData> {
        let tenant = tenant(&parts)?;
        answer(line_queries::list(&self.state.read_pool().await, &tenant.identity.account_id).await)
    }

    #[tool(
        name = "bridge_send_message",
        description = "Send a WhatsApp text message from a connected line. It is queued and sent by the line's dispatcher a few seconds apart from the line's other sends. Returns {ok, message_id (msg_…), status: \"queued\", line_id, to}. Errors: line_not_found, line_not_connected, validation_error, quota_exceeded (with metric, used, limit, plan), idempotency_conflict."
    )]
    async fn bridge_send_message(
        &self,
        Parameters(args): Parameters<SendMessageArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let tenant = tenant(&parts)?;
        let request = SendRequest {
            line_id: Some(args.line_id),
            to: Some(args.to),
            message: Some(args.message),
            archive_policy: to_value(&args.archive_policy),
        };
        sent(
            async { sending::send_text(&self.state, &tenant.caller(), request, idempotency_key(args.idempotency_key)?).await }
                .await,
        )
    }

    #[tool(
        name = "bridge_send_media",
        description = "Send an image, video, audio or document from a connected line; the server downloads media_url when it sends. Returns {ok, message_id, status: \"queued\", line_id, to}. If the download fails the message ends as failed with the reason (see bridge_get_messages). Errors as bridge_send_message."
    )]
    async fn bridge_send_media(
        &self,
        Parameters(args): Parameters<SendMediaArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let tenant = tenant(&parts)?;
        let request = SendMediaRequest {
            line_id: Some(args.line_id),
            to: Some(args.to),
            media_url: Some(args.media_url),
            media_type: to_value(&args.media_type),
            caption: args.caption,
        };
        sent(
            async { sending::send_media(&self.state, &tenant.caller(), request, idempotency_key(args.idempotency_key)?).await }
                .await,
        )
    }

    #[tool(
        name = "bridge_reply_message",
        description = "Reply to a message of a chat, quoting it. Returns {ok, message_id, status: \"queued\", line_id, to}. Errors as bridge_send_message, and validation_error when the quoted message is not in this chat."
    )]
    async fn bridge_reply_message(
        &self,
        Parameters(args): Parameters<ReplyArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let tenant = tenant(&parts)?;
        let request = ReplyRequest {
            line_id: Some(args.line_id),
            to: Some(args.to),
            message: Some(args.message),
            quoted_message_id: Some(args.quoted_message_id),
        };
        sent(async { sending::reply(&self.state, &tenant.caller(), request, idempotency_key(args.idempotency_key)?).await }.await)
    }

    #[tool(
        name = "bridge_react_message",
        description = "React with an emoji to a message of a chat (an empty emoji removes the reaction). Returns {ok, message_id, status: \"queued\", line_id, to}."
    )]
    async fn bridge_react_message(
        &self,
        Parameters(args): Parameters<ReactArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let tenant = tenant(&parts)?;
        let request = ReactRequest {
            line_id: Some(args.line_id),
            jid: Some(args.jid),
            message_id: Some(args.message_id),
            emoji: Some(args.emoji),
        };
        sent(sending::react(&self.state, &tenant.caller(), request).await)
    }

    #[tool(
        name = "bridge_get_chats",
        description = "List a line's chats, most recent activity first (at most 500). Returns {ok, chats: [{phone, jid, last_message_id, last_message_preview, last_message_at, last_direction, unread_count, archived}], next_cursor} (next_cursor is null when every chat was returned).",
        annotations(read_only_hint = true)
    )]
    async fn bridge_get_chats(
        &self,
        Parameters(args): Parameters<ChatsArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let tenant = tenant(&parts)?;
        answer(
            async {
                let line_id = parse_line_id(&args.line_id)?;
                let filter = ChatFilter { line_id, limit: args.limit.map(i64::from), archived: args.archived, cursor: None };
                chat_queries::list(&self.state, &tenant.identity.account_id, filter).await
            }
            .await,
        )
    }

    #[tool(
        name = "bridge_get_messages",
        description = "Read the messages of one chat, newest first (at most 200). Returns {ok, messages: [{message_id, engine_message_id, phone, direction (inbound or outbound), type, text, caption, media_url, media_type, quoted_message_id, status (queued, sent, delivered, read, failed), failure_reason, reactions, created_at, …}], next_cursor}.",
        annotations(read_only_hint = true)
    )]
    async fn bridge_get_messages(
        &self,
        Parameters(args): Parameters<MessagesArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let tenant = tenant(&parts)?;
        answer(
            async {
                let filter = MessageFilter {
                    line_id: parse_line_id(&args.line_id)?,
                    phone: parse_chat("phone", &args.phone)?,
                    limit: args.limit.map(i64::from),
                    cursor: None,
                };
                message_queries::list(&self.state, &tenant.identity.account_id, filter).await
            }
            .await,
        )
    }

    #[tool(
        name = "bridge_archive_chat",
        description = "Archive (or, with archive: false, unarchive) a chat of a connected line. Returns {ok, line_id, phone, archived}.",
        annotations(idempotent_hint = true)
    )]
    async fn bridge_archive_chat(
        &self,
        Parameters(args): Parameters<ArchiveArgs>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let tenant = tenant(&parts)?;
        let request = ArchiveRequest { line_id: Some(args.line_id), phone: Some(args.phone), archive: args.archive };
        answer(chat_commands::archive(&self.state, &tenant.caller(), request).await)
    }
}

/// How the SDK's `Parameters` extractor starts the message of an argument that does not fit.
const ARGUMENTS_DO_NOT_FIT: &str = "failed to deserialize parameters:";

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Bridge {
    /// As the generated one, after refusing NUL characters in any argument as REST refuses them
    /// in a body (PostgreSQL stores none; see [`crate::api::nul`]).
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if let Some(Err(refused)) = request.arguments.as_ref().map(crate::api::nul::refuse_in_fields) {
            return answer::<()>(Err(refused)).map(Into::into);
        }
        let response = self.tool_router.call(ToolCallContext::new(self, request, context)).await?;
        // Arguments that do not fit the tool's parameters (a wrong type, an unknown enum value, a
        // missing field) come back from the SDK as an error result in plain text; answer them as
        // REST answers a body that does not fit, with the `validation_error` body.
        if let CallToolResponse::Complete(result) = &response {
            let text = result.content.first().and_then(|c| c.as_text()).map(|t| t.text.as_str());
            if let (Some(true), Some(detail)) = (result.is_error, text.and_then(|t| t.strip_prefix(ARGUMENTS_DO_NOT_FIT))) {
                let refused = ApiError::validation(format!("The arguments do not match the tool's parameters:{detail}."));
                return answer::<()>(Err(refused)).map(Into::into);
            }
        }
        Ok(response)
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("wazion-bridge", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Send and read WhatsApp through WAzion Bridge. Start with bridge_list_lines to find a connected line_id; \
                 phone numbers are international with a leading + (e.g. +34600000000). Errors come back as results with \
                 isError and a JSON body {\"error\": code, \"message\": …}.",
            )
    }
}
