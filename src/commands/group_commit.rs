//! Group commit for sends: concurrent sends share one transaction.
//!
//! A send on its own costs a dozen round trips and holds its account's quota row through the
//! commit's fsync, so one account's sends go one at a time. Here each account belongs to one of a
//! few shards (a task each). A shard takes whatever sends have queued for it while its previous
//! batch committed (no timer: a lone send goes at once) and decides them all in one transaction
//! of set-based statements:
//!
//! 1. one read of the accounts, the lines, the Idempotency-Key records and the quota counters of
//!    the whole batch;
//! 2. the decisions, made from that read alone: a replayed or conflicting key, a suspended
//!    account, a missing or unconnected line, the quota — a refusal never aborts the batch;
//! 3. one statement that checks and adds the accepted sends to their quota counters, taken in
//!    account order (so two batches, on two nodes, never wait on each other in a cycle): each
//!    counter only if it still has the room the decisions counted on;
//! 4. one INSERT of the accepted sends' events, and the other inline projections once over the
//!    batch (one statement per table: the Idempotency-Key records, the dispatch queue).
//!
//! Each caller gets its own outcome. What ran alongside on another node is caught when it is
//! written: a counter another batch filled since the read, or an Idempotency-Key it took, and the
//! batch does not stand; that, or any unexpected error, runs the batch's sends again one by one, on
//! the single-send path (which locks the counter before it decides).

use super::messages::{self, Send, SendContext, SendError, SendOutcome, IDEMPOTENCY_WINDOW_HOURS};
use crate::store::{Append, EventStore, Metadata};
use chrono::{DateTime, Utc};
use domain::ids::AccountId;
use domain::plan::{Metric, PlanCatalog};
use projections::Projection;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
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
        Err(undecided) => {
            match undecided {
                Undecided::Raced => tracing::debug!(size, "a batch of sends raced another; deciding them one by one"),
                Undecided::Failed(e) => {
                    tracing::warn!(error = %e, error_detail = ?e, size, "a batch of sends failed; deciding them one by one")
                }
            }
            for job in jobs {
                let outcome = messages::send(store, plans, &job.metadata, &job.account_id, job.send).await;
                let _ = job.reply.send(outcome);
            }
        }
    }
}

/// One row of the batch's read: what the send at `i` is decided on, its key's record, and the
/// account's latest sent-messages counter (its cycle and count).
type ContextRow = (
    i64,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
    Option<Value>,
    Option<DateTime<Utc>>,
    Option<i64>,
);

/// Why a batch did not stand (its transaction rolled back, no outcome given); either way its
/// sends are decided again one by one.
enum Undecided {
    /// A transaction that ran alongside took what the batch's read had found free: room on a
    /// quota counter, or an Idempotency-Key.
    Raced,
    Failed(SendError),
}

impl<E: Into<SendError>> From<E> for Undecided {
    fn from(e: E) -> Self {
        match e.into() {
            SendError::Store(crate::store::AppendError::Projection(projections::ProjectionError::Claimed(_))) => Undecided::Raced,
            e => Undecided::Failed(e),
        }
    }
}

/// Decide the batch and commit what it accepts. `Ok`: every send's outcome, in order.
async fn decide_and_commit(
    store: &EventStore,
    plans: &PlanCatalog,
    jobs: &[Job],
) -> Result<Vec<Result<SendOutcome, SendError>>, Undecided> {
    let started = std::time::Instant::now();
    let mut tx = store.pool().begin().await?;
    let accounts: Vec<&str> = jobs.iter().map(|j| j.account_id.as_str()).collect();
    let lines: Vec<&str> = jobs.iter().map(|j| j.send.line_id.as_str()).collect();
    let keys: Vec<Option<&str>> = jobs.iter().map(|j| j.send.idempotency.as_ref().map(|i| i.key.as_str())).collect();
    let rows: Vec<ContextRow> = sqlx::query_as(
        "SELECT c.i, a.status, a.plan, a.cycle_anchor, l.status, k.request_hash, k.response, u.cycle_start, u.used \
           FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS c(account_id, line_id, key, i) \
           LEFT JOIN accounts a ON a.account_id = c.account_id \
           LEFT JOIN lines l ON l.line_id = c.line_id AND l.account_id = c.account_id \
           LEFT JOIN idempotency_keys k ON k.account_id = c.account_id AND k.key = c.key \
                AND k.created_at > now() - make_interval(hours => $4) \
           LEFT JOIN LATERAL (SELECT cycle_start, used FROM usage_counters \
                WHERE account_id = c.account_id AND metric = $5 ORDER BY cycle_start DESC LIMIT 1) u ON true",
    )
    .bind(&accounts)
    .bind(&lines)
    .bind(&keys)
    .bind(IDEMPOTENCY_WINDOW_HOURS)
    .bind(Metric::SentMessages.as_str())
    .fetch_all(&mut *tx)
    .await?;
    let mut read: Vec<Option<ContextRow>> = vec![None; jobs.len()];
    for row in rows {
        let i = row.0 as usize - 1;
        read[i] = Some(row);
    }

    // The sends the account and line admit, with their plan and cycle; and what the admitted
    // sends' counters held when read (a counter of an earlier cycle, or none: nothing used yet).
    let mut admitted: Vec<Result<(String, DateTime<Utc>), SendError>> = Vec::with_capacity(jobs.len());
    let mut saved: Vec<Option<(String, Value)>> = Vec::with_capacity(jobs.len());
    let mut used: HashMap<(String, DateTime<Utc>), u64> = HashMap::new();
    for (job, row) in jobs.iter().zip(read) {
        let Some((_, status, plan, anchor, line_status, hash, response, counted_cycle, counted)) = row else {
            admitted.push(Err(SendError::LineNotFound));
            saved.push(None);
            continue;
        };
        let context: Option<SendContext> = match (status, plan, anchor) {
            (Some(status), Some(plan), Some(anchor)) => Some((status, plan, anchor, line_status)),
            _ => None,
        };
        saved.push(hash.zip(response));
        let decided =
            messages::admit(context).map(|(plan, anchor)| (plan, domain::billing::cycle_containing(anchor, Utc::now()).start));
        if let Ok((_, cycle)) = &decided {
            let counted = if counted_cycle == Some(*cycle) { counted.unwrap_or(0).max(0) as u64 } else { 0 };
            used.insert((job.account_id.to_string(), *cycle), counted);
        }
        admitted.push(decided);
    }

    // Each send in its turn, as if they had come one after another.
    let mut outcomes: Vec<Result<SendOutcome, SendError>> = Vec::with_capacity(jobs.len());
    let mut appends: Vec<Append> = Vec::new();
    let mut accepted_at: Vec<usize> = Vec::new();
    // Keys taken by an earlier send of this batch: its request hash and response.
    let mut taken: HashMap<(&str, &str), (String, Value)> = HashMap::new();
    // What the accepted sends add to each counter, and its limit; in account order.
    let mut added: BTreeMap<(&str, DateTime<Utc>), (i64, u64)> = BTreeMap::new();
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
        // Every admitted send's counter was read above; one missing would be a bug, and must not
        // read as zero used: the batch is decided again one by one.
        let Some(counted) = used.get_mut(&(job.account_id.to_string(), cycle)) else {
            return Err(Undecided::Failed(SendError::Db(sqlx::Error::RowNotFound)));
        };
        if *counted >= limit {
            outcomes.push(Err(SendError::QuotaExceeded { used: *counted, limit, plan }));
            continue;
        }
        *counted += 1;
        added.entry((job.account_id.as_str(), cycle)).or_insert((0, limit)).0 += 1;
        let (append, outcome) = messages::queue(&job.metadata, &job.account_id, job.send.clone(), cycle);
        if let (Some(idem), SendOutcome::Accepted { response, .. }) = (&job.send.idempotency, &outcome) {
            let response = serde_json::to_value(response).expect("a send response serialises");
            taken.insert((job.account_id.as_str(), idem.key.as_str()), (idem.request_hash.clone(), response));
        }
        appends.push(append);
        accepted_at.push(i);
        outcomes.push(Ok(outcome));
    }

    // The accepted sends are added to their counters by one statement that takes them in account
    // order and adds to each only while it still has the room the decisions counted on (a batch
    // on another node may have used it since the read); then the counters stay locked to the
    // commit. The usage projection, whose work that is, is not run again over these events.
    if !added.is_empty() {
        let (mut counter_accounts, mut cycles, mut adds, mut limits) = (vec![], vec![], vec![], vec![]);
        for ((account, cycle), (n, limit)) in &added {
            counter_accounts.push(*account);
            cycles.push(*cycle);
            adds.push(*n);
            limits.push(i64::try_from(*limit).unwrap_or(i64::MAX));
        }
        let counted: Vec<String> = sqlx::query_scalar(
            "WITH added AS (SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[]) \
                 AS a(account_id, cycle_start, n, quota)) \
             INSERT INTO usage_counters (account_id, cycle_start, metric, used) \
             SELECT account_id, cycle_start, $5, n FROM added WHERE n <= quota ORDER BY account_id, cycle_start \
             ON CONFLICT (account_id, cycle_start, metric) DO UPDATE SET used = usage_counters.used + EXCLUDED.used \
               WHERE usage_counters.used + EXCLUDED.used <= (SELECT quota FROM added a \
                   WHERE a.account_id = usage_counters.account_id AND a.cycle_start = usage_counters.cycle_start) \
             RETURNING account_id",
        )
        .bind(&counter_accounts)
        .bind(&cycles)
        .bind(&adds)
        .bind(&limits)
        .bind(Metric::SentMessages.as_str())
        .fetch_all(&mut *tx)
        .await?;
        if counted.len() < added.len() {
            // Let the counters go before the sends are decided again one by one (they lock them).
            tx.rollback().await?;
            return Err(Undecided::Raced);
        }
    }
    if !appends.is_empty() {
        let refs: Vec<&Append> = appends.iter().collect();
        let usage = projections::messaging::UsageCounters.name();
        if let Err(e) = store.append_batch_in_applied(&mut tx, &refs, &[usage]).await {
            tx.rollback().await?;
            return Err(e.into());
        }
    }
    tx.commit().await?;
    crate::metrics::global().append(started.elapsed(), jobs.len());
    for append in &appends {
        store.committed(append);
    }
    tracing::trace!(size = jobs.len(), accepted = accepted_at.len(), "a batch of sends committed");
    Ok(outcomes)
}
