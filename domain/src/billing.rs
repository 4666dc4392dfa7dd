//! Monthly billing cycles anchored at the account's creation.
//!
//! A cycle starts on the anchor's day of the month at the anchor's time of day. In months too short
//! for that day (an anchor on the 31st in April), the cycle starts on the month's last day instead.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BillingCycle {
    /// Inclusive.
    pub start: DateTime<Utc>,
    /// Exclusive: the start of the next cycle.
    pub end: DateTime<Utc>,
}

/// The start of the cycle that begins in the month `months` months after the anchor's month.
fn cycle_start(anchor: DateTime<Utc>, months: u32) -> DateTime<Utc> {
    let first_of_anchor_month = NaiveDate::from_ymd_opt(anchor.year(), anchor.month(), 1).expect("valid date");
    let first = first_of_anchor_month + Months::new(months);
    let last_day = (first + Months::new(1)).pred_opt().expect("valid date").day();
    let date = first.with_day(anchor.day().min(last_day)).expect("valid day");
    Utc.from_utc_datetime(&date.and_time(anchor.time()))
}

/// The billing cycle that contains `at`. Instants before the anchor belong to the first cycle.
pub fn cycle_containing(anchor: DateTime<Utc>, at: DateTime<Utc>) -> BillingCycle {
    if at < anchor {
        return BillingCycle { start: anchor, end: cycle_start(anchor, 1) };
    }
    let mut months = ((at.year() - anchor.year()) * 12 + at.month() as i32 - anchor.month() as i32).max(0) as u32;
    if cycle_start(anchor, months) > at {
        months -= 1;
    }
    BillingCycle { start: cycle_start(anchor, months), end: cycle_start(anchor, months + 1) }
}

/// The cycle named by a calendar month (`YYYY-MM`): the one that starts in that month.
pub fn cycle_starting_in(anchor: DateTime<Utc>, year: i32, month: u32) -> Option<BillingCycle> {
    let months = (year - anchor.year()) * 12 + month as i32 - anchor.month() as i32;
    let months = u32::try_from(months).ok()?;
    Some(BillingCycle { start: cycle_start(anchor, months), end: cycle_start(anchor, months + 1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn cycle_runs_from_anchor_day_to_the_same_day_next_month() {
        let c = cycle_containing(t("2026-01-15T10:00:00Z"), t("2026-03-20T00:00:00Z"));
        assert_eq!(c.start, t("2026-03-15T10:00:00Z"));
        assert_eq!(c.end, t("2026-04-15T10:00:00Z"));
    }

    #[test]
    fn instant_before_the_anchor_time_on_anchor_day_is_in_the_previous_cycle() {
        let c = cycle_containing(t("2026-01-15T10:00:00Z"), t("2026-03-15T09:59:59Z"));
        assert_eq!(c.start, t("2026-02-15T10:00:00Z"));
        let c = cycle_containing(t("2026-01-15T10:00:00Z"), t("2026-03-15T10:00:00Z"));
        assert_eq!(c.start, t("2026-03-15T10:00:00Z"));
    }

    #[test]
    fn anchor_on_the_31st_clamps_to_short_months_and_returns() {
        let anchor = t("2026-01-31T08:00:00Z");
        let feb = cycle_containing(anchor, t("2026-03-01T00:00:00Z"));
        assert_eq!(feb.start, t("2026-02-28T08:00:00Z"));
        assert_eq!(feb.end, t("2026-03-31T08:00:00Z"));
        let year_later = cycle_containing(anchor, t("2027-01-31T08:00:00Z"));
        assert_eq!(year_later.start, t("2027-01-31T08:00:00Z"));
    }

    #[test]
    fn first_cycle_starts_at_the_anchor() {
        let anchor = t("2026-11-25T12:34:56Z");
        let c = cycle_containing(anchor, anchor);
        assert_eq!(c, BillingCycle { start: anchor, end: t("2026-12-25T12:34:56Z") });
    }

    #[test]
    fn named_month_gives_the_cycle_that_starts_in_it() {
        let anchor = t("2026-01-31T08:00:00Z");
        let c = cycle_starting_in(anchor, 2026, 4).unwrap();
        assert_eq!(c.start, t("2026-04-30T08:00:00Z"));
        assert!(cycle_starting_in(anchor, 2025, 12).is_none());
    }
}
