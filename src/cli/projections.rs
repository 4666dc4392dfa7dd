//! `bridge projections …`: status, rebuild without downtime, verify against a fresh replay.

use super::progress::ProgressDisplay;
use super::JsonFlag;
use anyhow::{anyhow, bail};
use clap::Subcommand;
use projections::rebuild::{self, Progress};
use projections::Projection;
use serde_json::json;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum ProjectionsCommand {
    /// Each projection's checkpoint, lag and whether a runner is active.
    Status(JsonFlag),
    /// Rebuild read models from the log while the API keeps serving; safe to interrupt and rerun.
    Rebuild {
        /// The projection: `messages`, `chats` (read models) or `usage_counters` (the quota
        /// counters, written inline: appends pause for the moment of the switch).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Every projection that can be rebuilt.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Replay a read model into scratch tables and report any difference from the live ones
    /// (exit 1 if there is one).
    Verify {
        name: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

const BATCH_SIZE: i64 = 1000;

/// The asynchronous projections, and the inline ones that can be rebuilt (the quota counters).
fn known() -> Vec<Arc<dyn Projection>> {
    let inline = crate::store::EventStore::inline_projections().into_iter().filter(|p| !p.tables().is_empty());
    crate::server::async_projections().into_iter().chain(inline).collect()
}

fn find(name: &str) -> anyhow::Result<Arc<dyn Projection>> {
    let all = known();
    let names: Vec<&str> = all.iter().map(|p| p.name()).collect();
    let known = names.join(", ");
    all.iter().find(|p| p.name() == name).cloned().ok_or_else(|| anyhow!("no projection `{name}` (there are: {known})"))
}

pub async fn run(command: ProjectionsCommand, pool: &sqlx::PgPool) -> anyhow::Result<ExitCode> {
    match command {
        ProjectionsCommand::Status(out) => status(pool, out).await,
        ProjectionsCommand::Rebuild { name, all, out } => {
            let targets: Vec<Arc<dyn Projection>> = if all {
                known().into_iter().filter(|p| !p.tables().is_empty()).collect()
            } else {
                vec![find(name.as_deref().unwrap_or_default())?]
            };
            let mut results = Vec::new();
            for projection in targets {
                let mut display = ProgressDisplay::new(format!("rebuilding {}", projection.name()));
                let mut last = None;
                let rebuilt = rebuild::rebuild(pool, projection.as_ref(), BATCH_SIZE, |p: Progress| {
                    last = Some(p);
                    display.update(p);
                })
                .await?;
                if let Some(p) = last {
                    display.finish(p);
                }
                if !out.json {
                    println!(
                        "rebuilt {} from {} events{} in {:.1}s; now at position {}",
                        rebuilt.projection,
                        rebuilt.events,
                        if rebuilt.resumed { " (resumed)" } else { "" },
                        rebuilt.elapsed_secs,
                        rebuilt.checkpoint.global_position
                    );
                }
                results.push(rebuilt);
            }
            if out.json {
                println!("{}", json!({"rebuilt": results}));
            }
            Ok(ExitCode::SUCCESS)
        }
        ProjectionsCommand::Verify { name, out } => {
            let projection = find(&name)?;
            let mut display = ProgressDisplay::new(format!("replaying {name}"));
            let mut last = None;
            let verified = rebuild::verify(pool, projection.as_ref(), BATCH_SIZE, |p: Progress| {
                last = Some(p);
                display.update(p);
            })
            .await?;
            if let Some(p) = last {
                display.finish(p);
            }
            let same = verified.differences.is_empty();
            if out.json {
                println!("{}", json!({"same": same, "verified": verified}));
            } else {
                for d in &verified.differences {
                    println!("only in the {} {}: {}", d.side, d.table, d.row);
                }
                if verified.more_differences > 0 {
                    println!("… and {} more differences", verified.more_differences);
                }
                println!(
                    "{name}: {} rows compared at position {}: {}",
                    verified.rows_compared,
                    verified.checkpoint.global_position,
                    if same { "identical to a fresh replay" } else { "DIFFERS from a fresh replay" }
                );
            }
            Ok(if same { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

async fn status(pool: &sqlx::PgPool, out: JsonFlag) -> anyhow::Result<ExitCode> {
    let names: Vec<&str> = crate::server::async_projections().iter().map(|p| p.name()).collect();
    if names.is_empty() {
        bail!("no asynchronous projections");
    }
    let status = projections::runtime::status(pool, &names).await?;
    super::print(out.json, json!({"projections": status}), || {
        status
            .iter()
            .map(|s| {
                format!(
                    "{:<20} position {:>10}  lag {:>8}  {}",
                    s.name,
                    s.checkpoint.global_position,
                    s.lag,
                    if s.active { "active" } else { "idle" }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    });
    Ok(ExitCode::SUCCESS)
}
