//! Progress of long operator commands on stderr: a bar redrawn in place with events/s and ETA on a
//! terminal, and a plain line every few seconds otherwise (log files, CI).

use projections::rebuild::Progress;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct ProgressDisplay {
    label: String,
    terminal: bool,
    last_drawn: Option<Instant>,
    every: Duration,
}

impl ProgressDisplay {
    pub fn new(label: impl Into<String>) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let every = if terminal { Duration::from_millis(100) } else { Duration::from_secs(5) };
        Self { label: label.into(), terminal, last_drawn: None, every }
    }

    pub fn update(&mut self, p: Progress) {
        let due = self.last_drawn.is_none_or(|t| t.elapsed() >= self.every);
        if !due {
            return;
        }
        self.last_drawn = Some(Instant::now());
        let line = render(&self.label, p, self.terminal);
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// The final state, always drawn, and the end of the terminal line.
    pub fn finish(&mut self, p: Progress) {
        self.last_drawn = None;
        self.update(p);
        if self.terminal {
            eprintln!();
        }
    }
}

fn render(label: &str, p: Progress, bar: bool) -> String {
    let fraction = if p.total == 0 { 1.0 } else { (p.applied as f64 / p.total as f64).min(1.0) };
    let rate = if p.elapsed_secs > 0.0 { p.applied as f64 / p.elapsed_secs } else { 0.0 };
    let eta = if rate > 0.0 { format!("{:.0}s", p.total.saturating_sub(p.applied) as f64 / rate) } else { "-".into() };
    let counts = format!("{}/{} events, {:.0} events/s, ETA {eta}, position {}", p.applied, p.total, rate, p.position);
    if bar {
        const WIDTH: usize = 30;
        let filled = (fraction * WIDTH as f64).round() as usize;
        format!("{label} [{}{}] {:>3.0}% {counts}", "#".repeat(filled), "-".repeat(WIDTH - filled), fraction * 100.0)
    } else {
        format!("{label}: {:.0}% {counts}", fraction * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_shows_share_rate_and_eta() {
        let p = Progress { applied: 500, total: 1000, position: 512, elapsed_secs: 2.0 };
        assert_eq!(render("chats", p, false), "chats: 50% 500/1000 events, 250 events/s, ETA 2s, position 512");
        let bar = render("chats", p, true);
        assert!(bar.starts_with("chats [###############---------------]  50% "), "{bar}");
    }
}
