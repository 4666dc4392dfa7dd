//! The API explorer: pick any operation of the OpenAPI document, fill in the form made from its
//! parameters and request body ([`super::openapi_form`]), and send it with an API key typed in
//! for this visit. The request goes from the browser to the REST API on this origin
//! (`assets/explorer.js`); the key never reaches a console route, so nothing here can log or keep
//! it. The page shows the response (status and body) and the equivalent `curl` line.

use super::auth::ConsoleSession;
use super::openapi_form::{self, Operation};
use super::page::{render, Chrome, ConsoleError, Nav};
use crate::app::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

/// The explorer's routes, to be merged into the console router.
pub fn routes() -> Router<AppState> {
    Router::new().route("/explorer", get(explorer)).route("/assets/explorer.js", get(script))
}

/// The operations of one tag, for the picker.
struct Group {
    tag: String,
    operations: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "console/explorer.html")]
struct ExplorerPage {
    chrome: Option<Chrome>,
    groups: Vec<Group>,
    selected: String,
    operation: Option<Operation>,
    base: String,
    /// The account's lines, offered for `line_id` fields.
    line_ids: Vec<String>,
}

#[derive(Deserialize)]
pub struct Pick {
    op: Option<String>,
}

pub async fn explorer(
    State(state): State<AppState>,
    session: ConsoleSession,
    Query(pick): Query<Pick>,
) -> Result<Response, ConsoleError> {
    let doc = crate::http::openapi::document_value(state.config.allow_private_urls);
    let operations = openapi_form::operations(doc);
    let selected = pick.op.unwrap_or_default();
    let operation = match selected.as_str() {
        "" => None,
        id => Some(
            operations
                .iter()
                .find(|o| o.id == id)
                .cloned()
                .ok_or(ConsoleError::NotFound("There is no such endpoint in the API."))?,
        ),
    };
    let mut groups: Vec<Group> = Vec::new();
    for op in &operations {
        let entry = (op.id.clone(), format!("{} {}", op.method, op.path));
        match groups.last_mut() {
            Some(group) if group.tag == op.tag => group.operations.push(entry),
            _ => groups.push(Group { tag: op.tag.clone(), operations: vec![entry] }),
        }
    }
    let line_ids = crate::queries::lines::list(&state.pool, &session.account_id)
        .await
        .map_err(|e| ConsoleError::Internal(anyhow::anyhow!("reading lines: {}", e.message())))?
        .lines
        .into_iter()
        .filter(|l| l.status != "logged_out")
        .map(|l| l.line_id)
        .collect();
    Ok(render(&ExplorerPage {
        chrome: Some(session.chrome(Nav::Explorer)),
        groups,
        selected,
        operation,
        base: openapi_form::base(doc).to_owned(),
        line_ids,
    }))
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("assets/explorer.js")).into_response()
}
