//! The Usage page's chart, drawn here as SVG (no library, no script): for each day a pair of
//! bars, sent messages and webhook events, on one scale. The page shows the same numbers in a
//! table; the chart only makes them easy to compare.

use crate::usage::DayUsage;
use std::fmt::Write;

const BAR: u64 = 9;
const GAP: u64 = 6;
const LEFT: u64 = 44;
const TOP: u64 = 12;
const PLOT_HEIGHT: u64 = 160;
/// Below the plot: the day labels and the legend.
const BOTTOM: u64 = 44;

/// One series: its name in the legend, its CSS class, and its value on a day.
type Series = (&'static str, &'static str, fn(&DayUsage) -> u64);

/// The series drawn, in order.
const SERIES: [Series; 2] =
    [("sent messages", "bar-sent", |d| d.sent_messages), ("webhook events", "bar-webhook", |d| d.webhook_events)];

/// The chart of `days` as an SVG element. Everything in it is a number or a date, written by us:
/// it can be put into a page as is.
pub fn svg(days: &[DayUsage]) -> String {
    let step = 2 * BAR + GAP;
    let width = LEFT + step * days.len().max(1) as u64 + GAP;
    let height = TOP + PLOT_HEIGHT + BOTTOM;
    let peak = days.iter().flat_map(|d| SERIES.map(|(_, _, value)| value(d))).max().unwrap_or(0).max(1);
    let base = TOP + PLOT_HEIGHT;
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" aria-labelledby="chart-title" data-test="usage-chart" data-peak="{peak}" class="chart">"#
    );
    out.push_str(r#"<title id="chart-title">Sent messages and webhook events per day (UTC)</title>"#);
    // The scale: zero and the peak, with a line at each.
    for (value, y) in [(0, base), (peak, TOP)] {
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" y1="{y}" x2="{width}" y2="{y}" class="axis"/><text x="{x}" y="{ty}" text-anchor="end" class="label">{value}</text>"##,
            x = LEFT - 4,
            ty = y + 4
        );
    }
    for (i, day) in days.iter().enumerate() {
        let x0 = LEFT + GAP + step * i as u64;
        for (s, (name, class, value)) in SERIES.iter().enumerate() {
            let v = value(day);
            let h = v * PLOT_HEIGHT / peak;
            let _ = write!(
                out,
                r#"<rect x="{x}" y="{y}" width="{BAR}" height="{h}" class="{class}" data-day="{day}" data-value="{v}"><title>{day}: {v} {name}</title></rect>"#,
                x = x0 + BAR * s as u64,
                y = base - h,
                day = day.day,
            );
        }
        // A date under the first bar pair of each week (and the first day).
        if i % 7 == 0 {
            let _ = write!(
                out,
                r#"<text x="{x0}" y="{y}" class="label">{label}</text>"#,
                y = base + 14,
                label = day.day.format("%m-%d")
            );
        }
    }
    let legend_y = base + 34;
    for (s, (name, class, _)) in SERIES.iter().enumerate() {
        let x = LEFT + 140 * s as u64;
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{y}" width="10" height="10" class="{class}"/><text x="{tx}" y="{legend_y}" class="label">{name}</text>"#,
            y = legend_y - 9,
            tx = x + 14
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn day(d: u32, sent: u64, webhook: u64) -> DayUsage {
        DayUsage { day: NaiveDate::from_ymd_opt(2026, 3, d).unwrap(), sent_messages: sent, webhook_events: webhook }
    }

    #[test]
    fn bars_are_drawn_to_one_scale_with_the_numbers_they_stand_for() {
        let chart = svg(&[day(1, 4, 0), day(2, 2, 1)]);
        assert!(chart.starts_with("<svg") && chart.ends_with("</svg>"));
        assert!(chart.contains(r#"data-peak="4""#));
        // The peak is the full height, half of it half, nothing no height at all.
        assert!(chart.contains(r#"height="160" class="bar-sent" data-day="2026-03-01" data-value="4""#), "{chart}");
        assert!(chart.contains(r#"height="80" class="bar-sent" data-day="2026-03-02" data-value="2""#));
        assert!(chart.contains(r#"height="0" class="bar-webhook" data-day="2026-03-01" data-value="0""#));
        assert!(chart.contains(r#"height="40" class="bar-webhook" data-day="2026-03-02" data-value="1""#));
        assert!(chart.contains("<title>2026-03-02: 1 webhook events</title>"));
    }

    #[test]
    fn an_empty_cycle_is_a_flat_chart() {
        let chart = svg(&[day(1, 0, 0)]);
        assert!(chart.contains(r#"data-peak="1""#), "no division by zero: {chart}");
        assert_eq!(chart.matches(r#"height="0""#).count(), 2);
        assert!(svg(&[]).contains("</svg>"));
    }
}
