//! How domain events are named, versioned and turned into the log's `(event_type, payload)` pair.

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// A domain event enum. Each variant is serialized with an internal `"type"` tag equal to its
/// `event_type` (e.g. `account.opened`); the tag is stored in its own column, not in the payload.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + std::fmt::Debug {
    /// The schema version written for new events of this type.
    fn schema_version(&self) -> i32 {
        1
    }

    /// Bring a payload written with an older `schema_version` up to the current shape. Old rows are
    /// never rewritten in place; they are upcast each time they are read.
    fn upcast(_event_type: &str, _schema_version: i32, payload: Value) -> Value {
        payload
    }

    /// The `(event_type, payload)` pair stored in the log.
    fn to_stored(&self) -> (String, Value) {
        let mut value = serde_json::to_value(self).expect("domain events serialize");
        let event_type = value
            .as_object_mut()
            .and_then(|o| o.remove("type"))
            .and_then(|t| t.as_str().map(str::to_owned))
            .expect("domain events are internally tagged with `type`");
        (event_type, value)
    }

    /// Read back an event stored by `to_stored`, upcasting older schema versions first.
    fn from_stored(event_type: &str, schema_version: i32, payload: Value) -> Result<Self, EventDecodeError> {
        let mut value = Self::upcast(event_type, schema_version, payload);
        match value.as_object_mut() {
            Some(o) => {
                o.insert("type".into(), Value::String(event_type.to_owned()));
            }
            None => return Err(EventDecodeError::NotAnObject(event_type.to_owned())),
        }
        serde_json::from_value(value).map_err(|e| EventDecodeError::Shape(event_type.to_owned(), e.to_string()))
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EventDecodeError {
    #[error("payload of {0} is not a JSON object")]
    NotAnObject(String),
    #[error("payload of {0} does not match its schema: {1}")]
    Shape(String, String),
}
