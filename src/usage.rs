//! Reading the quota counters that inline projections keep per account and billing cycle.

use chrono::{DateTime, Utc};
use domain::ids::AccountId;
use domain::plan::Metric;
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;

/// Lock (creating it if need be) the counter of `metric` for the cycle, and return its count.
/// Compared to the limit while the lock is held, in the transaction that would add to it, the
/// count cannot overshoot under concurrent commands.
pub async fn lock_counter(
    conn: &mut PgConnection,
    account_id: &str,
    cycle_start: DateTime<Utc>,
    metric: Metric,
) -> Result<u64, sqlx::Error> {
    let used: i64 = sqlx::query_scalar(
        "INSERT INTO usage_counters (account_id, cycle_start, metric, used) VALUES ($1, $2, $3, 0) \
         ON CONFLICT (account_id, cycle_start, metric) DO UPDATE SET used = usage_counters.used \
         RETURNING used",
    )
    .bind(account_id)
    .bind(cycle_start)
    .bind(metric.as_str())
    .fetch_one(conn)
    .await?;
    Ok(used.max(0) as u64)
}

/// Used counts of the cycle that starts at `cycle_start`, and the lines the account has now (those
/// not logged out), in one query.
pub async fn current(
    pool: &PgPool,
    account_id: &AccountId,
    cycle_start: DateTime<Utc>,
) -> Result<BTreeMap<Metric, u64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT metric, used FROM usage_counters WHERE account_id = $1 AND cycle_start = $2 \
             UNION ALL \
             SELECT 'lines', count(*) FROM lines WHERE account_id = $1 AND status <> 'logged_out'",
    )
    .bind(account_id.as_str())
    .bind(cycle_start)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(metric, used)| {
            let metric = Metric::ALL.into_iter().find(|m| m.as_str() == metric)?;
            Some((metric, used.max(0) as u64))
        })
        .collect())
}
