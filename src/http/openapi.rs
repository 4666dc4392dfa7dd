//! The OpenAPI document, generated from the handlers and response types, served at
//! `/api/bridge/v1/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "WAzion Bridge API", description = "REST to send and read WhatsApp, signed webhooks to receive."),
    servers((url = "/api/bridge", description = "This server")),
    paths(
        super::v1::me::me,
        super::v1::usage::usage,
        super::v1::lines::create,
        super::v1::lines::list,
        super::v1::lines::get,
        super::v1::lines::logout,
        super::v1::lines::qr,
        super::v1::messages::send,
        super::v1::messages::send_media,
        super::v1::messages::reply,
        super::v1::messages::react,
        super::v1::messages::read,
        super::v1::chats::list,
        super::v1::chats::archive,
        super::v1::webhooks::list,
        super::v1::webhooks::create,
        super::v1::webhooks::get,
        super::v1::webhooks::update,
        super::v1::webhooks::delete,
        super::v1::webhooks::rotate_secret,
        super::v1::webhook_deliveries::test,
        super::v1::webhook_deliveries::list,
        super::v1::webhook_deliveries::retry,
        super::v1::message_history::list,
    ),
    modifiers(&Security),
    tags(
        (name = "account", description = "Account, plan, limits and usage"),
        (name = "lines", description = "WhatsApp lines linked by QR code"),
        (name = "messages", description = "Sending and reading messages"),
        (name = "webhooks", description = "Signed event deliveries to your URL"),
    ),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("wzb_live_…").build()),
        );
        components.add_security_scheme("bridge_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Bridge-Key"))));
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
