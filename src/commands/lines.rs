//! Line commands. Creation counts against the plan's `lines` limit, checked and appended in one
//! transaction that holds the account's row lock, so concurrent creations cannot overshoot it.
//!
//! [`create_line`] and [`logout`] are the requests as REST (`POST /v1/lines`,
//! `DELETE /v1/lines/{id}`) and the console make them: checked, run, answered with the line.

use super::{execute, CommandError};
use crate::api::error::{ApiError, ErrorCode};
use crate::api::fields::parse_line_id;
use crate::api::tenant::Caller;
use crate::app::AppState;
use crate::engine::{EngineError, EngineLine, QrCode};
use crate::queries::lines::{self as line_queries, LineView};
use crate::queries::owned::OwnedLine;
use crate::store::{Append, EventStore, Metadata, StreamAppend};
use domain::ids::{AccountId, LineId};
use domain::line::{EngineKind, Line, LineCommand, LineError, LineEvent, LineState, LineStatus};
use domain::phone::PhoneNumber;
use domain::plan::PlanCatalog;
use domain::Aggregate;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CreateLineError {
    #[error("line limit of the plan reached")]
    LimitReached { used: u64, limit: u64, plan: String },
    #[error(transparent)]
    Command(#[from] CommandError<LineError>),
}

/// The published error of a line command that failed.
pub fn line_error(e: CommandError<LineError>) -> ApiError {
    match e {
        CommandError::Rejected(LineError::NotFound) => ErrorCode::LineNotFound.into(),
        CommandError::Rejected(LineError::NotConnected) => ErrorCode::LineNotConnected.into(),
        CommandError::Rejected(
            e @ (LineError::LoggedOut | LineError::LinkedToAnother(_) | LineError::NumberInUse | LineError::NotPending),
        ) => ApiError::new(ErrorCode::LineConflict, format!("{e}.")),
        CommandError::Rejected(LineError::AlreadyExists) => ApiError::server(anyhow::anyhow!("line id collision")),
        other => ApiError::server(other),
    }
}

/// Create a line of the caller's account with the engine named (the configured default when
/// none); the new line, waiting for its QR code to be scanned.
pub async fn create_line(state: &AppState, caller: &Caller, engine: Option<&str>) -> Result<LineView, ApiError> {
    let engine = match engine {
        None => state.config.default_engine(),
        Some(e) => EngineKind::parse(e)
            .ok_or_else(|| ApiError::invalid_field("engine", format!("Unknown engine `{e}`; available: whatsapp, sim.")))?,
    };
    let account_id = &caller.account_id;
    let line = create(&state.store, &state.plans, &caller.metadata, account_id, engine).await.map_err(|e| match e {
        CreateLineError::LimitReached { used, limit, plan } => {
            ApiError::over_limit(ErrorCode::LineLimitReached, "lines", used, limit, plan)
        }
        CreateLineError::Command(e) => line_error(e),
    })?;
    // A `whatsapp` line's session starts at once (on this node, if no other takes it first).
    state.engine.wake_session(&line.line_id);
    let (_, line) = line_queries::owned(&state.pool, account_id, &line.line_id).await?;
    Ok(line)
}

/// Log the caller's line `raw_line_id` out of WhatsApp (for good); the line as it is then.
pub async fn logout(state: &AppState, caller: &Caller, raw_line_id: &str) -> Result<LineView, ApiError> {
    let (line, view) = line_queries::owned(&state.pool, &caller.account_id, &parse_line_id(raw_line_id)?).await?;
    let (_, events) =
        handle(&state.store, &caller.metadata, &line, LineCommand::Logout { reason: None }).await.map_err(line_error)?;
    if !events.is_empty() {
        let line_id = line.id();
        // Its worker fails whatever is still queued.
        state.dispatcher.wake(line_id);
        if let Err(e) = state.engine.logout(&engine_line(line_id, &view)).await {
            tracing::warn!(%line_id, error = %e, "the engine could not log the line out; it is logged out here");
        }
    }
    line_queries::view(&state.pool, &line).await
}

/// The line as the engines know it.
pub fn engine_line(line_id: &LineId, view: &LineView) -> EngineLine {
    EngineLine { id: line_id.clone(), engine: EngineKind::parse(&view.engine).unwrap_or(EngineKind::Sim) }
}

/// How long a request for a QR code waits for a starting session to show its first one.
const QR_WAIT: Duration = Duration::from_secs(5);

/// The QR code the caller's line `line_id` shows now, with the line. A `whatsapp` line whose
/// codes ran out (`qr_expired`) starts a new pairing run, and the request waits briefly for its
/// first code. Else `line_not_found`, `line_not_pending_qr` with the line's `status`, or
/// `session_unavailable` while no code is ready.
pub async fn qr_code(state: &AppState, caller: &Caller, line_id: &LineId) -> Result<(LineView, QrCode), ApiError> {
    let view = waiting_line(state, caller, line_id).await?;
    let engine = engine_line(line_id, &view);
    let deadline = tokio::time::Instant::now() + QR_WAIT;
    loop {
        match state.engine.qr_code(&engine).await {
            Ok(Some(code)) => return Ok((view, code)),
            Ok(None) if tokio::time::Instant::now() < deadline => {
                // A session that is starting writes its first code in a moment (on any node).
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(None) => {
                return Err(ApiError::new(
                    ErrorCode::SessionUnavailable,
                    "The line's WhatsApp session has no QR code yet; try again in a moment.",
                ))
            }
            Err(e) => return Err(session_unavailable(e)),
        }
    }
}

/// The QR code a line the caller has read (`view`) shows now, if it is waiting for a scan and its
/// session has one: a look only (the console's live view, which asks again by itself). Unlike
/// [`qr_code`] it never starts a new pairing run and never waits.
pub async fn current_qr_code(state: &AppState, line_id: &LineId, view: &LineView) -> Result<Option<QrCode>, ApiError> {
    if view.status != LineStatus::PendingQr.as_str() {
        return Ok(None);
    }
    state.engine.qr_code(&engine_line(line_id, view)).await.map_err(session_unavailable)
}

/// The 8-character code to type on the phone of `phone` (WhatsApp → Linked devices → Link with
/// phone number) to link the caller's line `line_id`, with the line.
pub async fn pairing_code(
    state: &AppState,
    caller: &Caller,
    line_id: &LineId,
    phone: &PhoneNumber,
) -> Result<(LineView, String), ApiError> {
    let view = waiting_line(state, caller, line_id).await?;
    let code = state.engine.pairing_code(&engine_line(line_id, &view), phone).await.map_err(session_unavailable)?;
    Ok((view, code))
}

/// The caller's line, waiting to be linked: a line whose QR codes ran out starts a new pairing
/// run first. Else `line_not_found`, or `line_not_pending_qr` with the line's `status`.
async fn waiting_line(state: &AppState, caller: &Caller, line_id: &LineId) -> Result<LineView, ApiError> {
    let (line, mut view) = line_queries::owned(&state.pool, &caller.account_id, line_id).await?;
    if view.status == LineStatus::QrExpired.as_str() {
        handle(&state.store, &caller.metadata, &line, LineCommand::RestartPairing).await.map_err(line_error)?;
        state.engine.wake_session(line_id);
        view = line_queries::view(&state.pool, &line).await?;
    }
    if view.status != LineStatus::PendingQr.as_str() {
        return Err(not_pending(&view));
    }
    Ok(view)
}

fn not_pending(view: &LineView) -> ApiError {
    ApiError::new(
        ErrorCode::LineNotPendingQr,
        format!("The line is {}; it can be linked only while it waits for a scan.", view.status),
    )
    .with("status", view.status.clone())
}

/// An engine that cannot do it now; a refusal (WhatsApp said no) is a conflict with its reason.
fn session_unavailable(e: EngineError) -> ApiError {
    match e {
        EngineError::Unavailable(reason) => ApiError::new(
            ErrorCode::SessionUnavailable,
            format!("The line's WhatsApp session is not ready: {reason}; try again in a moment."),
        ),
        EngineError::Rejected(reason) => ApiError::new(ErrorCode::LineConflict, format!("WhatsApp refused: {reason}.")),
    }
}

pub async fn create(
    store: &EventStore,
    plans: &PlanCatalog,
    metadata: &Metadata,
    account_id: &AccountId,
    engine: EngineKind,
) -> Result<LineState, CreateLineError> {
    let mut tx = store.pool().begin().await.map_err(CommandError::Db)?;
    // The account's row lock serialises line creation per account.
    let plan: String = sqlx::query_scalar("SELECT plan FROM accounts WHERE account_id = $1 FOR UPDATE")
        .bind(account_id.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(CommandError::Db)?;
    let used: i64 = sqlx::query_scalar("SELECT count(*) FROM lines WHERE account_id = $1 AND status <> 'logged_out'")
        .bind(account_id.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(CommandError::Db)?;
    let limit = plans.get(&plan).map(|(_, l)| l.lines).unwrap_or(0);
    let used = used.max(0) as u64;
    if used >= limit {
        return Err(CreateLineError::LimitReached { used, limit, plan });
    }
    let line_id = LineId::new();
    let events = Line::default()
        .decide(LineCommand::Create { line_id: line_id.clone(), account_id: account_id.clone(), engine }, &())
        .map_err(CommandError::Rejected)?;
    let append = Append {
        tenant_id: account_id.to_string(),
        metadata: metadata.clone(),
        streams: vec![StreamAppend::new(Line::STREAM_TYPE, line_id.as_str(), 0, &events)],
    };
    store.append_in(&mut tx, &append).await.map_err(CommandError::Store)?;
    tx.commit().await.map_err(CommandError::Db)?;
    store.committed(&append);
    Ok(Line::from_events(&events).line.expect("created"))
}

/// The unique index that gives a sim number to one line at most (migration 0012).
const SIM_NUMBER_INDEX: &str = "lines_sim_phone_key";

/// Run a command on the account's line. (The aggregate checks the account again: a line whose
/// stream names another account is `NotFound`.)
pub async fn handle(
    store: &EventStore,
    metadata: &Metadata,
    line: &OwnedLine,
    command: LineCommand,
) -> Result<(LineState, Vec<LineEvent>), CommandError<LineError>> {
    let account_id = line.account_id();
    let (state, stored) = execute::<Line, _>(
        store,
        line.id().as_str(),
        |l| l.line.as_ref().map(|s| s.account_id.to_string()),
        metadata,
        |line: &Line| match &line.line {
            Some(l) if l.account_id == *account_id => line.decide(command.clone(), &()),
            _ => Err(LineError::NotFound),
        },
    )
    .await
    .map_err(|e| match e {
        CommandError::Store(store) if store.violated_constraint() == Some(SIM_NUMBER_INDEX) => {
            CommandError::Rejected(LineError::NumberInUse)
        }
        other => other,
    })?;
    let events = stored
        .iter()
        .map(|e| e.decode())
        .collect::<Result<Vec<LineEvent>, _>>()
        .map_err(|e| CommandError::Projection(e.into()))?;
    Ok((state.line.expect("exists"), events))
}
