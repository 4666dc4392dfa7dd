//! Request fields checked into domain values, the same way whether they came in a REST body or as
//! MCP tool arguments. Each refusal is a `validation_error` naming the field, except an id that
//! cannot exist, which is the resource's `…_not_found` like an id of another account.

use super::error::{ApiError, ErrorCode};
use domain::chat_id::ChatId;
use domain::ids::LineId;
use domain::message::{ArchivePolicy, MediaType, MessageText};
use domain::phone::PhoneNumber;

pub fn required<'a>(field: &str, value: &'a Option<String>) -> Result<&'a str, ApiError> {
    value.as_deref().ok_or_else(|| ApiError::invalid_field(field, format!("`{field}` is required.")))
}

/// A line id as given: a malformed one cannot exist, so it is `line_not_found` too.
pub fn parse_line_id(raw: &str) -> Result<LineId, ApiError> {
    let line_id = LineId::parse(raw).map_err(|_| ErrorCode::LineNotFound)?;
    // The request's log lines name the line it acts on.
    tracing::Span::current().record("line_id", line_id.as_str());
    Ok(line_id)
}

/// The required `line_id`.
pub fn line_id(value: &Option<String>) -> Result<LineId, ApiError> {
    parse_line_id(required("line_id", value)?)
}

/// A required phone number (or WhatsApp jid).
pub fn phone(field: &str, value: &Option<String>) -> Result<PhoneNumber, ApiError> {
    parse_phone(field, required(field, value)?)
}

/// A phone number (or WhatsApp jid) as given.
pub fn parse_phone(field: &str, raw: &str) -> Result<PhoneNumber, ApiError> {
    PhoneNumber::parse_phone_or_jid(raw).map_err(|e| ApiError::invalid_field(field, format!("{e}.")))
}

/// A required chat: a phone number, its jid, or a group's jid.
pub fn chat(field: &str, value: &Option<String>) -> Result<ChatId, ApiError> {
    parse_chat(field, required(field, value)?)
}

/// A chat as given: a phone number, its jid, or a group's jid.
pub fn parse_chat(field: &str, raw: &str) -> Result<ChatId, ApiError> {
    ChatId::parse(raw).map_err(|e| ApiError::invalid_field(field, format!("{e}.")))
}

pub fn text(field: &str, value: &str) -> Result<MessageText, ApiError> {
    MessageText::parse(value).map_err(|e| ApiError::invalid_field(field, format!("`{field}` {e}.")))
}

/// An optional caption: empty is none.
pub fn caption(value: &Option<String>) -> Result<Option<MessageText>, ApiError> {
    value.as_deref().filter(|c| !c.is_empty()).map(|c| text("caption", c)).transpose()
}

/// `never` when not given.
pub fn archive_policy(value: &Option<String>) -> Result<ArchivePolicy, ApiError> {
    match value.as_deref() {
        None => Ok(ArchivePolicy::default()),
        Some(v) => ArchivePolicy::parse(v).ok_or_else(|| {
            ApiError::invalid_field(
                "archive_policy",
                "`archive_policy` must be one of never, always, preserve_if_previously_archived.",
            )
        }),
    }
}

/// `image` when not given.
pub fn media_type(value: &Option<String>) -> Result<MediaType, ApiError> {
    value
        .as_deref()
        .map_or(Some(MediaType::Image), MediaType::parse)
        .ok_or_else(|| ApiError::invalid_field("media_type", "`media_type` must be one of image, video, audio, document."))
}

/// http(s) URLs with a host, at most 2048 characters. Whether the host may be fetched is decided
/// when the file is downloaded.
pub fn media_url(value: &Option<String>) -> Result<String, ApiError> {
    let raw = required("media_url", value)?;
    let parsed = reqwest::Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some() && raw.len() <= 2048)
        .filter(|_| super::schemas::is_url(raw, false));
    parsed
        .map(|u| u.to_string())
        .ok_or_else(|| ApiError::invalid_field("media_url", "`media_url` must be a public http or https URL."))
}
