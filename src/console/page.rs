//! Rendering console pages: the layout's header and navigation ([`Chrome`]), a page as an HTML
//! response ([`render`]), and the console's errors as friendly pages ([`ConsoleError`]) rather
//! than the API's JSON envelopes.

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use domain::console_user::Role;
use std::time::Duration;

/// The console's sections, in the navigation's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Lines,
    Keys,
    Webhooks,
    Usage,
    Explorer,
    Activity,
    Users,
}

impl Nav {
    pub const ALL: [Nav; 8] =
        [Nav::Overview, Nav::Lines, Nav::Keys, Nav::Webhooks, Nav::Usage, Nav::Explorer, Nav::Activity, Nav::Users];

    pub fn href(self) -> &'static str {
        match self {
            Nav::Overview => "/console",
            Nav::Lines => "/console/lines",
            Nav::Keys => "/console/keys",
            Nav::Webhooks => "/console/webhooks",
            Nav::Usage => "/console/usage",
            Nav::Explorer => "/console/explorer",
            Nav::Activity => "/console/activity",
            Nav::Users => "/console/users",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Nav::Overview => "Overview",
            Nav::Lines => "Lines",
            Nav::Keys => "API keys",
            Nav::Webhooks => "Webhooks",
            Nav::Usage => "Usage",
            Nav::Explorer => "Explorer",
            Nav::Activity => "Activity",
            Nav::Users => "Users",
        }
    }
}

/// One entry of the navigation as the layout shows it.
pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// What the layout shows around every signed-in page: the account, the user, the navigation, and
/// the form token for the header's sign-out forms. Every page template has a `chrome` field of
/// type `Option<Chrome>` (None on signed-out pages) and `{% extends "console/layout.html" %}`.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub account_name: String,
    pub email: String,
    pub role: &'static str,
    pub csrf: String,
    pub current: Nav,
}

impl Chrome {
    /// The sections this user may open: API keys and Users are for owners only.
    pub fn nav(&self) -> Vec<NavItem> {
        let owner = self.role == Role::Owner.as_str();
        Nav::ALL
            .into_iter()
            .filter(|n| owner || !matches!(n, Nav::Keys | Nav::Users))
            .map(|n| NavItem { href: n.href(), label: n.label(), current: n == self.current })
            .collect()
    }
}

/// A time as the console shows it: UTC in ISO 8601 form, to the second (`2025-01-31T09:05:00Z`),
/// for both a `<time>` element's `datetime` and its text.
pub fn utc(time: chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A page as an HTML response (200).
pub fn render(page: &impl Template) -> Response {
    render_with(StatusCode::OK, page)
}

/// A page as an HTML response with `status` (a form shown again with its errors: 422).
pub fn render_with(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => ConsoleError::Internal(anyhow::Error::new(e).context("rendering a console page")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    chrome: Option<Chrome>,
    heading: &'a str,
    message: &'a str,
    back: &'a str,
}

/// Why a console request was refused, each answered with a page of its own.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No session, or it has ended: to the sign-in page.
    #[error("sign-in required")]
    SignInRequired,
    /// A state-changing request from another site, or a form without this session's token.
    #[error("{0}")]
    CrossSite(&'static str),
    /// Signed in, but the role does not allow it.
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(&'static str),
    /// The account's subscription is not active: it may read, not act (the published
    /// `subscription_required`).
    #[error("subscription required")]
    SubscriptionRequired,
    #[error("too many attempts")]
    RateLimited(Duration),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ConsoleError {
    fn from(e: sqlx::Error) -> Self {
        ConsoleError::Internal(e.into())
    }
}

impl ConsoleError {
    /// Only owners may do this.
    pub fn owners_only() -> Self {
        ConsoleError::Forbidden("Only owners of the account can do this. Ask an owner to change your role.")
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, heading, message) = match &self {
            ConsoleError::SignInRequired => return Redirect::to("/console/sign-in").into_response(),
            ConsoleError::CrossSite(m) => (StatusCode::FORBIDDEN, "Request refused", *m),
            ConsoleError::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", *m),
            ConsoleError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", *m),
            ConsoleError::SubscriptionRequired => {
                let code = crate::api::error::ErrorCode::SubscriptionRequired;
                (code.status(), "Subscription required", code.message())
            }
            ConsoleError::RateLimited(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "Too many attempts", "Too many sign-in attempts. Wait a little and try again.")
            }
            ConsoleError::Internal(e) => {
                // The cause goes to the log, never to the page.
                tracing::error!(error = format!("{e:#}"), "console request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "The request failed on our side. Try again.")
            }
        };
        let page = ErrorPage { chrome: None, heading, message, back: "/console" };
        let html = page.render().unwrap_or_else(|_| message.to_owned());
        let mut response = (status, Html(html)).into_response();
        if let ConsoleError::RateLimited(wait) = self {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

/// Whether the request is a console.js `fetch` of a live part (a `data-inline` form or a
/// `data-poll` fragment), to be answered with the fragment alone: browsers mark `fetch` requests
/// `Sec-Fetch-Dest: empty`, and a page navigation (a plain form POST) `document`.
pub fn wants_fragment(headers: &axum::http::HeaderMap) -> bool {
    headers.get("sec-fetch-dest").is_some_and(|v| v.as_bytes() == b"empty")
}
