//! Query-string helpers shared by the read endpoints: errors in the published envelope rather than
//! the framework's plain-text rejections. What a value means (a limit's range, a cursor) is the
//! query's to check (see [`crate::queries`]); here the text only becomes a value.

use crate::api::error::ApiError;
use std::collections::HashMap;

pub type Params = HashMap<String, String>;

pub fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::invalid_field(name, format!("`{name}` is required.")))
}

/// `limit` as a number, if given (`cap` names the published maximum in the refusal).
pub fn limit(params: &Params, cap: i64) -> Result<Option<i64>, ApiError> {
    params.get("limit").map(|raw| raw.parse::<i64>().map_err(|_| crate::queries::invalid_limit(cap))).transpose()
}

pub fn boolean(params: &Params, name: &str) -> Result<Option<bool>, ApiError> {
    match params.get(name).map(String::as_str) {
        None => Ok(None),
        Some("true") | Some("1") => Ok(Some(true)),
        Some("false") | Some("0") => Ok(Some(false)),
        Some(_) => Err(ApiError::invalid_field(name, format!("`{name}` must be true or false."))),
    }
}
