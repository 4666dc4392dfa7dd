//! Line commands. Creation counts against the plan's `lines` limit, checked and appended in one
//! transaction that holds the account's row lock, so concurrent creations cannot overshoot it.

use super::{execute, CommandError};
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
