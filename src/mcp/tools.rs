//! The eight published MCP tools. Each one builds the request its REST twin takes and runs that
//! twin's handler, so there is one implementation of every operation: the tool only translates
//! arguments in and the HTTP answer out (2xx → a result, anything else → `isError: true` with the
//! REST error body, e.g. `{"error": "line_not_found", "message": …}`).

use crate::http::error::ApiError;
use crate::http::extract::{Json, Tenant};
use crate::http::v1::{chats, lines, message_history, messages};
use crate::http::AppState;
use axum::extract::{Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::{Extension, ToolCallContext};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{schemars, tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;

#[derive(Clone)]
pub struct Bridge {
    state: AppState,
    /// What `call_tool` and the generated `list_tools` dispatch through.
    tool_router: ToolRouter<Self>,
}

impl Bridge {
    pub fn new(state: AppState) -> Self {
        Self { state, tool_router: Self::tool_router() }
    }
}

const LINE_ID: &str = "The line to act on: a `line_…` id from bridge_list_lines. The line must be connected to send.";
const PHONE: &str = "A phone number in international format with a leading +, e.g. +34600000000 (a WhatsApp jid such as 34600000000@s.whatsapp.net is accepted too).";
const IDEMPOTENCY_KEY: &str = "Optional. A unique key for this operation (at most 255 characters): retrying with the same key and the same arguments returns the first result instead of sending again, for 24 hours; the same key with other arguments is refused with idempotency_conflict.";

#[derive(Deserialize, schemars::JsonSchema)]
pub struct SendMessageArgs {
    #[schemars(description = LINE_ID)]
    pub line_id: String,
    /// The recipient's phone number in international format with a leading +, e.g. +34600000000.
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
    /// The recipient's phone number in international format with a leading +, e.g. +34600000000.
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
    /// The phone number of the chat, in international format with a leading +.
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
    #[schemars(description = PHONE)]
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
    #[schemars(description = PHONE)]
    pub phone: String,
    /// How many messages, newest first: 1 to 200 (default 200).
    #[schemars(range(min = 1, max = 200))]
    pub limit: Option<u32>,
}

#[derive(Deserialize, schemars::JsonSchema)]
pub struct ArchiveArgs {
    #[schemars(description = LINE_ID)]
    pub line_id: String,
    #[schemars(description = PHONE)]
    pub phone: String,
    /// true (default) archives the chat; false unarchives it.
    pub archive: Option<bool>,
}

/// The caller, as the authentication layer put it in the request (it always does: the service
/// is only reachable through it).
fn tenant(parts: &Parts) -> Result<Tenant, ErrorData> {
    parts.extensions.get::<Tenant>().cloned().ok_or_else(|| ErrorData::internal_error("no authenticated caller", None))
}

/// `idempotency_key` as the `Idempotency-Key` header the REST handler reads (and validates).
fn idempotency(key: Option<String>) -> Result<HeaderMap, ApiError> {
    let mut headers = HeaderMap::new();
    if let Some(key) = key {
        let value = HeaderValue::from_str(&key).map_err(|_| {
            ApiError::invalid_field("idempotency_key", "`idempotency_key` must be printable ASCII, at most 255 characters.")
        })?;
        headers.insert(crate::http::idempotency::HEADER, value);
    }
    Ok(headers)
}

fn to_value<T: serde::Serialize>(value: &Option<T>) -> Option<String> {
    value.as_ref().and_then(|v| serde_json::to_value(v).ok()).and_then(|v| v.as_str().map(str::to_owned))
}

/// The REST answer as a tool result: the JSON body as text and as structured content.
async fn outcome(answer: impl IntoResponse) -> Result<CallToolResult, ErrorData> {
    let response = answer.into_response();
    let ok = response.status().is_success();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| ErrorData::internal_error(format!("reading the answer: {e}"), None))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let mut result = if ok {
        CallToolResult::success(vec![ContentBlock::text(text)])
    } else {
        CallToolResult::error(vec![ContentBlock::text(text)])
    };
    if let Ok(value @ Value::Object(_)) = serde_json::from_slice::<Value>(&bytes) {
        result.structured_content = Some(value);
    }
    Ok(result)
}

#[tool_router]
impl Bridge {
    #[tool(
        name = "bridge_list_lines",
        description = "List the WhatsApp lines of your account. Returns {ok, lines: [{line_id, status (pending_qr, connected, disconnected or logged_out), phone, engine, created_at, …}]}. Use a connected line's line_id with the other tools.",
        annotations(read_only_hint = true)
    )]
    async fn bridge_list_lines(&self, Extension(parts): Extension<Parts>) -> Result<CallToolResult, ErrorData> {
        outcome(lines::list(State(self.state.clone()), tenant(&parts)?).await).await
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
        let body = messages::SendRequest {
            line_id: Some(args.line_id),
            to: Some(args.to),
            message: Some(args.message),
            archive_policy: to_value(&args.archive_policy),
        };
        let headers = match idempotency(args.idempotency_key) {
            Ok(headers) => headers,
            Err(refused) => return outcome(refused).await,
        };
        outcome(messages::send(State(self.state.clone()), tenant(&parts)?, headers, Json(body)).await).await
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
        let body = messages::SendMediaRequest {
            line_id: Some(args.line_id),
            to: Some(args.to),
            media_url: Some(args.media_url),
            media_type: to_value(&args.media_type),
            caption: args.caption,
        };
        let headers = match idempotency(args.idempotency_key) {
            Ok(headers) => headers,
            Err(refused) => return outcome(refused).await,
        };
        outcome(messages::send_media(State(self.state.clone()), tenant(&parts)?, headers, Json(body)).await).await
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
        let body = messages::ReplyRequest {
            line_id: Some(args.line_id),
            to: Some(args.to),
            message: Some(args.message),
            quoted_message_id: Some(args.quoted_message_id),
        };
        let headers = match idempotency(args.idempotency_key) {
            Ok(headers) => headers,
            Err(refused) => return outcome(refused).await,
        };
        outcome(messages::reply(State(self.state.clone()), tenant(&parts)?, headers, Json(body)).await).await
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
        let body = messages::ReactRequest {
            line_id: Some(args.line_id),
            jid: Some(args.jid),
            message_id: Some(args.message_id),
            emoji: Some(args.emoji),
        };
        outcome(messages::react(State(self.state.clone()), tenant(&parts)?, Json(body)).await).await
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
        let mut params = HashMap::from([("line_id".to_owned(), args.line_id)]);
        if let Some(limit) = args.limit {
            params.insert("limit".into(), limit.to_string());
        }
        if let Some(archived) = args.archived {
            params.insert("archived".into(), archived.to_string());
        }
        outcome(chats::list(State(self.state.clone()), tenant(&parts)?, Query(params)).await).await
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
        let mut params = HashMap::from([("line_id".to_owned(), args.line_id), ("phone".to_owned(), args.phone)]);
        if let Some(limit) = args.limit {
            params.insert("limit".into(), limit.to_string());
        }
        outcome(message_history::list(State(self.state.clone()), tenant(&parts)?, Query(params)).await).await
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
        let body = chats::ArchiveRequest { line_id: Some(args.line_id), phone: Some(args.phone), archive: args.archive };
        outcome(chats::archive(State(self.state.clone()), tenant(&parts)?, Json(body)).await).await
    }
}

/// How the SDK's `Parameters` extractor starts the message of an argument that does not fit.
const ARGUMENTS_DO_NOT_FIT: &str = "failed to deserialize parameters:";

#[tool_handler]
impl ServerHandler for Bridge {
    /// As the generated one, after refusing NUL characters in any argument as REST refuses them
    /// in a body (PostgreSQL stores none; see [`crate::http::nul`]).
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if let Some(Err(refused)) = request.arguments.as_ref().map(crate::http::nul::refuse_in_fields) {
            return outcome(refused).await.map(Into::into);
        }
        let response = self.tool_router.call(ToolCallContext::new(self, request, context)).await?;
        // Arguments that do not fit the tool's parameters (a wrong type, an unknown enum value, a
        // missing field) come back from the SDK as an error result in plain text; answer them as
        // REST answers a body that does not fit, with the `validation_error` body.
        if let CallToolResponse::Complete(result) = &response {
            let text = result.content.first().and_then(|c| c.as_text()).map(|t| t.text.as_str());
            if let (Some(true), Some(detail)) = (result.is_error, text.and_then(|t| t.strip_prefix(ARGUMENTS_DO_NOT_FIT))) {
                let refused = ApiError::validation(format!("The arguments do not match the tool's parameters:{detail}."));
                return outcome(Err::<(), _>(refused)).await.map(Into::into);
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
