//! The `Idempotency-Key` (a REST header, an MCP argument): validated, and paired with a hash of
//! the request so that the same key with another body can be told apart from a retry.

use super::error::ApiError;
use axum::http::HeaderMap;
use domain::message::Idempotency;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const HEADER: &str = "idempotency-key";

/// A key as given: 1 to 255 visible ASCII characters once trimmed.
/// What [`parse_key`] accepts, for the OpenAPI document: 1 to 255 visible ASCII characters.
pub const KEY_PATTERN: &str = r"^[\x21-\x7e]{1,255}$";

pub fn parse_key(raw: &str) -> Option<String> {
    let key = raw.trim();
    ((1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())).then(|| key.to_owned())
}

/// The `Idempotency-Key` header, if the client sent one.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER) else { return Ok(None) };
    match value.to_str().ok().and_then(parse_key) {
        Some(k) => Ok(Some(k)),
        None => Err(ApiError::invalid_field("Idempotency-Key", "Idempotency-Key must be 1 to 255 visible ASCII characters.")),
    }
}

/// The key and a hash of (endpoint, request). The request is hashed in a canonical form (keys
/// sorted), so a client that re-serialises the same object in another key order is still retrying.
pub fn for_request(key: Option<String>, endpoint: &str, request: &impl Serialize) -> Option<Idempotency> {
    let request = serde_json::to_value(request).unwrap_or(Value::Null);
    key.map(|key| {
        let mut hasher = Sha256::new();
        hasher.update(endpoint.as_bytes());
        hasher.update([0]);
        write_canonical(&request, &mut hasher);
        Idempotency { key, request_hash: hex::encode(hasher.finalize()) }
    })
}

fn write_canonical(value: &Value, out: &mut Sha256) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.update(b"{");
            for (k, v) in entries {
                out.update(serde_json::to_string(k).expect("string").as_bytes());
                out.update(b":");
                write_canonical(v, out);
                out.update(b",");
            }
            out.update(b"}");
        }
        Value::Array(items) => {
            out.update(b"[");
            for v in items {
                write_canonical(v, out);
                out.update(b",");
            }
            out.update(b"]");
        }
        other => out.update(other.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER, key.parse().unwrap());
        h
    }

    #[test]
    fn the_documented_pattern_admits_exactly_the_keys_accepted() {
        let pattern = regex::Regex::new(KEY_PATTERN).unwrap();
        for key in ["order-1001", "a", &"x".repeat(255), "a b", "", &"x".repeat(256), "ñ", "tab\there", "~!@#$%^&*()"] {
            assert_eq!(pattern.is_match(key), parse_key(key).is_some(), "{key:?}");
        }
    }

    #[test]
    fn key_order_does_not_change_the_hash_but_values_and_endpoints_do() {
        let h = key(&headers("order-1001")).unwrap();
        let a = for_request(h.clone(), "send", &json!({"to": "+34600000000", "message": "hi"})).unwrap();
        let reordered: Value = serde_json::from_str(r#"{"message":"hi","to":"+34600000000"}"#).unwrap();
        let b = for_request(h.clone(), "send", &reordered).unwrap();
        assert_eq!(a, b);
        let c = for_request(h.clone(), "send", &json!({"to": "+34600000000", "message": "hi!"})).unwrap();
        assert_ne!(a.request_hash, c.request_hash);
        let d = for_request(h, "reply", &json!({"to": "+34600000000", "message": "hi"})).unwrap();
        assert_ne!(a.request_hash, d.request_hash);
    }

    #[test]
    fn malformed_keys_are_rejected() {
        assert!(key(&headers(&"k".repeat(256))).is_err());
        assert!(key(&headers("has space")).is_err());
        assert_eq!(key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(parse_key(" order-1 "), Some("order-1".to_owned()));
        assert_eq!(parse_key("pedido-ñ"), None);
    }
}
