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
use crate::queries::lines::{self as line_queries, LineView};
use crate::queries::owned::OwnedLine;
use crate::store::{Append, EventStore, Metadata, StreamAppend};
use domain::ids::{AccountId, LineId};
use domain::line::{EngineKind, Line, LineCommand, LineError, LineEvent, LineState};
use domain::plan::PlanCatalog;
use domain::Aggregate;

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
        CommandError::Rejected(e @ (LineError::LoggedOut | LineError::LinkedToAnother(_) | LineError::NumberInUse)) => {
            ApiError::new(ErrorCode::LineConflict, format!("{e}."))
        }
        CommandError::Rejected(LineError::AlreadyExists) => ApiError::server(anyhow::anyhow!("line id collision")),
        other => ApiError::server(other),
    }
}

/// Create a line of the caller's account with the engine named (`sim` when none); the new line,
/// waiting for its QR code to be scanned.
pub async fn create_line(state: &AppState, caller: &Caller, engine: Option<&str>) -> Result<LineView, ApiError> {
    let engine = match engine {
        None => EngineKind::Sim,
        Some(e) => EngineKind::parse(e)
            .ok_or_else(|| ApiError::invalid_field("engine", format!("Unknown engine `{e}`; available: sim.")))?,
    };
    let account_id = &caller.account_id;
    let line = create(&state.store, &state.plans, &caller.metadata, account_id, engine).await.map_err(|e| match e {
        CreateLineError::LimitReached { used, limit, plan } => {
            ApiError::over_limit(ErrorCode::LineLimitReached, "lines", used, limit, plan)
        }
        CreateLineError::Command(e) => line_error(e),
    })?;
    let (_, line) = line_queries::owned(&state.pool, account_id, &line.line_id).await?;
    Ok(line)
}

/// Log the caller's line `raw_line_id` out of WhatsApp (for good); the line as it is then.
pub async fn logout(state: &AppState, caller: &Caller, raw_line_id: &str) -> Result<LineView, ApiError> {
    let (line, _) = line_queries::owned(&state.pool, &caller.account_id, &parse_line_id(raw_line_id)?).await?;
    let (_, events) = handle(&state.store, &caller.metadata, &line, LineCommand::Logout).await.map_err(line_error)?;
    if !events.is_empty() {
        let line_id = line.id();
        // Its worker fails whatever is still queued.
        state.dispatcher.wake(line_id);
        if let Err(e) = state.engine.logout(line_id).await {
            tracing::warn!(%line_id, error = %e, "the engine could not log the line out; it is logged out here");
        }
    }
    line_queries::view(&state.pool, &line).await
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
