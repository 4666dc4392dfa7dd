//! Signing in and out, following one-time links (invitation, password reset), and self sign-up.
//!
//! Sign-in answers an unknown email and a wrong password alike (same page, same status, and about
//! the same time: an unknown email is verified against a decoy hash). It is rate-limited per email
//! and per client address. A successful sign-in is an event (`console_user.signed_in`); failures
//! are only logged, so that someone guessing passwords cannot fill the event log.

use super::auth;
use super::csrf::SignedForm;
use super::page::{render, render_with, ConsoleError};
use super::password;
use crate::api::rate_limit::Limiter;
use crate::app::AppState;
use crate::commands::accounts;
use crate::commands::console_users::{self as users, ConsoleUserCommandError};
use crate::config::ConsoleConfig;
use askama::Template;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use domain::account::AccountName;
use domain::console_user::{ConsoleUserError, Email, NewPassword, OneTimeToken, Role, MIN_PASSWORD_CHARS};
use domain::ids::{AccountId, ConsoleUserId};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The sign-in limits of this node: per email (as typed, normalised) and per client address.
#[derive(Clone)]
pub struct SignInLimits(Arc<(Limiter<String>, Limiter<IpAddr>)>);

impl SignInLimits {
    pub fn new(config: &ConsoleConfig) -> Self {
        Self(Arc::new((
            Limiter::new(config.sign_in_per_email, "sign-ins of this email"),
            Limiter::new(config.sign_in_per_address, "sign-ins from this address"),
        )))
    }

    fn check(&self, email: &str, address: Option<IpAddr>) -> Result<(), ConsoleError> {
        if let Some(address) = address {
            self.0 .1.wait_before(&address).map_err(ConsoleError::RateLimited)?;
        }
        let email: String = email.trim().to_lowercase().chars().take(254).collect();
        self.0 .0.wait_before(&email).map_err(ConsoleError::RateLimited)
    }
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    chrome: Option<super::page::Chrome>,
    error: Option<&'static str>,
    email: String,
    signup: bool,
}

pub async fn sign_in_page(State(state): State<AppState>) -> Response {
    render(&SignInPage { chrome: None, error: None, email: String::new(), signup: state.config.console.signup })
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// Answer with a new session's cookie and go to the overview.
fn signed_in(cookie: axum::http::HeaderValue) -> Response {
    let mut response = Redirect::to("/console").into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
}

/// Record the sign-in (an event, the user as actor) and start a session.
async fn open_session(
    state: &AppState,
    user_id: &ConsoleUserId,
    account_id: &AccountId,
    request_id: Option<String>,
) -> Result<Response, ConsoleError> {
    let metadata = crate::store::Metadata::new(crate::store::Actor::ConsoleUser { user_id: user_id.to_string() })
        .with_request_id(request_id);
    users::record_sign_in(&state.store, &metadata, user_id).await.map_err(|e| ConsoleError::Internal(e.into()))?;
    let console = &state.config.console;
    auth::sweep(&state.pool, console.session_idle_minutes, console.session_lifetime_hours).await?;
    Ok(signed_in(auth::start(&state.pool, user_id, account_id).await?))
}

fn request_id(request: &axum::http::Extensions) -> Option<String> {
    request.get::<crate::api::request_id::RequestId>().map(|r| r.0.clone())
}

pub async fn sign_in(
    State(state): State<AppState>,
    limits: axum::Extension<SignInLimits>,
    extensions: axum::http::Extensions,
    Form(form): Form<SignInForm>,
) -> Result<Response, ConsoleError> {
    let address = extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip());
    limits.check(&form.email, address)?;
    let found: Option<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT user_id, account_id, password_hash FROM console_users WHERE lower(email) = lower($1) AND removed_at IS NULL",
    )
    .bind(form.email.trim())
    .fetch_optional(&state.pool)
    .await?;
    let (user, stored) = match found {
        Some((user_id, account_id, hash)) => (Some((user_id, account_id)), hash),
        None => (None, None),
    };
    let matches = password::verify(stored, form.password).await?;
    let user = user.filter(|_| matches).and_then(|(u, a)| Some((ConsoleUserId::parse(&u).ok()?, AccountId::parse(&a).ok()?)));
    let Some((user_id, account_id)) = user else {
        tracing::info!(client = ?address, "console sign-in failed");
        let page = SignInPage {
            chrome: None,
            error: Some("The email or password is not right."),
            email: form.email.trim().chars().take(254).collect(),
            signup: state.config.console.signup,
        };
        return Ok(render_with(StatusCode::UNAUTHORIZED, &page));
    };
    open_session(&state, &user_id, &account_id, request_id(&extensions)).await
}

#[derive(Deserialize)]
pub struct NoFields {}

fn to_sign_in(clear: bool) -> Response {
    let mut response = Redirect::to("/console/sign-in").into_response();
    if clear {
        response.headers_mut().insert(header::SET_COOKIE, auth::cleared_cookie());
    }
    response
}

pub async fn sign_out(State(state): State<AppState>, signed: SignedForm<NoFields>) -> Result<Response, ConsoleError> {
    signed.session.end(&state.pool).await?;
    Ok(to_sign_in(true))
}

pub async fn sign_out_everywhere(State(state): State<AppState>, signed: SignedForm<NoFields>) -> Result<Response, ConsoleError> {
    signed.session.end_everywhere(&state.pool).await?;
    Ok(to_sign_in(true))
}

/// Whether a one-time link invites (first password) or resets.
#[derive(Clone, Copy)]
pub enum LinkKind {
    Invite,
    Reset,
}

impl LinkKind {
    fn path(self) -> &'static str {
        match self {
            LinkKind::Invite => "/console/invite",
            LinkKind::Reset => "/console/reset",
        }
    }
}

/// The link a person follows: `{base}/console/invite/{token}` or `…/reset/{token}`.
pub fn link(base: &str, kind: LinkKind, token: &OneTimeToken) -> String {
    format!("{}{}/{}", base.trim_end_matches('/'), kind.path(), token.expose())
}

#[derive(Template)]
#[template(path = "console/set_password.html")]
struct SetPasswordPage {
    chrome: Option<super::page::Chrome>,
    heading: &'static str,
    email: String,
    action: String,
    min_chars: usize,
    password_error: Option<String>,
    confirm_error: Option<String>,
}

const BAD_LINK: &str = "This link is not valid: it may have been used already or be older than 24 hours. Ask for a new one.";

/// The holder of a presented link and its email, or the 404 page.
async fn holder(state: &AppState, raw: &str) -> Result<(OneTimeToken, ConsoleUserId, String), ConsoleError> {
    let token = OneTimeToken::parse(raw).ok_or(ConsoleError::NotFound(BAD_LINK))?;
    let user_id = users::link_holder(&state.pool, &token).await?.ok_or(ConsoleError::NotFound(BAD_LINK))?;
    let email: String = sqlx::query_scalar("SELECT email FROM console_users WHERE user_id = $1")
        .bind(user_id.as_str())
        .fetch_one(&state.pool)
        .await?;
    Ok((token, user_id, email))
}

fn set_password_page(kind: LinkKind, raw: &str, email: String) -> SetPasswordPage {
    SetPasswordPage {
        chrome: None,
        heading: match kind {
            LinkKind::Invite => "Welcome: choose a password",
            LinkKind::Reset => "Choose a new password",
        },
        email,
        action: format!("{}/{raw}", kind.path()),
        min_chars: MIN_PASSWORD_CHARS,
        password_error: None,
        confirm_error: None,
    }
}

pub async fn link_page(kind: LinkKind, state: AppState, raw: String) -> Result<Response, ConsoleError> {
    let (_, _, email) = holder(&state, &raw).await?;
    Ok(render(&set_password_page(kind, &raw, email)))
}

#[derive(Deserialize)]
pub struct SetPasswordForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

pub async fn follow_link(
    kind: LinkKind,
    state: AppState,
    raw: String,
    request_id: Option<String>,
    form: SetPasswordForm,
) -> Result<Response, ConsoleError> {
    let (token, user_id, email) = holder(&state, &raw).await?;
    let mut page = set_password_page(kind, &raw, email);
    let same = form.password == form.confirm;
    let password = match NewPassword::parse(form.password) {
        Ok(p) if same => p,
        Ok(_) => {
            page.confirm_error = Some("The two passwords differ.".into());
            return Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
        Err(e) => {
            page.password_error = Some(sentence(&e));
            return Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
    };
    let hash = password::hash(password).await?;
    let user = match users::set_password(&state.store, &user_id, &token, hash, request_id.clone()).await {
        Ok(user) => user,
        // Used meanwhile by another request, or expired.
        Err(e) if e.rejection().is_some() => return Err(ConsoleError::NotFound(BAD_LINK)),
        Err(e) => return Err(ConsoleError::Internal(e.into())),
    };
    open_session(&state, &user.user_id, &user.account_id, request_id).await
}

/// An error of the domain as a sentence for a form.
fn sentence(e: &ConsoleUserError) -> String {
    let text = e.to_string();
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect::<String>() + ".").unwrap_or_default()
}

pub async fn invite_page(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Response, ConsoleError> {
    link_page(LinkKind::Invite, state, raw).await
}

pub async fn reset_page(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Response, ConsoleError> {
    link_page(LinkKind::Reset, state, raw).await
}

pub async fn accept_invite(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    extensions: axum::http::Extensions,
    Form(form): Form<SetPasswordForm>,
) -> Result<Response, ConsoleError> {
    follow_link(LinkKind::Invite, state, raw, request_id(&extensions), form).await
}

pub async fn accept_reset(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    extensions: axum::http::Extensions,
    Form(form): Form<SetPasswordForm>,
) -> Result<Response, ConsoleError> {
    follow_link(LinkKind::Reset, state, raw, request_id(&extensions), form).await
}

#[derive(Template)]
#[template(path = "console/signup.html")]
struct SignUpPage {
    chrome: Option<super::page::Chrome>,
    account_name: String,
    email: String,
    min_chars: usize,
    name_error: Option<String>,
    email_error: Option<String>,
    password_error: Option<String>,
}

const SIGNUP_OFF: &str = "Sign-up is off on this server: ask its operator for an invitation.";

pub async fn signup_page(State(state): State<AppState>) -> Result<Response, ConsoleError> {
    if !state.config.console.signup {
        return Err(ConsoleError::NotFound(SIGNUP_OFF));
    }
    Ok(render(&SignUpPage {
        chrome: None,
        account_name: String::new(),
        email: String::new(),
        min_chars: MIN_PASSWORD_CHARS,
        name_error: None,
        email_error: None,
        password_error: None,
    }))
}

#[derive(Deserialize)]
pub struct SignUpForm {
    #[serde(default)]
    account_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// Open an account on the `free` plan (through the same command as `bridge accounts create`) and
/// its owner, signed in. Everything is checked before anything is written; the new user is the
/// actor of all of it.
pub async fn sign_up(
    State(state): State<AppState>,
    extensions: axum::http::Extensions,
    Form(form): Form<SignUpForm>,
) -> Result<Response, ConsoleError> {
    if !state.config.console.signup {
        return Err(ConsoleError::NotFound(SIGNUP_OFF));
    }
    let mut page = SignUpPage {
        chrome: None,
        account_name: form.account_name.trim().chars().take(200).collect(),
        email: form.email.trim().chars().take(254).collect(),
        min_chars: MIN_PASSWORD_CHARS,
        name_error: None,
        email_error: None,
        password_error: None,
    };
    let name =
        AccountName::parse(&form.account_name).map_err(|_| page.name_error = Some("Give a name of 1 to 200 characters.".into()));
    let email = Email::parse(&form.email).map_err(|e| page.email_error = Some(sentence(&e)));
    let password = NewPassword::parse(form.password).map_err(|e| page.password_error = Some(sentence(&e)));
    let (Ok(name), Ok(email), Ok(password)) = (name, email, password) else {
        return Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &page));
    };
    let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM console_users WHERE lower(email) = lower($1))")
        .bind(email.as_str())
        .fetch_one(&state.pool)
        .await?;
    if taken {
        page.email_error = Some("This email already has a console user: sign in instead.".into());
        return Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &page));
    }
    let hash = password::hash(password).await?;
    let user_id = ConsoleUserId::new();
    let request_id = request_id(&extensions);
    let metadata = crate::store::Metadata::new(crate::store::Actor::ConsoleUser { user_id: user_id.to_string() })
        .with_request_id(request_id.clone());
    let (account, _) = accounts::open(&state.store, &state.plans, &metadata, name.as_str(), "free")
        .await
        .map_err(|e| ConsoleError::Internal(e.into()))?;
    let (_, token) = match users::invite_as(&state.store, &metadata, user_id.clone(), &account.id, email, Role::Owner).await {
        Ok(invited) => invited,
        Err(ConsoleUserCommandError::EmailTaken) => {
            page.email_error = Some("This email already has a console user: sign in instead.".into());
            return Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
        Err(e) => return Err(ConsoleError::Internal(e.into())),
    };
    users::set_password(&state.store, &user_id, &token, hash, request_id.clone())
        .await
        .map_err(|e| ConsoleError::Internal(e.into()))?;
    open_session(&state, &user_id, &account.id, request_id).await
}
