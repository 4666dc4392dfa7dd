//! JSON bodies (REST) and arguments (MCP) parsed into typed requests, with every refusal a
//! `validation_error` in the published envelope.

use super::error::ApiError;
use axum::extract::rejection::JsonRejection;
use serde::de::DeserializeOwned;

/// A JSON body as `T`: NUL characters refused first, then every rejection a `validation_error`.
pub fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    super::nul::refuse_in_json(body)?;
    match axum::Json::<T>::from_bytes(body) {
        Ok(axum::Json(value)) => Ok(value),
        Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::validation(format!(
            "The body is not valid JSON: {}",
            e.body_text().trim_start_matches("Failed to parse the request body as JSON: ")
        ))),
        Err(JsonRejection::JsonDataError(e)) => Err(ApiError::validation(format!(
            "The body does not match the expected fields: {}",
            e.body_text().trim_start_matches("Failed to deserialize the JSON body into the target type: ")
        ))),
        Err(other) => Err(ApiError::validation(other.body_text())),
    }
}
