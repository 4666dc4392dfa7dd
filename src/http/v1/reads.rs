//! Query-string helpers shared by the read endpoints: errors in the published envelope rather than
//! the framework's plain-text rejections.

use crate::http::error::ApiError;
use std::collections::HashMap;

pub type Params = HashMap<String, String>;

pub fn required<'a>(params: &'a Params, name: &str) -> Result<&'a str, ApiError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::invalid_field(name, format!("`{name}` is required.")))
}

/// `limit`: a positive integer, `default` when absent, and never more than `cap` (the published
/// maximum: larger values are capped, not refused).
pub fn limit(params: &Params, default: i64, cap: i64) -> Result<i64, ApiError> {
    match params.get("limit") {
        None => Ok(default),
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if n >= 1 => Ok(n.min(cap)),
            _ => Err(ApiError::invalid_field("limit", format!("`limit` must be a whole number from 1 to {cap}."))),
        },
    }
}

/// `cursor`: a `c<position>` this API returned, if one is given.
pub fn cursor(params: &Params) -> Result<Option<i64>, ApiError> {
    params
        .get("cursor")
        .map(|raw| {
            raw.strip_prefix('c')
                .and_then(|p| p.parse::<i64>().ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| ApiError::invalid_field("cursor", "`cursor` is not one this API returned."))
        })
        .transpose()
}

/// Of the `limit + 1` rows fetched (one more than asked tells whether there is a next page), keep
/// `limit`; the cursor of the next page (`cursor_of` its last row), if there is one.
pub fn next_page<T>(rows: &mut Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> String) -> Option<String> {
    if rows.len() as i64 <= limit {
        return None;
    }
    rows.truncate(limit as usize);
    rows.last().map(cursor_of)
}

/// The cursor [`cursor`] reads: a list position.
pub fn position_cursor(position: i64) -> String {
    format!("c{position}")
}

pub fn boolean(params: &Params, name: &str) -> Result<Option<bool>, ApiError> {
    match params.get(name).map(String::as_str) {
        None => Ok(None),
        Some("true") | Some("1") => Ok(Some(true)),
        Some("false") | Some("0") => Ok(Some(false)),
        Some(_) => Err(ApiError::invalid_field(name, format!("`{name}` must be true or false."))),
    }
}
