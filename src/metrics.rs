//! Prometheus metrics: what this process counts as it works (requests, appends, sends, webhook
//! deliveries), and what is read from the database when scraped (projection lag, queue depth,
//! lines by status), rendered in the text exposition format.
//!
//! The counters are process-wide (one process is one node). Recording is a read lock and atomic
//! adds on the hot path; a new label set takes the write lock once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Upper bounds of the batch size buckets.
const SIZE_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, and one for +Inf.
    counts: Vec<AtomicU64>,
    /// The sum, in millionths (of a second, for latencies).
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum_micros: AtomicU64::new(0) }
    }

    pub fn observe(&self, value: f64) {
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(elapsed.as_secs_f64());
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            let le = self.bounds.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// A family of series of one kind, one per label set (the labels rendered, in a fixed order).
struct Family<T> {
    series: RwLock<BTreeMap<String, Arc<T>>>,
    make: fn() -> T,
}

impl<T> Family<T> {
    fn new(make: fn() -> T) -> Self {
        Self { series: RwLock::new(BTreeMap::new()), make }
    }

    fn get(&self, labels: &[(&str, &str)]) -> Arc<T> {
        let key = render_labels(labels);
        if let Some(series) = self.series.read().expect("metrics lock").get(&key) {
            return series.clone();
        }
        self.series.write().expect("metrics lock").entry(key).or_insert_with(|| Arc::new((self.make)())).clone()
    }

    fn each(&self, mut f: impl FnMut(&str, &T)) {
        for (labels, series) in self.series.read().expect("metrics lock").iter() {
            f(labels, series);
        }
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out
}

/// What this process has counted since it started.
pub struct Metrics {
    http_requests: Family<AtomicU64>,
    http_latency: Family<Histogram>,
    append_latency: Histogram,
    append_batch_size: Histogram,
    dispatch_sends: Family<AtomicU64>,
    dispatch_live_nodes: Family<AtomicU64>,
    replica_reads: Family<AtomicU64>,
    webhook_deliveries: Family<AtomicU64>,
    webhook_latency: Family<Histogram>,
}

fn counter() -> AtomicU64 {
    AtomicU64::new(0)
}

fn latency() -> Histogram {
    Histogram::new(&LATENCY_BUCKETS)
}

/// This process's metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        http_requests: Family::new(counter),
        http_latency: Family::new(latency),
        append_latency: latency(),
        append_batch_size: Histogram::new(&SIZE_BUCKETS),
        dispatch_sends: Family::new(counter),
        dispatch_live_nodes: Family::new(counter),
        replica_reads: Family::new(counter),
        webhook_deliveries: Family::new(counter),
        webhook_latency: Family::new(latency),
    })
}

impl Metrics {
    /// An HTTP request answered: its route (the matched pattern, never the raw path, so ids do not
    /// make a series each), method, status and time taken.
    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.http_requests.get(&[("method", method), ("route", route), ("status", &status)]).fetch_add(1, Ordering::Relaxed);
        self.http_latency.get(&[("method", method), ("route", route)]).observe_duration(elapsed);
    }

    /// A transaction that appended events committed: how long it took, and how many commands
    /// it carried (one, or a group commit's batch).
    pub fn append(&self, elapsed: Duration, commands: usize) {
        self.append_latency.observe_duration(elapsed);
        self.append_batch_size.observe(commands as f64);
    }

    /// The dispatcher finished a send attempt: `sent`, `failed`, `later` (the engine could not
    /// send now; the message waits), or `abandoned` (the lease could not be renewed in time; the
    /// line's next node sends it again under the same WhatsApp id).
    pub fn dispatch_send(&self, node: &str, outcome: &str) {
        self.dispatch_sends.get(&[("node", node), ("outcome", outcome)]).fetch_add(1, Ordering::Relaxed);
    }

    /// How many live dispatch nodes `node`'s dispatcher shares the lines with (itself included).
    pub fn dispatch_live_nodes(&self, node: &str, live: usize) {
        self.dispatch_live_nodes.get(&[("node", node)]).store(live as u64, Ordering::Relaxed);
    }

    /// A read endpoint chose where to read: `replica`, or the primary because the replica was
    /// behind (`primary_replica_behind`) or could not be reached (`primary_replica_unavailable`).
    pub fn replica_read(&self, served_by: &str) {
        self.replica_reads.get(&[("served_by", served_by)]).fetch_add(1, Ordering::Relaxed);
    }

    /// A webhook delivery attempt ended: `delivered`, `retrying` or `failed` (given up), and how
    /// long the receiver took.
    pub fn webhook_delivery(&self, outcome: &str, elapsed: Duration) {
        self.webhook_deliveries.get(&[("outcome", outcome)]).fetch_add(1, Ordering::Relaxed);
        self.webhook_latency.get(&[("outcome", outcome)]).observe_duration(elapsed);
    }

    /// The counters and histograms, in the text format.
    pub fn render(&self, out: &mut String) {
        header(out, "bridge_http_requests_total", "counter", "HTTP requests answered, by method, route and status.");
        self.http_requests.each(|labels, c| counter_line(out, "bridge_http_requests_total", labels, c));
        header(out, "bridge_http_request_duration_seconds", "histogram", "Time to answer HTTP requests, by method and route.");
        self.http_latency.each(|labels, h| h.render(out, "bridge_http_request_duration_seconds", labels));
        header(out, "bridge_append_duration_seconds", "histogram", "Time of transactions that append events, commit included.");
        self.append_latency.render(out, "bridge_append_duration_seconds", "");
        header(out, "bridge_append_batch_size", "histogram", "Commands per appending transaction (group commit batches).");
        self.append_batch_size.render(out, "bridge_append_batch_size", "");
        header(out, "bridge_dispatch_sends_total", "counter", "Send attempts finished by the dispatcher, by node and outcome.");
        self.dispatch_sends.each(|labels, c| counter_line(out, "bridge_dispatch_sends_total", labels, c));
        header(out, "bridge_dispatch_live_nodes", "gauge", "The live dispatch nodes a node's dispatcher shares the lines with.");
        self.dispatch_live_nodes.each(|labels, c| counter_line(out, "bridge_dispatch_live_nodes", labels, c));
        header(out, "bridge_replica_reads_total", "counter", "Reads of the read endpoints, by where they were served.");
        self.replica_reads.each(|labels, c| counter_line(out, "bridge_replica_reads_total", labels, c));
        header(out, "bridge_webhook_deliveries_total", "counter", "Webhook delivery attempts, by outcome.");
        self.webhook_deliveries.each(|labels, c| counter_line(out, "bridge_webhook_deliveries_total", labels, c));
        header(
            out,
            "bridge_webhook_delivery_duration_seconds",
            "histogram",
            "Time webhook receivers took to answer, by outcome.",
        );
        self.webhook_latency.each(|labels, h| h.render(out, "bridge_webhook_delivery_duration_seconds", labels));
    }
}

pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter_line(out: &mut String, name: &str, labels: &str, c: &AtomicU64) {
    let _ = writeln!(out, "{name}{{{labels}}} {}", c.load(Ordering::Relaxed));
}

/// One gauge sample.
pub fn gauge(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{}}} {value}", render_labels(labels));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_renders_cumulative_buckets_its_sum_and_count() {
        let h = Histogram::new(&SIZE_BUCKETS);
        for v in [1.0, 3.0, 3.0, 1000.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"4\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"512\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_sum{a=\"b\"} 1007\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 4\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(render_labels(&[("route", "a\"b\\c\nd")]), "route=\"a\\\"b\\\\c\\nd\"");
    }
}
