//! The Users page (owners only): the account's console users, inviting one (the one-time link is
//! shown once), and changing a role.

use super::auth::ConsoleSession;
use super::csrf::SignedForm;
use super::page::{render, render_with, Chrome, ConsoleError, Nav};
use super::sign_in::{link, LinkKind};
use crate::app::AppState;
use crate::commands::console_users::{self as users, ConsoleUserCommandError};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use domain::console_user::{ConsoleUserError, Email, Role};
use domain::ids::ConsoleUserId;
use serde::Deserialize;

pub struct UserRow {
    pub user_id: String,
    pub email: String,
    pub role: String,
    /// `active`, `invited` (no password yet) or `removed`.
    pub state: &'static str,
    pub last_sign_in: String,
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    chrome: Option<Chrome>,
    csrf: String,
    users: Vec<UserRow>,
    invite_link: Option<String>,
    invited_email: String,
    email: String,
    email_error: Option<String>,
}

type Row = (String, String, String, bool, Option<DateTime<Utc>>, bool);

async fn page(state: &AppState, session: &ConsoleSession) -> Result<UsersPage, ConsoleError> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT user_id, email, role, password_hash IS NOT NULL, last_sign_in_at, removed_at IS NOT NULL \
           FROM console_users WHERE account_id = $1 ORDER BY user_id",
    )
    .bind(session.account_id.as_str())
    .fetch_all(&state.pool)
    .await?;
    let users = rows
        .into_iter()
        .map(|(user_id, email, role, has_password, last, removed)| UserRow {
            user_id,
            email,
            role,
            state: if removed {
                "removed"
            } else if has_password {
                "active"
            } else {
                "invited"
            },
            last_sign_in: last.map_or_else(|| "never".to_owned(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
        })
        .collect();
    Ok(UsersPage {
        chrome: Some(session.chrome(Nav::Users)),
        csrf: session.csrf.clone(),
        users,
        invite_link: None,
        invited_email: String::new(),
        email: String::new(),
        email_error: None,
    })
}

pub async fn list(State(state): State<AppState>, session: ConsoleSession) -> Result<Response, ConsoleError> {
    session.require_owner()?;
    Ok(render(&page(&state, &session).await?))
}

#[derive(Deserialize)]
pub struct InviteForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

/// The base of the links the console shows: the configured one, else the host the owner reached.
fn base_url(state: &AppState, host: Option<&str>) -> String {
    match (&state.config.console.base_url, host) {
        (Some(base), _) => base.clone(),
        (None, Some(host)) => format!("http://{host}"),
        (None, None) => format!("http://{}", state.config.listen),
    }
}

pub async fn invite(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    SignedForm { session, form }: SignedForm<InviteForm>,
) -> Result<Response, ConsoleError> {
    session.require_owner()?;
    let mut shown = page(&state, &session).await?;
    shown.email = form.email.trim().chars().take(254).collect();
    let role = Role::parse(&form.role).unwrap_or(Role::Developer);
    let email = match Email::parse(&form.email) {
        Ok(email) => email,
        Err(e) => {
            shown.email_error = Some(format!("{e}."));
            return Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &shown));
        }
    };
    match users::invite(&state.store, &session.metadata(), &session.account_id, email.clone(), role).await {
        Ok((_, token)) => {
            let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok());
            let mut shown = page(&state, &session).await?;
            shown.invite_link = Some(link(&base_url(&state, host), LinkKind::Invite, &token));
            shown.invited_email = email.as_str().to_owned();
            Ok(render(&shown))
        }
        Err(ConsoleUserCommandError::EmailTaken) => {
            shown.email_error = Some("This email already has a console user.".into());
            Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &shown))
        }
        Err(e) => Err(ConsoleError::Internal(e.into())),
    }
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

const NO_SUCH_USER: &str = "There is no such user in this account.";

pub async fn change_role(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    SignedForm { session, form }: SignedForm<RoleForm>,
) -> Result<Response, ConsoleError> {
    session.require_owner()?;
    let user_id = ConsoleUserId::parse(&raw).map_err(|_| ConsoleError::NotFound(NO_SUCH_USER))?;
    let role = Role::parse(&form.role).map_err(|_| ConsoleError::NotFound("There is no such role."))?;
    match users::change_role(&state.store, &session.metadata(), &session.account_id, &user_id, role).await {
        Ok(_) => Ok(Redirect::to("/console/users").into_response()),
        Err(e) if matches!(e.rejection(), Some(ConsoleUserError::NotFound | ConsoleUserError::Removed)) => {
            Err(ConsoleError::NotFound(NO_SUCH_USER))
        }
        Err(e) => Err(ConsoleError::Internal(e.into())),
    }
}
