//! `GET /v1/messages/{message_id}/media`: the file of a received media message, fetched from
//! WhatsApp when asked for (WhatsApp keeps received files; we keep only what opens them).

use crate::api::error::{ApiError, ErrorCode};
use crate::api::schemas;
use crate::api::tenant::Tenant;
use crate::app::AppState;
use crate::engine::EngineError;
use crate::queries::messages::received_media;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The file of a received image, video, audio or document.
#[utoipa::path(get, path = "/v1/messages/{message_id}/media", tag = "messages", operation_id = "getMessageMedia",
    params(("message_id" = String, Path, description = "A received media message: its `msg_…` id or its WhatsApp id")),
    responses((status = 200, description = "The file, with its content type", content((schemas::Binary = "application/octet-stream")))),
    security(("bearer" = []), ("bridge_key" = [])))]
pub async fn get(State(state): State<AppState>, tenant: Tenant, Path(message_id): Path<String>) -> Result<Response, ApiError> {
    let not_found = || ApiError::new(ErrorCode::NotFound, "No received media message with that id in your account.");
    let (line, message_id) =
        received_media(&state.pool, &tenant.identity.account_id, &message_id).await?.ok_or_else(not_found)?;
    let max_bytes = state.config.media_max_bytes as u64;
    let file = match state.engine.download_media(&line, &message_id, max_bytes).await {
        Ok(Some(file)) => file,
        Ok(None) => return Err(not_found()),
        Err(EngineError::Unavailable(reason)) => {
            return Err(ApiError::new(
                ErrorCode::SessionUnavailable,
                format!("The file cannot be fetched from WhatsApp now: {reason}; try again in a moment."),
            ))
        }
        Err(EngineError::Rejected(reason)) => {
            return Err(ApiError::new(ErrorCode::Forbidden, format!("The file cannot be served: {reason}.")))
        }
    };
    let disposition = format!("attachment; filename=\"{message_id}\"");
    Ok(([(header::CONTENT_TYPE, file.content_type), (header::CONTENT_DISPOSITION, disposition)], file.bytes).into_response())
}
