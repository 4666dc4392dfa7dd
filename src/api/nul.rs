//! NUL characters (U+0000) in text are refused at the door as `validation_error` naming the field.
//! PostgreSQL stores a NUL neither in `text` nor in `jsonb`, so one that reached a query or the
//! event log failed as a retryable 500, and clients retried it forever.
//!
//! In JSON a NUL can only be written as the escape `\u0000` (raw control characters are not valid
//! JSON), so a body is scanned for that escape first; only a body that has it is parsed to find
//! the field. The same goes for `%00` in a query string.

use super::error::ApiError;
use serde_json::{Map, Value};

const ESCAPE: &[u8] = br"\u0000";

/// A JSON body with a NUL in any string (or key): the error naming where, e.g. `message`.
pub fn refuse_in_json(body: &[u8]) -> Result<(), ApiError> {
    if !body.windows(ESCAPE.len()).any(|w| w == ESCAPE) {
        return Ok(());
    }
    // `\\u0000` (an escaped backslash) also matches the scan; parsing tells them apart. A body that
    // does not parse is left for the JSON parser to reject.
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => refuse_in_fields(&fields),
        Ok(value) => find(&value).map_or(Ok(()), |path| Err(refused(if path.is_empty() { "body" } else { &path }))),
        Err(_) => Ok(()),
    }
}

/// Fields already parsed (MCP tool arguments).
pub fn refuse_in_fields(fields: &Map<String, Value>) -> Result<(), ApiError> {
    match fields.iter().find_map(|(key, value)| in_field(key, value)) {
        Some(path) => Err(refused(&path)),
        None => Ok(()),
    }
}

/// A query string with a NUL in a parameter's name or value.
pub fn refuse_in_query(query: &str) -> Result<(), ApiError> {
    if !query.contains("%00") {
        return Ok(());
    }
    match url::form_urlencoded::parse(query.as_bytes()).find(|(name, value)| name.contains('\0') || value.contains('\0')) {
        Some((name, _)) => Err(refused(&name.replace('\0', "\\u0000"))),
        None => Ok(()),
    }
}

fn refused(field: &str) -> ApiError {
    ApiError::invalid_field(field, format!("`{field}` contains a NUL character (\\u0000), which is not allowed in text."))
}

fn in_field(key: &str, value: &Value) -> Option<String> {
    if key.contains('\0') {
        return Some(key.replace('\0', "\\u0000"));
    }
    find(value).map(|rest| format!("{key}{rest}"))
}

/// Where in `value` a NUL is, as a suffix path (`""` for `value` itself, `.a`, `[2]`…).
fn find(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => s.contains('\0').then(String::new),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| find(item).map(|rest| format!("[{i}]{rest}"))),
        Value::Object(fields) => fields.iter().find_map(|(key, value)| in_field(key, value).map(|path| format!(".{path}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(result: Result<(), ApiError>) -> Option<Value> {
        match result {
            Ok(()) => None,
            Err(refused) => {
                assert_eq!(refused.code, crate::api::error::ErrorCode::ValidationError);
                Some(refused.details["field"].clone())
            }
        }
    }

    #[test]
    fn a_nul_is_found_and_named_wherever_it_is() {
        let body = |v: Value| field(refuse_in_json(v.to_string().as_bytes()));
        assert_eq!(body(json!({"message": "a\u{0}"})), Some(json!("message")));
        assert_eq!(body(json!({"events": ["ok", "x\u{0}"]})), Some(json!("events[1]")));
        assert_eq!(body(json!({"a": {"b": [{"c": "\u{0}"}]}})), Some(json!("a.b[0].c")));
        assert_eq!(body(json!({"k\u{0}": 1})), Some(json!("k\\u0000")));
        assert_eq!(body(json!(["\u{0}"])), Some(json!("[0]")));
        assert_eq!(body(json!({"message": "a backslash and u0000: \\u0000"})), None);
        assert_eq!(body(json!({"message": "plain"})), None);
        assert_eq!(field(refuse_in_json(br#"{"message": "\u0000" "#)), None, "malformed JSON is the parser's to refuse");
        assert_eq!(field(refuse_in_query("stream=a%00b&limit=5")), Some(json!("stream")));
        assert_eq!(field(refuse_in_query("stream=%2500")), None, "an encoded `%00` is text");
    }
}
