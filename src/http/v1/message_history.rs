//! `GET /v1/messages`: the messages of one chat, newest first, a page at a time.

use super::reads::{self, Params};
use crate::api::error::ApiError;
use crate::api::fields::{parse_line_id, parse_phone};
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::queries::messages::{self as message_queries, MessageFilter};
use axum::extract::{Query, State};
use axum::Json;

pub use crate::queries::messages::{MessageView, MessagesResponse, MAX_MESSAGES};

/// Read messages.
#[utoipa::path(get, path = "/v1/messages", tag = "messages",
    params(("line_id" = String, Query), ("phone" = String, Query, description = "The chat: a phone in international format, or its jid"),
        ("limit" = Option<i64>, Query, description = "1 to 200 (default 200, the published maximum)"), ("cursor" = Option<String>, Query)),
    responses((status = 200, body = MessagesResponse), (status = 404, description = "line_not_found")),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn list(
    State(state): State<AppState>,
    tenant: Tenant,
    Query(params): Query<Params>,
) -> Result<Json<MessagesResponse>, ApiError> {
    let filter = MessageFilter {
        line_id: parse_line_id(reads::required(&params, "line_id")?)?,
        phone: parse_phone("phone", reads::required(&params, "phone")?)?,
        limit: reads::limit(&params, MAX_MESSAGES)?,
        cursor: params.get("cursor").cloned(),
    };
    message_queries::list(&state, &tenant.identity.account_id, filter).await.map(Json)
}
