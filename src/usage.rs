//! Reading the quota counters that inline projections keep per account and billing cycle.

use chrono::{DateTime, Utc};
use domain::ids::AccountId;
use domain::plan::Metric;
use sqlx::PgPool;
use std::collections::BTreeMap;

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
