//! Console sessions, kept in PostgreSQL (`console_sessions`, keyed by the SHA-256 of the cookie's
//! random token), and [`ConsoleSession`], the extractor that is the only way a console page learns
//! who is signed in.
//!
//! The cookie is `__Host-wzb_session` with `Secure; HttpOnly; SameSite=Strict; Path=/` (the
//! `__Host-` prefix makes browsers refuse it from any other host or path; browsers accept
//! `Secure` cookies on http://localhost and http://127.0.0.1, so local use and the tests work
//! over plain http). A session ends when unused for `console.session_idle_minutes`, and at the
//! latest `console.session_lifetime_hours` after sign-in; each request it makes moves its last use.

use super::page::{Chrome, ConsoleError, Nav};
use crate::api::request_id::RequestId;
use crate::app::AppState;
use crate::store::{Actor, Metadata};
use axum::extract::FromRequestParts;
use axum::http::header::{HeaderValue, COOKIE};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use domain::console_user::{OneTimeToken, Role};
use domain::ids::{AccountId, ConsoleUserId};
use sqlx::PgPool;

pub const COOKIE_NAME: &str = "__Host-wzb_session";

/// The signed-in user of a console request, and the account it acts for.
#[derive(Debug, Clone)]
pub struct ConsoleSession {
    pub user_id: ConsoleUserId,
    pub account_id: AccountId,
    pub role: Role,
    pub email: String,
    /// This session's form token: every state-changing form carries it as `_csrf`.
    pub csrf: String,
    pub account_name: String,
    pub plan: String,
    /// `active` or `suspended`.
    pub subscription: String,
    pub cycle_anchor: DateTime<Utc>,
    pub request_id: Option<String>,
    /// The SHA-256 of the cookie's token: the session's key.
    session_hash: String,
}

impl ConsoleSession {
    /// Event metadata naming this user (and request) as the cause.
    pub fn metadata(&self) -> Metadata {
        Metadata::new(Actor::ConsoleUser { user_id: self.user_id.to_string() }).with_request_id(self.request_id.clone())
    }

    /// This user as the caller of a command: the same commands REST and MCP run, recorded with
    /// this user as the actor.
    pub fn caller(&self) -> crate::api::tenant::Caller {
        crate::api::tenant::Caller { account_id: self.account_id.clone(), metadata: self.metadata() }
    }

    /// Refuse (a 403 page) unless the user is an owner of the account.
    pub fn require_owner(&self) -> Result<(), ConsoleError> {
        match self.role {
            Role::Owner => Ok(()),
            Role::Developer => Err(ConsoleError::owners_only()),
        }
    }

    /// Refuse (the published `subscription_required`, as a page) unless the account's subscription
    /// is active: a suspended account may read, not act.
    pub fn require_active(&self) -> Result<(), ConsoleError> {
        if self.subscription == "active" {
            Ok(())
        } else {
            Err(ConsoleError::SubscriptionRequired)
        }
    }

    /// The layout's header and navigation for a page of section `current`.
    pub fn chrome(&self, current: Nav) -> Chrome {
        Chrome {
            account_name: self.account_name.clone(),
            email: self.email.clone(),
            role: self.role.as_str(),
            csrf: self.csrf.clone(),
            current,
        }
    }

    /// End this session.
    pub async fn end(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM console_sessions WHERE session_hash = $1")
            .bind(&self.session_hash)
            .execute(pool)
            .await
            .map(|_| ())
    }

    /// End every session of this user, on every device, this one included.
    pub async fn end_everywhere(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM console_sessions WHERE user_id = $1").bind(self.user_id.as_str()).execute(pool).await.map(|_| ())
    }
}

/// The session cookie's token, if the request carries one of our shape.
fn presented_token(parts: &Parts) -> Option<OneTimeToken> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .and_then(|(_, value)| OneTimeToken::parse(value.trim()))
}

type SessionRow = (String, String, String, String, String, String, String, String, DateTime<Utc>);

impl FromRequestParts<AppState> for ConsoleSession {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ConsoleError> {
        if let Some(session) = parts.extensions.get::<ConsoleSession>() {
            return Ok(session.clone());
        }
        let token = presented_token(parts).ok_or(ConsoleError::SignInRequired)?;
        let session_hash = token.hash().0;
        let console = &state.config.console;
        // One statement finds a live session and moves its last use.
        let row: Option<SessionRow> = sqlx::query_as(
            "UPDATE console_sessions s SET last_seen_at = now() \
               FROM console_users u, accounts a \
              WHERE s.session_hash = $1 AND u.user_id = s.user_id AND a.account_id = s.account_id \
                AND u.removed_at IS NULL \
                AND s.last_seen_at > now() - make_interval(secs => $2) \
                AND s.created_at > now() - make_interval(hours => $3) \
             RETURNING s.user_id, s.account_id, u.role, u.email, s.csrf_token, a.name, a.plan, a.status, a.cycle_anchor",
        )
        .bind(&session_hash)
        .bind(console.session_idle_minutes * 60.0)
        .bind(i32::try_from(console.session_lifetime_hours).unwrap_or(i32::MAX))
        .fetch_optional(&state.pool)
        .await?;
        let Some((user_id, account_id, role, email, csrf, account_name, plan, subscription, cycle_anchor)) = row else {
            // An ended session is of no further use: forget it.
            sqlx::query("DELETE FROM console_sessions WHERE session_hash = $1").bind(&session_hash).execute(&state.pool).await?;
            return Err(ConsoleError::SignInRequired);
        };
        let invalid = |what: &str| ConsoleError::Internal(anyhow::anyhow!("console_sessions holds an invalid {what}"));
        let session = ConsoleSession {
            user_id: ConsoleUserId::parse(&user_id).map_err(|_| invalid("user id"))?,
            account_id: AccountId::parse(&account_id).map_err(|_| invalid("account id"))?,
            role: Role::parse(&role).map_err(|_| invalid("role"))?,
            email,
            csrf,
            account_name,
            plan,
            subscription,
            cycle_anchor,
            request_id: parts.extensions.get::<RequestId>().map(|r| r.0.clone()),
            session_hash,
        };
        parts.extensions.insert(session.clone());
        Ok(session)
    }
}

/// Start a session for the user; the `Set-Cookie` value that carries it.
pub async fn start(pool: &PgPool, user_id: &ConsoleUserId, account_id: &AccountId) -> Result<HeaderValue, sqlx::Error> {
    let token = OneTimeToken::generate(&mut rand::rngs::OsRng);
    let csrf = OneTimeToken::generate(&mut rand::rngs::OsRng);
    sqlx::query("INSERT INTO console_sessions (session_hash, user_id, account_id, csrf_token) VALUES ($1, $2, $3, $4)")
        .bind(token.hash().0)
        .bind(user_id.as_str())
        .bind(account_id.as_str())
        .bind(csrf.expose())
        .execute(pool)
        .await?;
    Ok(HeaderValue::from_str(&format!("{COOKIE_NAME}={}; Secure; HttpOnly; SameSite=Strict; Path=/", token.expose()))
        .expect("hex is a valid header value"))
}

/// The `Set-Cookie` value that makes the browser forget the session cookie.
pub fn cleared_cookie() -> HeaderValue {
    HeaderValue::from_static("__Host-wzb_session=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// Forget sessions that have ended (run now and then; an ended session is refused anyway).
pub async fn sweep(pool: &PgPool, idle_minutes: f64, lifetime_hours: u64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM console_sessions \
          WHERE last_seen_at <= now() - make_interval(secs => $1) OR created_at <= now() - make_interval(hours => $2)",
    )
    .bind(idle_minutes * 60.0)
    .bind(i32::try_from(lifetime_hours).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
