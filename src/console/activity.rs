//! The Activity page: the account's own events, newest first, fifty a page (keyset on the log
//! position), each with its time, type, stream and who acted, and its payload without secrets
//! (`queries::activity`). Every user of the account may read it, suspended or not.

use super::auth::ConsoleSession;
use super::page::{render, utc, Chrome, ConsoleError, Nav};
use crate::app::AppState;
use crate::queries::activity::{newest_first, ActivityEntry, Who};
use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

const PAGE_SIZE: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new().route("/activity", get(activity))
}

pub struct EventRow {
    pub position: i64,
    pub recorded_at: String,
    pub event_type: String,
    pub stream: String,
    /// `api_key`, `console_user`, `operator` or `system`.
    pub actor_kind: &'static str,
    /// How the actor is shown: `API key key_…`, an email, `operator`, `system`.
    pub actor: String,
    pub request_id: Option<String>,
    pub payload: String,
}

impl From<ActivityEntry> for EventRow {
    fn from(e: ActivityEntry) -> Self {
        let actor = match &e.who {
            Who::ApiKey(key_id) => format!("API key {key_id}"),
            Who::ConsoleUser(email) => email.clone(),
            Who::Operator => "operator".to_owned(),
            Who::System => "system".to_owned(),
        };
        EventRow {
            position: e.position,
            recorded_at: utc(e.recorded_at),
            event_type: e.event_type,
            stream: e.stream,
            actor_kind: e.who.kind(),
            actor,
            request_id: e.request_id,
            payload: serde_json::to_string_pretty(&e.payload).unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/activity.html")]
struct ActivityPage {
    chrome: Option<Chrome>,
    events: Vec<EventRow>,
    /// Whether this is a later page (then a link back to the newest).
    paged: bool,
    older: Option<String>,
}

#[derive(Deserialize)]
pub struct ActivityQuery {
    before: Option<String>,
}

pub async fn activity(
    State(state): State<AppState>,
    session: ConsoleSession,
    Query(query): Query<ActivityQuery>,
) -> Result<Response, ConsoleError> {
    let before = crate::queries::position_cursor(query.before.as_deref())
        .map_err(|_| ConsoleError::NotFound("There is no such page of activity."))?;
    let page = newest_first(&state.pool, &session.account_id, before, PAGE_SIZE).await?;
    Ok(render(&ActivityPage {
        chrome: Some(session.chrome(Nav::Activity)),
        events: page.entries.into_iter().map(EventRow::from).collect(),
        paged: before.is_some(),
        older: page.older,
    }))
}
