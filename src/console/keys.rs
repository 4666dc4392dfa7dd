//! The API keys page (owners only): the account's keys with their created and last-used times;
//! create one (its secret shown once, with a copy button), rotate one with a grace period for the
//! old secret, revoke one after typing its name. Every action runs `commands::keys`, what
//! `bridge keys` runs, with the signed-in owner as the actor; keys are reached only through
//! `queries::keys::owned`, so another account's key is a 404 page.

use super::auth::ConsoleSession;
use super::csrf::SignedForm;
use super::page::{render, render_with, utc, Chrome, ConsoleError, Nav};
use crate::app::AppState;
use crate::commands::keys::{self, KeyCommandError};
use crate::commands::CommandError;
use crate::queries::keys::KeyView;
use crate::queries::owned::OwnedKey;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Duration;
use domain::api_key::ApiKeyError;
use domain::ids::KeyId;
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/keys", get(list).post(create))
        .route("/keys/{key_id}/rotate", post(rotate))
        .route("/keys/{key_id}/revoke", post(revoke))
}

/// The grace periods offered for the old secret of a rotated key: form value, label, length.
const GRACES: [(&str, &str, Option<i64>); 4] = [
    ("none", "none: the old secret stops now", None),
    ("1h", "1 hour", Some(1)),
    ("24h", "24 hours", Some(24)),
    ("7d", "7 days", Some(24 * 7)),
];

/// The word that confirms a revocation, besides the key's name.
const REVOKE_WORD: &str = "revoke";

pub struct KeyRow {
    pub key_id: String,
    /// The name, or empty.
    pub name: String,
    pub status: String,
    pub active: bool,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub rotated_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<KeyView> for KeyRow {
    fn from(k: KeyView) -> Self {
        KeyRow {
            active: k.is_active(),
            key_id: k.key_id,
            name: k.name.unwrap_or_default(),
            status: k.status,
            created_at: utc(k.created_at),
            last_used_at: k.last_used_at.map(utc),
            rotated_at: k.rotated_at.map(utc),
            revoked_at: k.revoked_at.map(utc),
        }
    }
}

/// A secret just made, shown on this one page and never again.
pub struct ShownSecret {
    pub key_id: String,
    /// `created` or `rotated`.
    pub what: &'static str,
    pub secret: String,
    /// After a rotation: until when the old secret keeps working (None: it stopped now).
    pub old_until: Option<String>,
}

/// An error about one key's form (rotate or revoke), shown in that key's row.
pub struct RowError {
    pub key_id: String,
    /// `rotate` or `revoke`: which form of the row.
    pub form: &'static str,
    pub message: String,
    /// What was typed in the revoke confirmation, kept.
    pub typed: String,
}

#[derive(Template)]
#[template(path = "console/keys.html")]
struct KeysPage {
    chrome: Option<Chrome>,
    csrf: String,
    keys: Vec<KeyRow>,
    graces: Vec<(&'static str, &'static str)>,
    shown: Option<ShownSecret>,
    /// The create form's name, kept when it is shown again with an error.
    name: String,
    name_error: Option<String>,
    row_error: Option<RowError>,
    suspended: bool,
}

impl KeysPage {
    /// The error of `form` in the row of `key_id`, if that is where it belongs.
    fn error_of(&self, key_id: &str, form: &str) -> Option<&RowError> {
        self.row_error.as_ref().filter(|e| e.key_id == key_id && e.form == form)
    }
}

async fn page(state: &AppState, session: &ConsoleSession) -> Result<KeysPage, ConsoleError> {
    let keys = crate::queries::keys::list(&state.pool, &session.account_id).await?;
    Ok(KeysPage {
        chrome: Some(session.chrome(Nav::Keys)),
        csrf: session.csrf.clone(),
        keys: keys.into_iter().map(KeyRow::from).collect(),
        graces: GRACES.iter().map(|(value, label, _)| (*value, *label)).collect(),
        shown: None,
        name: String::new(),
        name_error: None,
        row_error: None,
        suspended: session.subscription != "active",
    })
}

/// The page again, with what was refused (`refusal` puts the error next to its field): 422.
async fn shown_again(
    state: &AppState,
    session: &ConsoleSession,
    refusal: impl FnOnce(&mut KeysPage),
) -> Result<Response, ConsoleError> {
    let mut shown = page(state, session).await?;
    refusal(&mut shown);
    Ok(render_with(StatusCode::UNPROCESSABLE_ENTITY, &shown))
}

/// An owner acting in an active account: what every action of this page needs.
fn may_act(session: &ConsoleSession) -> Result<(), ConsoleError> {
    session.require_owner()?;
    session.require_active()
}

const NO_SUCH_KEY: &str = "There is no such API key in this account.";

/// The account's key named in the path, or a 404 page.
async fn owned_key(state: &AppState, session: &ConsoleSession, raw: &str) -> Result<(OwnedKey, KeyView), ConsoleError> {
    let key_id = KeyId::parse(raw).map_err(|_| ConsoleError::NotFound(NO_SUCH_KEY))?;
    crate::queries::keys::owned(&state.pool, &session.account_id, &key_id).await?.ok_or(ConsoleError::NotFound(NO_SUCH_KEY))
}

pub async fn list(State(state): State<AppState>, session: ConsoleSession) -> Result<Response, ConsoleError> {
    session.require_owner()?;
    Ok(render(&page(&state, &session).await?))
}

#[derive(Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    name: String,
}

pub async fn create(
    State(state): State<AppState>,
    SignedForm { session, form }: SignedForm<CreateForm>,
) -> Result<Response, ConsoleError> {
    may_act(&session)?;
    // The name's rules are the key aggregate's: an empty name is no name.
    match keys::create(&state.store, &session.caller(), Some(form.name.clone())).await {
        Ok((key, secret)) => {
            let mut shown = page(&state, &session).await?;
            shown.shown = Some(ShownSecret {
                key_id: key.key_id.to_string(),
                what: "created",
                secret: secret.expose().to_owned(),
                old_until: None,
            });
            Ok(render(&shown))
        }
        Err(KeyCommandError::Key(CommandError::Rejected(e @ ApiKeyError::InvalidName))) => {
            shown_again(&state, &session, |shown| {
                shown.name = form.name.chars().take(200).collect();
                shown.name_error = Some(sentence(&e));
            })
            .await
        }
        Err(e) => Err(ConsoleError::Internal(e.into())),
    }
}

#[derive(Deserialize)]
pub struct RotateForm {
    #[serde(default)]
    grace: String,
}

pub async fn rotate(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    SignedForm { session, form }: SignedForm<RotateForm>,
) -> Result<Response, ConsoleError> {
    session.require_owner()?;
    let (key, _) = owned_key(&state, &session, &raw).await?;
    session.require_active()?;
    let row_error = |message: String| RowError { key_id: key.id().to_string(), form: "rotate", message, typed: String::new() };
    let Some(grace) = GRACES.iter().find(|(value, ..)| *value == form.grace).map(|(_, _, hours)| hours.map(Duration::hours))
    else {
        let error = row_error("Choose a grace period from the list.".into());
        return shown_again(&state, &session, |shown| shown.row_error = Some(error)).await;
    };
    match keys::rotate(&state.store, &session.metadata(), &key, grace).await {
        Ok((_, secret, until)) => {
            let mut shown = page(&state, &session).await?;
            shown.shown = Some(ShownSecret {
                key_id: key.id().to_string(),
                what: "rotated",
                secret: secret.expose().to_owned(),
                old_until: until.map(utc),
            });
            Ok(render(&shown))
        }
        Err(CommandError::Rejected(ApiKeyError::NotFound)) => Err(ConsoleError::NotFound(NO_SUCH_KEY)),
        Err(CommandError::Rejected(e)) => {
            shown_again(&state, &session, |shown| shown.row_error = Some(row_error(sentence(&e)))).await
        }
        Err(e) => Err(ConsoleError::Internal(e.into())),
    }
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    confirm: String,
}

/// Whether `typed` confirms revoking a key named `name`: its name exactly, or the word "revoke".
fn confirms_revocation(typed: &str, name: &str) -> bool {
    let typed = typed.trim();
    typed.eq_ignore_ascii_case(REVOKE_WORD) || (!name.is_empty() && typed == name)
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    SignedForm { session, form }: SignedForm<RevokeForm>,
) -> Result<Response, ConsoleError> {
    session.require_owner()?;
    let (key, view) = owned_key(&state, &session, &raw).await?;
    session.require_active()?;
    if !confirms_revocation(&form.confirm, view.name.as_deref().unwrap_or("")) {
        let error = RowError {
            key_id: key.id().to_string(),
            form: "revoke",
            message: format!("Type the key's name or \"{REVOKE_WORD}\" to confirm."),
            typed: form.confirm.chars().take(200).collect(),
        };
        return shown_again(&state, &session, |shown| shown.row_error = Some(error)).await;
    }
    match keys::revoke(&state.store, &session.metadata(), &key).await {
        Ok(_) => Ok(Redirect::to(Nav::Keys.href()).into_response()),
        Err(CommandError::Rejected(ApiKeyError::NotFound)) => Err(ConsoleError::NotFound(NO_SUCH_KEY)),
        Err(e) => Err(ConsoleError::Internal(e.into())),
    }
}

/// A domain error as a sentence for the page.
fn sentence(e: &ApiKeyError) -> String {
    let text = e.to_string();
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| format!("{}{}.", first.to_uppercase(), chars.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_is_confirmed_by_the_name_or_the_word() {
        assert!(confirms_revocation("ci deploy", "ci deploy"));
        assert!(confirms_revocation("  ci deploy ", "ci deploy"));
        assert!(confirms_revocation("revoke", "ci deploy"));
        assert!(confirms_revocation("REVOKE", ""));
        assert!(!confirms_revocation("ci", "ci deploy"));
        assert!(!confirms_revocation("", ""), "an unnamed key needs the word");
        assert!(!confirms_revocation("CI DEPLOY", "ci deploy"), "the name exactly");
    }

    #[test]
    fn domain_errors_read_as_sentences() {
        assert_eq!(sentence(&ApiKeyError::InvalidName), "Key name must be at most 100 characters with no control characters.");
    }
}
