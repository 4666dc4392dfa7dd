//! REST v1, mounted at both `/api/bridge/v1` and `/v1`.

pub mod chats;
pub mod lines;
pub mod me;
pub mod media;
pub mod message_history;
pub mod messages;
pub mod reads;
pub mod sandbox;
pub mod usage;
pub mod webhook_deliveries;
pub mod webhooks;

use super::AppState;
use axum::http::Method;
use axum::routing::{delete, get, patch, post, MethodRouter};
use axum::Router;

/// One REST route: its method, its path under the mount points, and its handler.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    handler: MethodRouter<AppState>,
}

fn route(method: Method, path: &'static str, handler: MethodRouter<AppState>) -> Route {
    Route { method, path, handler }
}

/// Every REST route. Tests walk this list: the OpenAPI document must describe exactly these, and
/// the tenant-isolation test must cover each.
pub fn routes() -> Vec<Route> {
    vec![
        route(Method::GET, "/me", get(me::me)),
        route(Method::GET, "/usage", get(usage::usage)),
        route(Method::GET, "/lines", get(lines::list)),
        route(Method::POST, "/lines", post(lines::create)),
        route(Method::GET, "/lines/{line_id}", get(lines::get)),
        route(Method::DELETE, "/lines/{line_id}", delete(lines::logout)),
        route(Method::GET, "/lines/{line_id}/qr", get(lines::qr)),
        route(Method::POST, "/lines/{line_id}/pairing-code", post(lines::pairing_code)),
        route(Method::POST, "/sandbox/lines/{line_id}/scan", post(sandbox::scan)),
        route(Method::POST, "/sandbox/lines/{line_id}/disconnect", post(sandbox::disconnect)),
        route(Method::POST, "/sandbox/lines/{line_id}/inbound", post(sandbox::inbound)),
        route(Method::POST, "/sandbox/lines/{line_id}/fault", post(sandbox::fault)),
        route(Method::GET, "/chats", get(chats::list)),
        route(Method::POST, "/chats/archive", post(chats::archive)),
        route(Method::POST, "/messages/send", post(messages::send)),
        route(Method::POST, "/messages/send-media", post(messages::send_media)),
        route(Method::POST, "/messages/reply", post(messages::reply)),
        route(Method::POST, "/messages/react", post(messages::react)),
        route(Method::POST, "/messages/read", post(messages::read)),
        route(Method::GET, "/messages", get(message_history::list)),
        route(Method::GET, "/messages/{message_id}/media", get(media::get)),
        route(Method::GET, "/webhooks", get(webhooks::list)),
        route(Method::POST, "/webhooks", post(webhooks::create)),
        route(Method::GET, "/webhooks/{id}", get(webhooks::get)),
        route(Method::PATCH, "/webhooks/{id}", patch(webhooks::update)),
        route(Method::DELETE, "/webhooks/{id}", delete(webhooks::delete)),
        route(Method::POST, "/webhooks/{id}/rotate-secret", post(webhooks::rotate_secret)),
        route(Method::POST, "/webhooks/{id}/test", post(webhook_deliveries::test)),
        route(Method::GET, "/webhooks/{id}/deliveries", get(webhook_deliveries::list)),
        route(Method::POST, "/webhooks/{id}/deliveries/{delivery_id}/retry", post(webhook_deliveries::retry)),
        route(Method::GET, "/openapi.json", get(super::openapi::document)),
    ]
}

pub fn router() -> Router<AppState> {
    // Routes of one path merge into one method router.
    routes().into_iter().fold(Router::new(), |router, r| router.route(r.path, r.handler))
}
