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

/// What one UTC day counted: messages queued to send, and webhook deliveries charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayUsage {
    pub day: chrono::NaiveDate,
    pub sent_messages: u64,
    pub webhook_events: u64,
}

/// The account's sent messages and charged webhook events per UTC day in `[from, to)`, read from
/// the same events the counters count (`message.queued`, `webhook_delivery.charged`); every day of
/// the range is present, zero when nothing happened.
pub async fn per_day(
    pool: &PgPool,
    account_id: &AccountId,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DayUsage>, sqlx::Error> {
    let rows: Vec<(chrono::NaiveDate, i64, i64)> = sqlx::query_as(
        "SELECT (recorded_at AT TIME ZONE 'UTC')::date AS day, \
                count(*) FILTER (WHERE event_type = 'message.queued'), \
                count(*) FILTER (WHERE event_type = 'webhook_delivery.charged') \
           FROM events \
          WHERE tenant_id = $1 AND recorded_at >= $2 AND recorded_at < $3 \
            AND event_type IN ('message.queued', 'webhook_delivery.charged') \
          GROUP BY 1",
    )
    .bind(account_id.as_str())
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let counted: BTreeMap<_, _> = rows.into_iter().map(|(day, sent, charged)| (day, (sent, charged))).collect();
    let last = (to - chrono::Duration::microseconds(1)).date_naive();
    Ok(from
        .date_naive()
        .iter_days()
        .take_while(|day| *day <= last)
        .map(|day| {
            let (sent, charged) = counted.get(&day).copied().unwrap_or((0, 0));
            DayUsage { day, sent_messages: sent.max(0) as u64, webhook_events: charged.max(0) as u64 }
        })
        .collect())
}

/// Which billing cycles an export covers: each account's cycles that start in `[from, to)`.
#[derive(Debug, Clone, Copy)]
pub struct ExportPeriod {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

impl ExportPeriod {
    /// The period asked for: a month (`cycle`), or `from` and `to`. On a bad request, the field at
    /// fault and what is wrong with it.
    pub fn choose(
        cycle: Option<&str>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<Self, (&'static str, String)> {
        match (cycle, from, to) {
            (Some(month), None, None) => {
                Self::month(month).ok_or_else(|| ("cycle", format!("the cycle is a month as YYYY-MM, not `{month}`")))
            }
            (None, Some(from), Some(to)) if from < to => Ok(Self { from, to }),
            (None, Some(_), Some(_)) => Err(("from", "from must be before to".into())),
            _ => Err(("cycle", "give a cycle (YYYY-MM), or from and to, not both".into())),
        }
    }

    /// `YYYY-MM`: the cycles that start in that calendar month (UTC).
    pub fn month(value: &str) -> Option<Self> {
        let (year, month) = value.split_once('-')?;
        let (year, month): (i32, u32) = (year.parse().ok()?, month.parse().ok()?);
        let from = chrono::NaiveDate::from_ymd_opt(year, month, 1)?;
        let to = from.checked_add_months(chrono::Months::new(1))?;
        let midnight = |d: chrono::NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
        Some(Self { from: midnight(from)?, to: midnight(to)? })
    }
}

/// One metric of one account in one billing cycle.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsageRow {
    pub account_id: String,
    pub account_name: String,
    pub cycle_start: DateTime<Utc>,
    pub cycle_end: DateTime<Utc>,
    /// The plan in force at the end of the cycle (now, for the current cycle).
    pub plan: String,
    pub metric: &'static str,
    /// For `sent_messages` and `webhook_events`, what the cycle counted; for `lines`, the lines
    /// held (not logged out) at the end of the cycle, or now.
    pub used: u64,
    /// The plan's limit, as configured now; `None` for a plan no longer configured.
    pub limit: Option<u64>,
}

/// Usage per account, billing cycle and metric for every cycle in `period`, in one query.
pub async fn export(
    pool: &PgPool,
    plans: &domain::plan::PlanCatalog,
    period: ExportPeriod,
    now: DateTime<Utc>,
) -> Result<Vec<UsageRow>, sqlx::Error> {
    export_of(pool, plans, None, period, now).await
}

/// [`export`] of one account only (what the console's download gives a tenant).
pub async fn export_account(
    pool: &PgPool,
    plans: &domain::plan::PlanCatalog,
    account_id: &AccountId,
    period: ExportPeriod,
    now: DateTime<Utc>,
) -> Result<Vec<UsageRow>, sqlx::Error> {
    export_of(pool, plans, Some(account_id), period, now).await
}

async fn export_of(
    pool: &PgPool,
    plans: &domain::plan::PlanCatalog,
    account: Option<&AccountId>,
    period: ExportPeriod,
    now: DateTime<Utc>,
) -> Result<Vec<UsageRow>, sqlx::Error> {
    let accounts: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT account_id, name, cycle_anchor FROM accounts WHERE $1::text IS NULL OR account_id = $1 ORDER BY account_id",
    )
    .bind(account.map(AccountId::as_str))
    .fetch_all(pool)
    .await?;
    // The cycles are computed here (month lengths, the anchor's day), then looked up together.
    let (mut ids, mut names, mut starts, mut ends) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (id, name, anchor) in &accounts {
        let mut cycle = domain::billing::cycle_containing(*anchor, period.from.max(*anchor));
        if cycle.start < period.from {
            cycle = domain::billing::cycle_containing(*anchor, cycle.end);
        }
        while cycle.start < period.to && cycle.start <= now {
            ids.push(id.clone());
            names.push(name.clone());
            starts.push(cycle.start);
            ends.push(cycle.end);
            cycle = domain::billing::cycle_containing(*anchor, cycle.end);
        }
    }
    type Row = (String, String, DateTime<Utc>, DateTime<Utc>, String, i64, i64, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "WITH cycles AS (SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) \
                         AS c(account_id, name, cycle_start, cycle_end)), \
              at AS (SELECT c.*, LEAST(c.cycle_end, $5::timestamptz) AS until FROM cycles c) \
         SELECT at.account_id, at.name, at.cycle_start, at.cycle_end, \
                COALESCE((SELECT e.payload->>'to' FROM events e \
                           WHERE e.stream_type = 'account' AND e.stream_id = at.account_id \
                             AND e.event_type = 'account.plan_changed' AND e.recorded_at < at.until \
                           ORDER BY e.stream_version DESC LIMIT 1), \
                         (SELECT e.payload->>'plan' FROM events e \
                           WHERE e.stream_type = 'account' AND e.stream_id = at.account_id AND e.stream_version = 1)), \
                COALESCE((SELECT u.used FROM usage_counters u WHERE u.account_id = at.account_id \
                           AND u.cycle_start = at.cycle_start AND u.metric = 'sent_messages'), 0), \
                COALESCE((SELECT u.used FROM usage_counters u WHERE u.account_id = at.account_id \
                           AND u.cycle_start = at.cycle_start AND u.metric = 'webhook_events'), 0), \
                (SELECT count(*) FROM events c WHERE c.tenant_id = at.account_id AND c.event_type = 'line.created' \
                   AND c.recorded_at < at.until \
                   AND NOT EXISTS (SELECT 1 FROM events o WHERE o.stream_type = 'line' AND o.stream_id = c.stream_id \
                                     AND o.event_type = 'line.logged_out' AND o.recorded_at < at.until)) \
           FROM at ORDER BY at.account_id, at.cycle_start",
    )
    .bind(&ids)
    .bind(&names)
    .bind(&starts)
    .bind(&ends)
    .bind(now)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(rows.len() * 3);
    for (account_id, account_name, cycle_start, cycle_end, plan, sent, delivered, lines) in rows {
        let limits = plans.get(&plan).ok().map(|(_, limits)| *limits);
        for (metric, used) in [(Metric::SentMessages, sent), (Metric::WebhookEvents, delivered), (Metric::Lines, lines)] {
            out.push(UsageRow {
                account_id: account_id.clone(),
                account_name: account_name.clone(),
                cycle_start,
                cycle_end,
                plan: plan.clone(),
                metric: metric.as_str(),
                used: used.max(0) as u64,
                limit: limits.map(|l| l.limit(metric)),
            });
        }
    }
    Ok(out)
}

/// The rows as CSV (RFC 4180: fields with a comma, quote or line break are quoted).
pub fn to_csv(rows: &[UsageRow]) -> String {
    fn field(value: &str) -> String {
        if value.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", value.replace('"', "\"\""))
        } else {
            value.to_owned()
        }
    }
    let mut out = String::from("account_id,account_name,cycle_start,cycle_end,plan,metric,used,limit\r\n");
    for r in rows {
        let limit = r.limit.map(|l| l.to_string()).unwrap_or_default();
        let fields = [
            field(&r.account_id),
            field(&r.account_name),
            r.cycle_start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            r.cycle_end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            field(&r.plan),
            r.metric.to_owned(),
            r.used.to_string(),
            limit,
        ];
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_a_month_or_a_range_never_both() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(ExportPeriod::choose(Some("2026-12"), None, None).unwrap().from, t("2026-12-01T00:00:00Z"));
        let range = ExportPeriod::choose(None, Some(t("2026-01-01T00:00:00Z")), Some(t("2026-02-01T00:00:00Z"))).unwrap();
        assert_eq!(range.to, t("2026-02-01T00:00:00Z"));
        assert_eq!(ExportPeriod::choose(Some("2026-13"), None, None).unwrap_err().0, "cycle");
        assert_eq!(
            ExportPeriod::choose(None, Some(t("2026-02-01T00:00:00Z")), Some(t("2026-01-01T00:00:00Z"))).unwrap_err().0,
            "from"
        );
        assert!(ExportPeriod::choose(Some("2026-12"), Some(t("2026-01-01T00:00:00Z")), None).is_err());
        assert!(ExportPeriod::choose(None, None, None).is_err());
    }

    #[test]
    fn a_month_names_the_cycles_starting_in_it() {
        let p = ExportPeriod::month("2026-12").unwrap();
        assert_eq!(p.from.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(p.to.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert!(ExportPeriod::month("2026-13").is_none());
        assert!(ExportPeriod::month("december").is_none());
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let row = UsageRow {
            account_id: "acc_1".into(),
            account_name: "Acme, \"Inc\"".into(),
            cycle_start: "2026-11-01T00:00:00Z".parse().unwrap(),
            cycle_end: "2026-12-01T00:00:00Z".parse().unwrap(),
            plan: "pro".into(),
            metric: "sent_messages",
            used: 3,
            limit: Some(10000),
        };
        let csv = to_csv(&[row]);
        assert_eq!(
            csv.lines().nth(1).unwrap(),
            "acc_1,\"Acme, \"\"Inc\"\"\",2026-11-01T00:00:00Z,2026-12-01T00:00:00Z,pro,sent_messages,3,10000"
        );
    }
}
