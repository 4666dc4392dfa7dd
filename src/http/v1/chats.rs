//! `GET /v1/chats`: a line's chats, most recent first; `POST /v1/chats/archive`.

use super::reads::{self, Params};
use crate::api::error::ApiError;
use crate::api::fields::parse_line_id;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::commands::chats::{self as chat_commands, ArchiveRequest};
use crate::queries::chats::{self as chat_queries, ChatFilter};
use axum::extract::{Query, State};
use axum::Json;

pub use crate::commands::chats::ArchiveResponse;
pub use crate::queries::chats::{ChatView, ChatsResponse, MAX_CHATS};

/// List chats.
#[utoipa::path(get, path = "/v1/chats", tag = "messages", operation_id = "listChats",
    params(("line_id" = String, Query, description = "The line"),
        ("archived" = Option<bool>, Query, description = "true: only archived chats; false: only the others; absent: both"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 9223372036854775807_i64, description = "How many chats (default and maximum 500; larger values are taken as 500)"),
        ("cursor" = Option<String>, Query, pattern = r"^c-?[0-9]{1,18}_([0-9]{1,20}|g[1-9][0-9]{4,24}(-[1-9][0-9]{4,14})?)$", description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "The line's chats, most recent activity first", body = ChatsResponse)),
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

/// Archive (or unarchive) a chat.
#[utoipa::path(post, path = "/v1/chats/archive", tag = "messages", operation_id = "archiveChat", request_body = ArchiveRequest,
    responses((status = 200, description = "The chat's archived state", body = ArchiveResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn archive(
    State(state): State<AppState>,
    tenant: Tenant,
    crate::http::extract::Json(body): crate::http::extract::Json<ArchiveRequest>,
) -> Result<Json<ArchiveResponse>, ApiError> {
    chat_commands::archive(&state, &tenant.caller(), body).await.map(Json)
}
