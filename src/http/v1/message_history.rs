//! `GET /v1/messages`: the messages of one chat, newest first, a page at a time.

use super::reads::{self, Params};
use crate::api::error::ApiError;
use crate::api::fields::{parse_chat, parse_line_id};
use crate::api::schemas;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::queries::messages::{self as message_queries, MessageFilter};
use axum::extract::{Query, State};
use axum::Json;

pub use crate::queries::messages::{MessageView, MessagesResponse, MAX_MESSAGES};

/// Read messages.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", operation_id = "listMessages",
    params(("line_id" = String, Query, description = "The line"),
        ("phone" = schemas::Chat, Query, description = "The chat: a phone in international format, its jid, or a group's jid"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 9223372036854775807_i64, description = "How many messages (default and maximum 200; larger values are taken as 200)"),
        ("cursor" = Option<String>, Query, pattern = r"^c[1-9][0-9]{0,17}$", description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "The chat's messages, newest first", body = MessagesResponse)),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(params): Query<Params>,
) -> Result<Json<MessagesResponse>, ApiError> {
    let filter = MessageFilter {
        line_id: parse_line_id(reads::required(&params, "line_id")?)?,
        phone: parse_chat("phone", reads::required(&params, "phone")?)?,
        limit: reads::limit(&params, MAX_MESSAGES)?,
        cursor: params.get("cursor").cloned(),
    };
    message_queries::list(&state, &tenant.identity.account_id, filter).await.map(Json)
}
