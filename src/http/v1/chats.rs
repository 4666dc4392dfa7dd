//! `GET /v1/chats`: a line's chats, most recent first; `POST /v1/chats/archive`.

use super::reads::{self, Params};
use crate::api::error::ApiError;
use crate::api::fields::parse_line_id;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::commands::chats::{self as chat_commands, ChatToArchive};
use crate::queries::chats::{self as chat_queries, ChatFilter};
use axum::extract::{Query, State};
use axum::Json;
use utoipa::ToSchema;

pub use crate::commands::chats::ArchiveResponse;
pub use crate::queries::chats::{ChatView, ChatsResponse, MAX_CHATS};

/// List chats.
#[utoipa::path(get, path = "/v1/chats", tag = "messages",
    params(("line_id" = String, Query), ("archived" = Option<bool>, Query),
        ("limit" = Option<i64>, Query, description = "1 to 500 (default 500, the published maximum)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, body = ChatsResponse), (status = 404, description = "line_not_found")),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(params): Query<Params>,
) -> Result<Json<ChatsResponse>, ApiError> {
    let filter = ChatFilter {
        line_id: parse_line_id(reads::required(&params, "line_id")?)?,
        limit: reads::limit(&params, MAX_CHATS)?,
        archived: reads::boolean(&params, "archived")?,
        cursor: params.get("cursor").cloned(),
    };
    chat_queries::list(&state, &tenant.identity.account_id, filter).await.map(Json)
}

#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ArchiveRequest {
    pub line_id: Option<String>,
    /// The chat: a phone in international format (or its jid).
    pub phone: Option<String>,
    /// `true` (default) archives, `false` unarchives.
    pub archive: Option<bool>,
}

/// Archive (or unarchive) a chat.
#[utoipa::path(post, path = "/v1/chats/archive", tag = "messages", request_body = ArchiveRequest,
    responses((status = 200, body = ArchiveResponse)), security(("bearer" = []), ("bridge_key" = [])))]
pub async fn archive(
    State(state): State<AppState>,
    tenant: Tenant,
    crate::http::extract::Json(body): crate::http::extract::Json<ArchiveRequest>,
) -> Result<Json<ArchiveResponse>, ApiError> {
    let ArchiveRequest { line_id, phone, archive } = body;
    chat_commands::archive(&state, &tenant, ChatToArchive { line_id, phone, archive }).await.map(Json)
}
