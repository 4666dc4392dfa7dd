//! REST v1, mounted at both `/api/bridge/v1` and `/v1`.

pub mod chats;
pub mod lines;
pub mod me;
pub mod message_history;
pub mod messages;
pub mod reads;
pub mod sandbox;
pub mod usage;
pub mod webhook_deliveries;
pub mod webhooks;

use super::AppState;
use axum::routing::{get, post};
use axum::Router;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/me", get(me::me))
        .route("/usage", get(usage::usage))
        .route("/lines", get(lines::list).post(lines::create))
        .route("/lines/{line_id}", get(lines::get).delete(lines::logout))
        .route("/lines/{line_id}/qr", get(lines::qr))
        .route("/sandbox/lines/{line_id}/scan", post(sandbox::scan))
        .route("/sandbox/lines/{line_id}/disconnect", post(sandbox::disconnect))
        .route("/sandbox/lines/{line_id}/inbound", post(sandbox::inbound))
        .route("/sandbox/lines/{line_id}/fault", post(sandbox::fault))
        .route("/chats", get(chats::list))
        .route("/chats/archive", post(chats::archive))
        .route("/messages/reply", post(messages::reply))
        .route("/messages/react", post(messages::react))
        .route("/messages/read", post(messages::read))
        .route("/messages", get(message_history::list))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route("/webhooks/{id}", get(webhooks::get).patch(webhooks::update).delete(webhooks::delete))
        .route("/webhooks/{id}/rotate-secret", post(webhooks::rotate_secret))
        .route("/webhooks/{id}/test", post(webhook_deliveries::test))
        .route("/webhooks/{id}/deliveries", get(webhook_deliveries::list))
        .route("/webhooks/{id}/deliveries/{delivery_id}/retry", post(webhook_deliveries::retry))
        .route("/messages/send", post(messages::send))
        .route("/messages/send-media", post(messages::send_media))
        .route("/openapi.json", get(super::openapi::document))
}
