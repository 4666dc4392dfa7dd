//! The OpenAPI 3.1 document served at `/api/bridge/v1/openapi.json`.
//!
//! Paths, parameters, request and success bodies come from the handlers' `#[utoipa::path]`
//! attributes and the request types (whose field schemas are in [`crate::api::schemas`]). The errors
//! come from [`ERRORS`]: every error code an operation can answer, grouped by status into the
//! two published envelopes. The document is built once per process and variant (see
//! [`document`]).

use crate::api::error::{Envelope, ErrorCode, ErrorCode::*};
use crate::api::schemas;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "WAzion Bridge API",
        description = "REST to send and read WhatsApp, signed webhooks to receive. Authenticate every request with an API key \
                       (`Authorization: Bearer wzb_live_…`, or `X-Bridge-Key`). Every response carries `X-Request-Id`.",
        version = "1.0.0"
    ),
    servers((url = "/api/bridge", description = "This server")),
    paths(
        super::v1::me::me,
        super::v1::usage::usage,
        super::v1::lines::create,
        super::v1::lines::list,
        super::v1::lines::get,
        super::v1::lines::logout,
        super::v1::lines::qr,
        super::v1::lines::pairing_code,
        super::v1::sandbox::scan,
        super::v1::sandbox::disconnect,
        super::v1::sandbox::inbound,
        super::v1::sandbox::fault,
        super::v1::messages::send,
        super::v1::messages::send_media,
        super::v1::messages::reply,
        super::v1::messages::react,
        super::v1::messages::read,
        super::v1::chats::list,
        super::v1::chats::archive,
        super::v1::message_history::list,
        super::v1::media::get,
        super::v1::webhooks::list,
        super::v1::webhooks::create,
        super::v1::webhooks::get,
        super::v1::webhooks::update,
        super::v1::webhooks::delete,
        super::v1::webhooks::rotate_secret,
        super::v1::webhook_deliveries::test,
        super::v1::webhook_deliveries::list,
        super::v1::webhook_deliveries::retry,
    ),
    // Schemas only parameters refer to (bodies bring theirs).
    components(schemas(
        super::v1::lines::QrFormat,
        super::v1::webhook_deliveries::DeliveryState,
        schemas::Phone,
        schemas::Chat,
    )),
    tags(
        (name = "account", description = "Account, plan, limits and usage"),
        (name = "lines", description = "WhatsApp lines linked by QR code"),
        (name = "messages", description = "Sending and reading messages"),
        (name = "webhooks", description = "Signed event deliveries to your URL"),
        (name = "sandbox", description = "Drive the simulated WhatsApp network of your `sim` lines"),
        (name = "meta", description = "This document"),
    ),
)]
struct ApiDoc;

/// The error codes each operation can answer besides `unauthorized`, `rate_limited` and
/// `server_error`, which every authenticated operation can.
pub const ERRORS: &[(&str, &[ErrorCode])] = &[
    ("getMe", &[]),
    ("getUsage", &[]),
    ("createLine", &[SubscriptionRequired, ValidationError, LineLimitReached]),
    ("listLines", &[SubscriptionRequired]),
    ("getLine", &[SubscriptionRequired, LineNotFound]),
    ("logoutLine", &[SubscriptionRequired, LineNotFound]),
    ("getLineQr", &[SubscriptionRequired, ValidationError, LineNotFound, LineNotPendingQr, LineConflict, SessionUnavailable]),
    (
        "requestPairingCode",
        &[SubscriptionRequired, ValidationError, LineNotFound, LineNotPendingQr, LineConflict, SessionUnavailable],
    ),
    ("sandboxScan", &[SubscriptionRequired, ValidationError, LineNotFound, NotASandboxLine, LineConflict]),
    (
        "sandboxDisconnect",
        &[SubscriptionRequired, ValidationError, LineNotFound, NotASandboxLine, LineNotConnected, LineConflict],
    ),
    ("sandboxInbound", &[SubscriptionRequired, ValidationError, LineNotFound, NotASandboxLine, LineNotConnected]),
    ("sandboxFault", &[SubscriptionRequired, ValidationError, LineNotFound, NotASandboxLine]),
    ("sendMessage", SEND),
    ("sendMedia", SEND),
    ("replyMessage", SEND),
    ("reactMessage", &[SubscriptionRequired, ValidationError, LineNotFound, LineNotConnected, QuotaExceeded]),
    ("markRead", &[SubscriptionRequired, ValidationError, LineNotFound, LineNotConnected]),
    ("listChats", &[SubscriptionRequired, ValidationError, LineNotFound]),
    ("archiveChat", &[SubscriptionRequired, ValidationError, LineNotFound, LineNotConnected]),
    ("listMessages", &[SubscriptionRequired, ValidationError, LineNotFound]),
    ("getMessageMedia", &[SubscriptionRequired, NotFound, Forbidden, SessionUnavailable]),
    ("listWebhooks", &[SubscriptionRequired]),
    ("createWebhook", &[SubscriptionRequired, ValidationError, LineNotFound]),
    ("getWebhook", &[SubscriptionRequired, WebhookNotFound]),
    ("updateWebhook", &[SubscriptionRequired, ValidationError, WebhookNotFound]),
    ("deleteWebhook", &[SubscriptionRequired, WebhookNotFound]),
    ("rotateWebhookSecret", &[SubscriptionRequired, WebhookNotFound]),
    ("testWebhook", &[SubscriptionRequired, WebhookNotFound, DeliveryHeld, QuotaExceeded]),
    ("listWebhookDeliveries", &[SubscriptionRequired, ValidationError, WebhookNotFound]),
    (
        "retryWebhookDelivery",
        &[SubscriptionRequired, WebhookNotFound, DeliveryNotFound, DeliveryInFlight, DeliveryHeld, QuotaExceeded],
    ),
];

const SEND: &[ErrorCode] =
    &[SubscriptionRequired, ValidationError, LineNotFound, LineNotConnected, IdempotencyConflict, QuotaExceeded];
/// What every authenticated operation can answer.
const ALWAYS: &[ErrorCode] = &[Unauthorized, RateLimited, ServerError];

/// What each status means, for the response descriptions.
fn status_meaning(status: u16) -> &'static str {
    match status {
        400 => "Fields are missing or invalid",
        401 => "Missing, invalid or revoked API key",
        402 => "The Bridge subscription of the account is not active",
        404 => "Not found in your account",
        409 => "In conflict with the resource's state",
        413 => "The request body is too large",
        429 => "Rate limit or plan quota exceeded",
        500 => "Internal error; you can try again",
        503 => "Not ready right now; try again in a moment",
        _ => "Error",
    }
}

/// The document, built on first use: one variant for servers that allow webhooks to private
/// (and http) URLs, one for those that do not.
pub fn document_value(allow_private_urls: bool) -> &'static Value {
    static PUBLIC_ONLY: OnceLock<Value> = OnceLock::new();
    static PRIVATE_TOO: OnceLock<Value> = OnceLock::new();
    let cell = if allow_private_urls { &PRIVATE_TOO } else { &PUBLIC_ONLY };
    cell.get_or_init(|| build(allow_private_urls))
}

pub async fn document(State(state): State<super::AppState>) -> Response {
    static BYTES: OnceLock<[Vec<u8>; 2]> = OnceLock::new();
    let bytes = BYTES.get_or_init(|| {
        [false, true].map(|private| serde_json::to_vec(document_value(private)).expect("the document serialises"))
    });
    let body = bytes[usize::from(state.config.allow_private_urls)].clone();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn build(allow_private_urls: bool) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    let components = doc["components"].as_object_mut().expect("the document has components");
    components.insert("securitySchemes".into(), security_schemes());
    components.insert("responses".into(), shared_responses());
    components.insert(
        "headers".into(),
        json!({"RequestId": {"description": "Identifies the request for support and in the server's logs.",
                             "schema": {"type": "string"}}}),
    );
    let schemas = components.get_mut("schemas").and_then(Value::as_object_mut).expect("components have schemas");
    schemas.insert("StandardError".into(), standard_error_schema());
    schemas.insert("FlatError".into(), flat_error_schema());
    // The chat of a read is named by `phone` or by `jid`: one of them at least.
    schemas["ReadRequest"]["anyOf"] = json!([{"required": ["phone"]}, {"required": ["jid"]}]);
    if allow_private_urls {
        schemas["WebhookUrl"]["pattern"] = json!(schemas::HTTP_URL_PATTERN);
        schemas["WebhookUrl"]["description"] =
            json!("An http(s) URL that receives the events (this server's operator allows private addresses).");
    }
    let paths = doc["paths"].as_object_mut().expect("the document has paths");
    for operations in paths.values_mut() {
        for (_, operation) in operations.as_object_mut().expect("a path item is an object").iter_mut() {
            add_idempotency_key(operation);
            add_errors(operation);
            add_request_id_header(operation);
        }
    }
    paths.insert("/v1/openapi.json".into(), openapi_path());
    doc
}

fn security_schemes() -> Value {
    json!({
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "wzb_live_…",
                   "description": "`Authorization: Bearer wzb_live_…`: an API key from the console."},
        "bridge_key": {"type": "apiKey", "in": "header", "name": "X-Bridge-Key",
                       "description": "The same API key in `X-Bridge-Key`."}
    })
}

fn standard_error_schema() -> Value {
    let codes: Vec<&str> = every_code().filter(|c| c.envelope() == Envelope::Standard).map(ErrorCode::as_str).collect();
    json!({
        "type": "object",
        "description": "Authentication, account and server errors.",
        "required": ["ok", "error"],
        "properties": {
            "ok": {"const": false},
            "error": {
                "type": "object",
                "required": ["code", "message", "retryable"],
                "properties": {
                    "code": {"type": "string", "enum": codes},
                    "message": {"type": "string"},
                    "retryable": {"type": "boolean", "description": "Whether the same request may succeed later."}
                }
            }
        },
        "examples": [{"ok": false, "error": {"code": "unauthorized", "message": "Invalid or revoked API key.", "retryable": false}}]
    })
}

fn flat_error_schema() -> Value {
    let codes: Vec<&str> = every_code().filter(|c| c.envelope() == Envelope::Flat).map(ErrorCode::as_str).collect();
    json!({
        "type": "object",
        "description": "Validation and business errors: the code, a message, and details that depend on the code \
                        (`field` for validation errors; `metric`, `used`, `limit` and `plan` for quotas; \
                        `retryable` for rate limits, with a `Retry-After` header).",
        "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "enum": codes},
            "message": {"type": "string"},
            "field": {"type": "string", "description": "The field a validation error is about."},
            "retryable": {"type": "boolean"},
            "metric": {"type": "string"},
            "used": {"type": "integer"},
            "limit": {"type": "integer"},
            "plan": {"type": "string"}
        },
        "examples": [{"error": "quota_exceeded", "message": "Monthly quota exceeded", "metric": "sent_messages",
                      "used": 10000, "limit": 10000, "plan": "pro"}]
    })
}

/// The codes the documented operations can answer, in [`ErrorCode::ALL`]'s order.
fn every_code() -> impl Iterator<Item = ErrorCode> {
    let used: Vec<ErrorCode> = ALWAYS.iter().chain(ERRORS.iter().flat_map(|(_, codes)| codes.iter())).copied().collect();
    ErrorCode::ALL.into_iter().filter(move |code| used.contains(code))
}

/// The operations that take an `Idempotency-Key` (the published sends).
const IDEMPOTENT: &[&str] = &["sendMessage", "sendMedia", "replyMessage"];

fn add_idempotency_key(operation: &mut Value) {
    if !IDEMPOTENT.contains(&operation["operationId"].as_str().unwrap_or_default()) {
        return;
    }
    let header = json!({
        "name": "Idempotency-Key",
        "in": "header",
        "required": false,
        "description": "Makes retries safe for 24 hours: the same key with the same body returns the first answer \
                        (with `Idempotent-Replayed: true`); with another body, 409 idempotency_conflict.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": crate::api::idempotency::KEY_PATTERN}
    });
    operation
        .as_object_mut()
        .expect("an operation is an object")
        .entry("parameters")
        .or_insert_with(|| json!([]))
        .as_array_mut()
        .expect("parameters are a list")
        .push(header);
}

/// The operation's error responses, one per status, each naming its codes.
fn add_errors(operation: &mut Value) {
    let id = operation["operationId"].as_str().expect("every operation has an operationId").to_owned();
    let (_, specific) = ERRORS.iter().find(|(op, _)| *op == id).unwrap_or_else(|| panic!("no ERRORS entry for `{id}`"));
    let has_body = operation.get("requestBody").is_some();
    let mut by_status: std::collections::BTreeMap<u16, Vec<ErrorCode>> = Default::default();
    for code in ALWAYS.iter().chain(specific.iter()) {
        by_status.entry(code.status().as_u16()).or_default().push(*code);
    }
    let responses = operation["responses"].as_object_mut().expect("an operation has responses");
    for (status, codes) in by_status {
        let response = match shared_response(&codes) {
            Some(name) => json!({"$ref": format!("#/components/responses/{name}")}),
            None => error_response(status, codes[0].envelope(), &codes),
        };
        responses.insert(status.to_string(), response);
    }
    if has_body {
        responses.insert("413".into(), json!({"$ref": "#/components/responses/BodyTooLarge"}));
    }
}

/// The error responses many operations share, under `components/responses`: the name of the one
/// that answers exactly `codes`.
fn shared_response(codes: &[ErrorCode]) -> Option<&'static str> {
    SHARED_RESPONSES.iter().find(|(_, code)| codes == [*code]).map(|(name, _)| *name)
}

const SHARED_RESPONSES: &[(&str, ErrorCode)] = &[
    ("Unauthorized", Unauthorized),
    ("SubscriptionRequired", SubscriptionRequired),
    ("RateLimited", RateLimited),
    ("ServerError", ServerError),
    ("ValidationError", ValidationError),
];

fn shared_responses() -> Value {
    let mut responses: Map<String, Value> = SHARED_RESPONSES
        .iter()
        .map(|(name, code)| ((*name).to_owned(), error_response(code.status().as_u16(), code.envelope(), &[*code])))
        .collect();
    responses.insert("BodyTooLarge".into(), error_response(413, Envelope::Flat, &[ValidationError]));
    for response in responses.values_mut() {
        response["headers"]["X-Request-Id"] = json!({"$ref": "#/components/headers/RequestId"});
    }
    Value::Object(responses)
}

fn error_response(status: u16, envelope: Envelope, codes: &[ErrorCode]) -> Value {
    let list = codes.iter().map(|c| format!("`{}`", c.as_str())).collect::<Vec<_>>().join(", ");
    let codes: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
    let schema = match envelope {
        Envelope::Standard => json!({"allOf": [{"$ref": "#/components/schemas/StandardError"},
            {"properties": {"error": {"properties": {"code": {"enum": codes}}}}}]}),
        Envelope::Flat => json!({"allOf": [{"$ref": "#/components/schemas/FlatError"},
            {"properties": {"error": {"enum": codes}}}]}),
    };
    let mut response = json!({
        "description": format!("{}: {list}", status_meaning(status)),
        "content": {"application/json": {"schema": schema}}
    });
    if status == 429 {
        response["headers"] = json!({"Retry-After": {"description": "Seconds to wait before retrying (rate_limited).",
                                                      "schema": {"type": "integer", "minimum": 1}}});
    }
    response
}

fn add_request_id_header(operation: &mut Value) {
    let header = json!({"$ref": "#/components/headers/RequestId"});
    for response in operation["responses"].as_object_mut().into_iter().flat_map(Map::values_mut) {
        if response.get("$ref").is_some() {
            continue; // a shared response, which has the header already
        }
        let headers = response.as_object_mut().expect("a response is an object").entry("headers").or_insert_with(|| json!({}));
        headers["X-Request-Id"] = header.clone();
    }
}

fn openapi_path() -> Value {
    json!({"get": {
        "tags": ["meta"],
        "summary": "This document.",
        "operationId": "getOpenApiDocument",
        "security": [],
        "responses": {"200": {"description": "The OpenAPI 3.1 document of this API",
                              "headers": {"X-Request-Id": {"$ref": "#/components/headers/RequestId"}},
                              "content": {"application/json": {"schema": {"type": "object"}}}}}
    }})
}
