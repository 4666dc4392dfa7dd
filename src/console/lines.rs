//! The Lines page: the account's lines and creating one; a line's page with its QR code (an SVG
//! image, refreshed live by a `data-poll` fragment until the line connects, with its expiry), its
//! live status, linking a `whatsapp` line by pairing code instead (and a new run of QR codes once
//! they ran out), the sandbox actions on `sim` lines (a phone scans, a message arrives, the
//! session drops) and logging out after a confirmation step.
//!
//! Every action runs the command REST runs (`commands::lines`, `commands::sandbox`) with the
//! signed-in user as the caller; lines are reached only through `queries::lines`' owned lookups,
//! so another account's line is a 404 page here as it is `line_not_found` there.

use super::auth::ConsoleSession;
use super::csrf::SignedForm;
use super::page::{render, render_with, Chrome, ConsoleError, Nav};
use crate::api::error::{ApiError, ErrorCode};
use crate::api::rate_limit::RateLimits;
use crate::app::AppState;
use crate::commands::{lines as line_commands, sandbox};
use crate::queries::lines::{self as line_queries, LineView};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, SecondsFormat, Utc};
use domain::ids::{LineId, MessageId};
use domain::line::{EngineKind, LineStatus};
use serde::Deserialize;

/// The Lines routes, to be merged into the console router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/lines", get(list).post(create))
        .route("/lines/{line_id}", get(detail))
        .route("/lines/{line_id}/live", get(live))
        .route("/lines/{line_id}/qr.svg", get(qr_image))
        .route("/lines/{line_id}/scan", post(scan))
        .route("/lines/{line_id}/pairing-code", post(pairing_code))
        .route("/lines/{line_id}/new-qr", post(new_qr))
        .route("/lines/{line_id}/inbound", post(inbound))
        .route("/lines/{line_id}/disconnect", post(disconnect))
        .route("/lines/{line_id}/logout", get(confirm_logout).post(logout))
}

const NO_SUCH_LINE: &str = "There is no such line in this account.";

/// A time as the console shows it: UTC, ISO 8601, to the second.
fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The path's line id; a malformed one names no line of this account.
fn line_id(raw: &str) -> Result<LineId, ConsoleError> {
    LineId::parse(raw).map_err(|_| ConsoleError::NotFound(NO_SUCH_LINE))
}

/// What a refused request means on a page: no such line is the 404 page and a failure of ours the
/// error page; any other refusal (a field, the line's state, a limit) is shown next to its form.
fn on_form(e: ApiError) -> Result<ApiError, ConsoleError> {
    match e.code {
        ErrorCode::LineNotFound => Err(ConsoleError::NotFound(NO_SUCH_LINE)),
        ErrorCode::SubscriptionRequired => Err(ConsoleError::SubscriptionRequired),
        ErrorCode::ServerError => Err(ConsoleError::Internal(anyhow::anyhow!("{}", e.cause().unwrap_or(e.message())))),
        _ => Ok(e),
    }
}

/// A read that can only fail with no such line, or on our side.
fn read(e: ApiError) -> ConsoleError {
    on_form(e).map_or_else(|page| page, |e| ConsoleError::Internal(anyhow::anyhow!("reading a line: {}", e.message())))
}

/// The status a form shown again with a refusal is answered with.
fn refusal_status(e: &ApiError) -> StatusCode {
    match e.code {
        ErrorCode::ValidationError => StatusCode::UNPROCESSABLE_ENTITY,
        _ => e.status(),
    }
}

/// The field a validation error is about, if any.
fn field_of(e: &ApiError) -> Option<&str> {
    e.details.get("field").and_then(|f| f.as_str())
}

// ---- the list and creating a line ----

#[derive(Template)]
#[template(path = "console/lines.html")]
struct LinesPage {
    chrome: Option<Chrome>,
    csrf: String,
    lines: Vec<LineRow>,
    engines: Vec<String>,
    engine: String,
    engine_error: Option<String>,
    create_error: Option<String>,
}

struct LineRow {
    line_id: String,
    status: String,
    phone: String,
    engine: String,
    created_at: String,
}

async fn lines_page(state: &AppState, session: &ConsoleSession) -> Result<LinesPage, ConsoleError> {
    let lines = line_queries::list(&state.pool, &session.account_id).await.map_err(read)?;
    Ok(LinesPage {
        chrome: Some(session.chrome(Nav::Lines)),
        csrf: session.csrf.clone(),
        lines: lines
            .lines
            .into_iter()
            .map(|l| LineRow {
                created_at: iso(l.created_at),
                phone: l.phone.unwrap_or_default(),
                line_id: l.line_id,
                status: l.status,
                engine: l.engine,
            })
            .collect(),
        engines: [EngineKind::Whatsapp, EngineKind::Sim].iter().map(|e| e.as_str().to_owned()).collect(),
        engine: state.config.default_engine().as_str().to_owned(),
        engine_error: None,
        create_error: None,
    })
}

pub async fn list(State(state): State<AppState>, session: ConsoleSession) -> Result<Response, ConsoleError> {
    Ok(render(&lines_page(&state, &session).await?))
}

#[derive(Deserialize)]
pub struct CreateForm {
    engine: Option<String>,
}

pub async fn create(
    State(state): State<AppState>,
    SignedForm { session, form }: SignedForm<CreateForm>,
) -> Result<Response, ConsoleError> {
    session.require_active()?;
    match line_commands::create_line(&state, &session.caller(), form.engine.as_deref()).await {
        Ok(line) => Ok(Redirect::to(&format!("/console/lines/{}", line.line_id)).into_response()),
        Err(e) => {
            let e = on_form(e)?;
            let mut page = lines_page(&state, &session).await?;
            page.engine = form.engine.unwrap_or_default();
            match field_of(&e) {
                Some("engine") => page.engine_error = Some(e.message().to_owned()),
                _ => page.create_error = Some(e.message().to_owned()),
            }
            Ok(render_with(refusal_status(&e), &page))
        }
    }
}

// ---- one line ----

/// The live part of a line's page: its status, and its QR code while it waits for a scan.
pub struct Live {
    line_id: String,
    status: String,
    phone: String,
    connected_at: Option<String>,
    qr: Option<QrView>,
}

pub struct QrView {
    /// The image's address, naming the code's expiry so a new code is a new image.
    src: String,
    expires_at: String,
}

#[derive(Template)]
#[template(path = "console/line_live.html")]
struct LiveFragment {
    live: Live,
}

async fn live_of(state: &AppState, line: &LineView) -> Result<Live, ConsoleError> {
    let line_id = line_id(&line.line_id)?;
    // A look only: the page polls, so it neither waits for a starting session's first code nor
    // starts a new pairing run (a render that did would undo a `qr_expired` the page is about to
    // show).
    let qr = match line_commands::current_qr_code(state, &line_id, line).await {
        Ok(code) => code.map(|code| QrView {
            src: format!("/console/lines/{}/qr.svg?expires={}", line.line_id, code.expires_at.timestamp()),
            expires_at: iso(code.expires_at),
        }),
        // Its session has no code it can show now (the page asks again).
        Err(e) if e.code == ErrorCode::SessionUnavailable => None,
        Err(e) => return Err(read(e)),
    };
    Ok(Live {
        line_id: line.line_id.clone(),
        status: line.status.clone(),
        phone: line.phone.clone().unwrap_or_default(),
        connected_at: line.connected_at.map(iso),
        qr,
    })
}

/// What the sandbox forms show: the values typed and the refusals, next to their fields.
#[derive(Default)]
struct SandboxForms {
    scan_phone: String,
    scan_error: Option<String>,
    inbound_from: String,
    inbound_message: String,
    inbound_from_error: Option<String>,
    inbound_message_error: Option<String>,
    inbound_error: Option<String>,
    disconnect_reason: String,
    disconnect_error: Option<String>,
    pairing_phone: String,
    pairing_error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/line.html")]
struct LinePage {
    chrome: Option<Chrome>,
    csrf: String,
    line_id: String,
    engine: String,
    created_at: String,
    /// Still changes (not logged out): the live part polls.
    changing: bool,
    sim: bool,
    /// A `whatsapp` line that waits to be linked (by QR code or pairing code).
    pairing: bool,
    /// Its QR codes ran out: a button starts a new run.
    qr_expired: bool,
    /// The pairing code just asked for.
    pairing_code: Option<String>,
    live: Live,
    /// The message a sandbox inbound just made.
    received: Option<String>,
    forms: SandboxForms,
}

async fn line_page(state: &AppState, session: &ConsoleSession, raw: &str) -> Result<LinePage, ConsoleError> {
    let (_, line) = line_queries::owned(&state.pool, &session.account_id, &line_id(raw)?).await.map_err(read)?;
    Ok(LinePage {
        chrome: Some(session.chrome(Nav::Lines)),
        csrf: session.csrf.clone(),
        line_id: line.line_id.clone(),
        engine: line.engine.clone(),
        created_at: iso(line.created_at),
        changing: line.status != LineStatus::LoggedOut.as_str(),
        sim: line.engine == EngineKind::Sim.as_str(),
        pairing: line.engine == EngineKind::Whatsapp.as_str()
            && [LineStatus::PendingQr.as_str(), LineStatus::QrExpired.as_str()].contains(&line.status.as_str()),
        qr_expired: line.status == LineStatus::QrExpired.as_str(),
        pairing_code: None,
        live: live_of(state, &line).await?,
        received: None,
        forms: SandboxForms::default(),
    })
}

#[derive(Deserialize)]
pub struct DetailQuery {
    received: Option<String>,
}

pub async fn detail(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path(raw): Path<String>,
    Query(query): Query<DetailQuery>,
) -> Result<Response, ConsoleError> {
    let mut page = line_page(&state, &session, &raw).await?;
    // Only an id is echoed back, never other text from the address.
    page.received = query.received.filter(|id| MessageId::parse(id).is_ok());
    Ok(render(&page))
}

/// The live part alone, for `data-poll`.
pub async fn live(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path(raw): Path<String>,
) -> Result<Response, ConsoleError> {
    let (_, line) = line_queries::owned(&state.pool, &session.account_id, &line_id(&raw)?).await.map_err(read)?;
    Ok(render(&LiveFragment { live: live_of(&state, &line).await? }))
}

/// The QR code the line shows now, as an SVG image (what `GET /v1/lines/{id}/qr?format=svg` answers).
pub async fn qr_image(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path(raw): Path<String>,
) -> Result<Response, ConsoleError> {
    match line_commands::qr_code(&state, &session.caller(), &line_id(&raw)?).await {
        Ok((_, code)) => {
            Ok(([(header::CONTENT_TYPE, "image/svg+xml")], crate::engine::sim::qr_svg(&code.payload)).into_response())
        }
        Err(e) if e.code == ErrorCode::LineNotPendingQr => {
            Err(ConsoleError::NotFound("This line is not waiting for a scan, so it shows no QR code."))
        }
        Err(e) => Err(read(e)),
    }
}

fn to_line(line_id: &str) -> Response {
    Redirect::to(&format!("/console/lines/{line_id}")).into_response()
}

#[derive(Deserialize)]
pub struct ScanForm {
    #[serde(default)]
    phone: String,
}

pub async fn scan(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    SignedForm { session, form }: SignedForm<ScanForm>,
) -> Result<Response, ConsoleError> {
    session.require_active()?;
    let line_id = line_id(&raw)?;
    match sandbox::scan(&state, &session.caller(), line_id.as_str(), form.phone.trim()).await {
        Ok(line) => Ok(to_line(&line.line_id)),
        Err(e) => {
            let e = on_form(e)?;
            let mut page = line_page(&state, &session, line_id.as_str()).await?;
            page.forms.scan_phone = form.phone;
            page.forms.scan_error = Some(e.message().to_owned());
            Ok(render_with(refusal_status(&e), &page))
        }
    }
}

#[derive(Deserialize)]
pub struct PairingForm {
    #[serde(default)]
    phone: String,
}

/// A pairing code for the number typed, shown on the line's page (it is valid for a few minutes,
/// and only for that phone: it is not kept anywhere).
pub async fn pairing_code(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    SignedForm { session, form }: SignedForm<PairingForm>,
) -> Result<Response, ConsoleError> {
    session.require_active()?;
    let line_id = line_id(&raw)?;
    let outcome = match crate::api::fields::parse_phone("phone", form.phone.trim()) {
        Ok(phone) => line_commands::pairing_code(&state, &session.caller(), &line_id, &phone).await.map(|(_, code)| code),
        Err(e) => Err(e),
    };
    let mut page = line_page(&state, &session, line_id.as_str()).await?;
    page.forms.pairing_phone = form.phone;
    match outcome {
        Ok(code) => {
            page.pairing_code = Some(code);
            Ok(render(&page))
        }
        Err(e) => {
            let e = on_form(e)?;
            page.forms.pairing_error = Some(e.message().to_owned());
            Ok(render_with(refusal_status(&e), &page))
        }
    }
}

/// Start a new pairing run for a line whose QR codes ran out.
pub async fn new_qr(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    SignedForm { session, .. }: SignedForm<super::sign_in::NoFields>,
) -> Result<Response, ConsoleError> {
    session.require_active()?;
    let line_id = line_id(&raw)?;
    match line_commands::qr_code(&state, &session.caller(), &line_id).await {
        // No code yet is fine: the page shows it as soon as the session has one.
        Ok(_) => Ok(to_line(line_id.as_str())),
        Err(e) if e.code == ErrorCode::SessionUnavailable => Ok(to_line(line_id.as_str())),
        Err(e) => {
            let e = on_form(e)?;
            let mut page = line_page(&state, &session, line_id.as_str()).await?;
            page.forms.pairing_error = Some(e.message().to_owned());
            Ok(render_with(refusal_status(&e), &page))
        }
    }
}

#[derive(Deserialize)]
pub struct InboundForm {
    #[serde(default)]
    from: String,
    #[serde(default)]
    message: String,
}

pub async fn inbound(
    State(state): State<AppState>,
    limits: RateLimits,
    Path(raw): Path<String>,
    SignedForm { session, form }: SignedForm<InboundForm>,
) -> Result<Response, ConsoleError> {
    session.require_active()?;
    let line_id = line_id(&raw)?;
    // A text message: the form's fields as the API's (an empty sender is an absent one; the text
    // is always given, so the API's rule on it answers an empty one).
    let from = Some(form.from.trim().to_owned()).filter(|v| !v.is_empty());
    let request = sandbox::InboundRequest { from, message: Some(form.message.clone()), ..Default::default() };
    match sandbox::inbound(&state, &session.caller(), &limits, line_id.as_str(), request).await {
        Ok(received) => Ok(Redirect::to(&format!("/console/lines/{line_id}?received={}", received.message_id)).into_response()),
        Err(e) => {
            let e = on_form(e)?;
            let mut page = line_page(&state, &session, line_id.as_str()).await?;
            let message = Some(e.message().to_owned());
            match field_of(&e) {
                Some("from") => page.forms.inbound_from_error = message,
                Some("message") => page.forms.inbound_message_error = message,
                _ => page.forms.inbound_error = message,
            }
            page.forms.inbound_from = form.from;
            page.forms.inbound_message = form.message;
            Ok(render_with(refusal_status(&e), &page))
        }
    }
}

#[derive(Deserialize)]
pub struct DisconnectForm {
    #[serde(default)]
    reason: String,
}

pub async fn disconnect(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    SignedForm { session, form }: SignedForm<DisconnectForm>,
) -> Result<Response, ConsoleError> {
    session.require_active()?;
    let line_id = line_id(&raw)?;
    let reason = Some(form.reason.trim().to_owned()).filter(|r| !r.is_empty());
    match sandbox::disconnect(&state, &session.caller(), line_id.as_str(), reason).await {
        Ok(line) => Ok(to_line(&line.line_id)),
        Err(e) => {
            let e = on_form(e)?;
            let mut page = line_page(&state, &session, line_id.as_str()).await?;
            page.forms.disconnect_reason = form.reason;
            page.forms.disconnect_error = Some(e.message().to_owned());
            Ok(render_with(refusal_status(&e), &page))
        }
    }
}

// ---- logging out, after a confirmation ----

#[derive(Template)]
#[template(path = "console/line_logout.html")]
struct LogoutPage {
    chrome: Option<Chrome>,
    csrf: String,
    line_id: String,
    phone: String,
    logged_out: bool,
}

pub async fn confirm_logout(
    State(state): State<AppState>,
    session: ConsoleSession,
    Path(raw): Path<String>,
) -> Result<Response, ConsoleError> {
    let (_, line) = line_queries::owned(&state.pool, &session.account_id, &line_id(&raw)?).await.map_err(read)?;
    Ok(render(&LogoutPage {
        chrome: Some(session.chrome(Nav::Lines)),
        csrf: session.csrf.clone(),
        logged_out: line.status == LineStatus::LoggedOut.as_str(),
        phone: line.phone.unwrap_or_default(),
        line_id: line.line_id,
    }))
}

/// The confirmation form: its token is all it carries.
#[derive(Deserialize)]
pub struct Confirmed {}

pub async fn logout(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    SignedForm { session, form: Confirmed {} }: SignedForm<Confirmed>,
) -> Result<Response, ConsoleError> {
    session.require_active()?;
    let line_id = line_id(&raw)?;
    let line = line_commands::logout(&state, &session.caller(), line_id.as_str()).await.map_err(read)?;
    Ok(to_line(&line.line_id))
}
