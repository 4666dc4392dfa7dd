//! Group commit for sends: concurrent sends share one transaction.
//!
//! A send on its own costs a dozen round trips and holds its account's quota row through the
//! commit's fsync, so one account's sends go one at a time. Here each account belongs to one of a
//! few shards (a task each). A shard takes whatever sends have queued for it while its previous
//! batch committed (no timer: a lone send goes at once) and decides them all in one transaction
//! of set-based statements:
//!
//! 1. one read of the accounts, the lines and the Idempotency-Key records of the whole batch;
//! 2. one statement that locks the batch's quota counters, in account order (so two batches, on
//!    two nodes, never wait on each other in a cycle), and reads them;
//! 3. the decisions, made from those reads alone: a replayed or conflicting key, a suspended
//!    account, a missing or unconnected line, the quota — a refusal never aborts the batch;
//! 4. one INSERT of the accepted sends' events, and the inline projections once over the batch
//!    (one statement per table: the counters, the Idempotency-Key records, the dispatch queue).
//!
//! Each caller gets its own outcome. Two nodes taking one Idempotency-Key at once is caught when
//! the record is written (the later batch finds it taken and does not stand); any unexpected
//! error runs the batch's sends again one by one, on the single-send path.

use super::messages::{self, Send, SendContext, SendError, SendOutcome, IDEMPOTENCY_WINDOW_HOURS};
use crate::store::{Append, EventStore, Metadata};
use chrono::{DateTime, Utc};
use domain::ids::AccountId;
use domain::plan::{Metric, PlanCatalog};
use serde_json::Value;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The most sends one batch decides; more wait for the next.
const MAX_BATCH: usize = 256;

struct Job {
    metadata: Metadata,
    account_id: AccountId,
    send: Send,
    reply: oneshot::Sender<Result<SendOutcome, SendError>>,
}

/// The per-process batcher of sends. Cheap to clone.
#[derive(Clone)]
pub struct SendBatcher {
    store: EventStore,
    plans: Arc<PlanCatalog>,
    /// No shards: group commit is off, and each send has a transaction of its own.
    shards: Arc<Vec<mpsc::UnboundedSender<Job>>>,
}

impl SendBatcher {
    /// Start `shards` shard tasks (none: group commit off); they end when the last clone of the
    /// batcher is dropped.
    pub fn start(store: EventStore, plans: Arc<PlanCatalog>, shards: usize) -> Self {
        let shards = (0..shards)
            .map(|_| {
                let (queue, jobs) = mpsc::unbounded_channel();
                tokio::spawn(run_shard(store.clone(), plans.clone(), jobs));
                queue
            })
            .collect();
        Self { store, plans, shards: Arc::new(shards) }
    }

    /// Decide and record a send: in the next batch of its account's shard, or on its own when
    /// group commit is off.
    pub async fn send(&self, metadata: &Metadata, account_id: &AccountId, send: Send) -> Result<SendOutcome, SendError> {
        if self.shards.is_empty() {
            return messages::send(&self.store, &self.plans, metadata, account_id, send).await;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        account_id.as_str().hash(&mut hasher);
        let shard = &self.shards[(hasher.finish() % self.shards.len() as u64) as usize];
        let (reply, outcome) = oneshot::channel();
        let job = Job { metadata: metadata.clone(), account_id: account_id.clone(), send, reply };
        shard.send(job).map_err(|_| SendError::Stopped)?;
        outcome.await.map_err(|_| SendError::Stopped)?
    }
}

async fn run_shard(store: EventStore, plans: Arc<PlanCatalog>, mut queue: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = queue.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        run_batch(&store, &plans, jobs).await;
    }
}

async fn run_batch(store: &EventStore, plans: &PlanCatalog, jobs: Vec<Job>) {
    let size = jobs.len();
    match decide_and_commit(store, plans, &jobs).await {
        Ok(outcomes) => {
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let _ = job.reply.send(outcome);
            }
        }
        Err(e) => {
            if !matches!(&e, SendError::Store(crate::store::AppendError::Projection(projections::ProjectionError::Claimed(_)))) {
                tracing::warn!(error = %e, error_detail = ?e, size, "a batch of sends failed; deciding them one by one");
            }
            for job in jobs {
                let outcome = messages::send(store, plans, &job.metadata, &job.account_id, job.send).await;
                let _ = job.reply.send(outcome);
            }
        }
    }
}

/// One row of the batch's read: what the send at `i` is decided on, and its key's record.
type ContextRow = (i64, Option<String>, Option<String>, Option<DateTime<Utc>>, Option<String>, Option<String>, Option<Value>);

/// Decide the batch and commit what it accepts. `Ok`: every send's outcome, in order. `Err`: the
/// transaction did not commit and no outcome stands.
async fn decide_and_commit(
    store: &EventStore,
    plans: &PlanCatalog,
    jobs: &[Job],
) -> Result<Vec<Result<SendOutcome, SendError>>, SendError> {
    let mut tx = store.pool().begin().await?;
    let accounts: Vec<&str> = jobs.iter().map(|j| j.account_id.as_str()).collect();
    let lines: Vec<&str> = jobs.iter().map(|j| j.send.line_id.as_str()).collect();
    let keys: Vec<Option<&str>> = jobs.iter().map(|j| j.send.idempotency.as_ref().map(|i| i.key.as_str())).collect();
    let rows: Vec<ContextRow> = sqlx::query_as(
        "SELECT c.i, a.status, a.plan, a.cycle_anchor, l.status, k.request_hash, k.response \
           FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS c(account_id, line_id, key, i) \
           LEFT JOIN accounts a ON a.account_id = c.account_id \
           LEFT JOIN lines l ON l.line_id = c.line_id AND l.account_id = c.account_id \
           LEFT JOIN idempotency_keys k ON k.account_id = c.account_id AND k.key = c.key \
                AND k.created_at > now() - make_interval(hours => $4)",
    )
    .bind(&accounts)
    .bind(&lines)
    .bind(&keys)
    .bind(IDEMPOTENCY_WINDOW_HOURS)
    .fetch_all(&mut *tx)
    .await?;
    let mut read: Vec<Option<ContextRow>> = vec![None; jobs.len()];
    for row in rows {
        let i = row.0 as usize - 1;
        read[i] = Some(row);
    }

    // The sends the account and line admit, with their plan and cycle.
    let mut admitted: Vec<Result<(String, DateTime<Utc>), SendError>> = Vec::with_capacity(jobs.len());
    let mut saved: Vec<Option<(String, Value)>> = Vec::with_capacity(jobs.len());
    for row in read {
        let Some((_, status, plan, anchor, line_status, hash, response)) = row else {
            admitted.push(Err(SendError::LineNotFound));
            saved.push(None);
            continue;
        };
        let context: Option<SendContext> = match (status, plan, anchor) {
            (Some(status), Some(plan), Some(anchor)) => Some((status, plan, anchor, line_status)),
            _ => None,
        };
        saved.push(hash.zip(response));
        admitted.push(
            messages::admit(context).map(|(plan, anchor)| (plan, domain::billing::cycle_containing(anchor, Utc::now()).start)),
        );
    }

    // Lock and read the counters the admitted sends count against, in account order.
    let mut counters: Vec<(&str, DateTime<Utc>)> = jobs
        .iter()
        .zip(&admitted)
        .filter_map(|(job, admitted)| admitted.as_ref().ok().map(|(_, cycle)| (job.account_id.as_str(), *cycle)))
        .collect();
    counters.sort_unstable();
    counters.dedup();
    let mut used: HashMap<(String, DateTime<Utc>), u64> = HashMap::new();
    if !counters.is_empty() {
        let (counter_accounts, cycles): (Vec<&str>, Vec<DateTime<Utc>>) = counters.into_iter().unzip();
        let locked: Vec<(String, DateTime<Utc>, i64)> = sqlx::query_as(
            "INSERT INTO usage_counters (account_id, cycle_start, metric, used) \
             SELECT a, c, $3, 0 FROM UNNEST($1::text[], $2::timestamptz[]) AS u(a, c) ORDER BY a, c \
             ON CONFLICT (account_id, cycle_start, metric) DO UPDATE SET used = usage_counters.used \
             RETURNING account_id, cycle_start, used",
        )
        .bind(&counter_accounts)
        .bind(&cycles)
        .bind(Metric::SentMessages.as_str())
        .fetch_all(&mut *tx)
        .await?;
        used = locked.into_iter().map(|(account, cycle, n)| ((account, cycle), n.max(0) as u64)).collect();
    }

    // Each send in its turn, as if they had come one after another.
    let mut outcomes: Vec<Result<SendOutcome, SendError>> = Vec::with_capacity(jobs.len());
    let mut appends: Vec<Append> = Vec::new();
    let mut accepted_at: Vec<usize> = Vec::new();
    // Keys taken by an earlier send of this batch: its request hash and response.
    let mut taken: HashMap<(&str, &str), (String, Value)> = HashMap::new();
    for (i, ((job, admitted), saved)) in jobs.iter().zip(admitted).zip(saved).enumerate() {
        if let Some(idem) = &job.send.idempotency {
            let earlier = saved.or_else(|| taken.get(&(job.account_id.as_str(), idem.key.as_str())).cloned());
            if let Some((hash, response)) = earlier {
                outcomes.push(messages::replay(idem, &hash, response));
                continue;
            }
        }
        let (plan, cycle) = match admitted {
            Ok(admitted) => admitted,
            Err(refused) => {
                outcomes.push(Err(refused));
                continue;
            }
        };
        let limit = plans.get(&plan).map(|(_, l)| l.sent_messages).unwrap_or(0);
        // Every admitted send's counter was locked and read above; one missing would be a bug, and
        // must not read as zero used: the batch is decided again one by one.
        let Some(counted) = used.get_mut(&(job.account_id.to_string(), cycle)) else {
            return Err(SendError::Db(sqlx::Error::RowNotFound));
        };
        if *counted >= limit {
            outcomes.push(Err(SendError::QuotaExceeded { used: *counted, limit, plan }));
            continue;
        }
        *counted += 1;
        let (append, outcome) = messages::queue(&job.metadata, &job.account_id, job.send.clone(), cycle);
        if let (Some(idem), SendOutcome::Accepted { response, .. }) = (&job.send.idempotency, &outcome) {
            let response = serde_json::to_value(response).expect("a send response serialises");
            taken.insert((job.account_id.as_str(), idem.key.as_str()), (idem.request_hash.clone(), response));
        }
        appends.push(append);
        accepted_at.push(i);
        outcomes.push(Ok(outcome));
    }

    if !appends.is_empty() {
        let refs: Vec<&Append> = appends.iter().collect();
        store.append_batch_in(&mut tx, &refs).await?;
    }
    tx.commit().await?;
    for append in &appends {
        store.committed(append);
    }
    tracing::trace!(size = jobs.len(), accepted = accepted_at.len(), "a batch of sends committed");
    Ok(outcomes)
}
