//! The read side: what REST handlers and MCP tools read, as typed results. Every query is scoped
//! by the caller's account; another account's line or webhook is `…_not_found`.
//!
//! Lists page by keyset: a query fetches one row more than asked to know whether there is a next
//! page, and answers an opaque `next_cursor` (null on the last page).

pub mod account;
pub mod activity;
pub mod chats;
pub mod keys;
pub mod lines;
pub mod messages;
pub mod owned;
pub mod webhook_deliveries;
pub mod webhooks;

use crate::api::error::ApiError;

/// A page size: `default` when not given, at least 1, and never more than `cap` (the published
/// maximum: larger values are capped, not refused).
pub fn page_limit(limit: Option<i64>, default: i64, cap: i64) -> Result<i64, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if n >= 1 => Ok(n.min(cap)),
        Some(_) => Err(invalid_limit(cap)),
    }
}

/// The refusal of a `limit` that is no whole number from 1 to `cap`.
pub fn invalid_limit(cap: i64) -> ApiError {
    ApiError::invalid_field("limit", format!("`limit` must be a whole number from 1 to {cap}."))
}

/// A `c<position>` cursor this API returned, if one is given.
pub fn position_cursor(cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
    cursor
        .map(|raw| raw.strip_prefix('c').and_then(|p| p.parse::<i64>().ok()).filter(|p| *p > 0).ok_or_else(foreign_cursor))
        .transpose()
}

/// The cursor [`position_cursor`] reads: a list position.
pub fn cursor_at(position: i64) -> String {
    format!("c{position}")
}

/// The refusal of a cursor this API did not return.
pub fn foreign_cursor() -> ApiError {
    ApiError::invalid_field("cursor", "`cursor` is not one this API returned.")
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
