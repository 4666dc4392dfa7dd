//! The tenant console: server-rendered HTML at `/console`, in the same binary as the API.
//!
//! - [`auth`]: sessions in PostgreSQL and [`auth::ConsoleSession`], the signed-in user extractor
//!   (its `metadata()` names the user as the actor of every event a page causes);
//! - [`csrf`]: the same-origin check on every state-changing request and [`csrf::SignedForm`],
//!   a form carrying the session's token;
//! - [`page`]: the layout ([`page::Chrome`]), [`page::render`], and errors as pages;
//! - the pages: [`sign_in`], [`users`], [`overview`], [`lines`], [`keys`], [`webhooks`], [`usage`],
//!   [`explorer`] (its form made by [`openapi_form`]) and [`activity`].
//!
//! Templates are under `templates/console/` (askama, checked at compile time). The scripts are
//! ours: `/console/assets/console.js` polls `data-poll` fragments and submits `data-inline` forms
//! with fetch (every form also works as a plain POST); `/console/assets/explorer.js` sends the
//! explorer's requests, on that page only.

pub mod activity;
pub mod auth;
pub mod csrf;
pub mod explorer;
pub mod keys;
pub mod lines;
pub mod openapi_form;
pub mod overview;
pub mod page;
pub mod password;
pub mod sign_in;
pub mod usage;
pub mod usage_chart;
pub mod users;
pub mod webhooks;

use crate::app::AppState;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use page::ConsoleError;

pub use sign_in::{link, LinkKind};

/// Every console route, to be nested at `/console`.
pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .merge(lines::routes())
        .merge(explorer::routes())
        .merge(webhooks::routes())
        .merge(usage::routes())
        .merge(keys::routes())
        .merge(activity::routes())
        .route("/", get(overview::overview))
        .route("/sign-in", get(sign_in::sign_in_page).post(sign_in::sign_in))
        .route("/sign-out", post(sign_in::sign_out))
        .route("/sign-out-everywhere", post(sign_in::sign_out_everywhere))
        .route("/invite/{token}", get(sign_in::invite_page).post(sign_in::accept_invite))
        .route("/reset/{token}", get(sign_in::reset_page).post(sign_in::accept_reset))
        .route("/signup", get(sign_in::signup_page).post(sign_in::sign_up))
        .route("/users", get(users::list).post(users::invite))
        .route("/users/{user_id}/role", post(users::change_role))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(stylesheet))
        .fallback(not_found)
        .layer(Extension(sign_in::SignInLimits::new(&state.config.console)))
        .layer(axum::middleware::from_fn(csrf::same_origin_only))
        .layer(axum::middleware::from_fn(no_store))
}

/// Console pages show an account's data: no cache may keep them, and no other site may frame them.
async fn no_store(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let is_asset = request.uri().path().contains("/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !is_asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

async fn not_found() -> ConsoleError {
    ConsoleError::NotFound("There is no such page in the console.")
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("assets/console.js")).into_response()
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("assets/console.css")).into_response()
}
