//! `bridge audit …` (auditors) and `bridge usage export` (billing).

use super::JsonFlag;
use crate::audit;
use crate::audit::exported_digest::ExportedDigest;
use crate::audit::parse_time;
use crate::config::Config;
use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use clap::{Subcommand, ValueEnum};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute every hash chain and check every signed digest; exit 1 on any break.
    Verify {
        /// Only this account's streams (digests are still checked whole).
        #[arg(long)]
        account: Option<String>,
        /// Also prove that the log still extends this digest, kept outside the database (the
        /// output of `bridge audit digest --latest --json`).
        #[arg(long, value_name = "FILE")]
        against: Option<PathBuf>,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Record a signed digest of the stream heads now (the server records one periodically).
    Digest {
        /// Record nothing: print the newest digest, with what checking it needs, to keep outside
        /// the database (and check against later with `audit verify --against FILE`).
        #[arg(long)]
        latest: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Print an account's events in log order as NDJSON: who acted, which request; no secret.
    Replay {
        #[arg(long)]
        account: String,
        /// Recorded at or after (RFC 3339, or a date: YYYY-MM-DD).
        #[arg(long, value_parser = parse_time)]
        from: Option<DateTime<Utc>>,
        /// Recorded before (RFC 3339, or a date: YYYY-MM-DD).
        #[arg(long, value_parser = parse_time)]
        to: Option<DateTime<Utc>>,
        /// One stream: `line/line_…`, or just its id.
        #[arg(long)]
        stream: Option<String>,
    },
    /// The account's lines, keys (ids and status), webhooks and usage as they were at a moment.
    State {
        #[arg(long)]
        account: String,
        #[arg(long = "as-of", value_parser = parse_time)]
        as_of: DateTime<Utc>,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Subcommand)]
pub enum UsageCommand {
    /// Usage per account, billing cycle and metric, with the plan and its limit.
    Export {
        /// The cycles that start in this month (YYYY-MM).
        #[arg(long, conflicts_with_all = ["from", "to"], required_unless_present_all = ["from", "to"])]
        cycle: Option<String>,
        /// The cycles that start on or after this date (YYYY-MM-DD or RFC 3339).
        #[arg(long, value_parser = parse_time, requires = "to")]
        from: Option<DateTime<Utc>>,
        /// … and before this one.
        #[arg(long, value_parser = parse_time, requires = "from")]
        to: Option<DateTime<Utc>>,
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

fn parse_account(id: &str) -> anyhow::Result<String> {
    domain::ids::AccountId::parse(id).map(|a| a.to_string()).map_err(|e| anyhow!("{e}"))
}

async fn account_exists(pool: &sqlx::PgPool, account_id: &str) -> anyhow::Result<()> {
    if !audit::account_exists(pool, account_id).await? {
        bail!("no account {account_id}");
    }
    Ok(())
}

fn read_exported_digest(path: &Path) -> anyhow::Result<ExportedDigest> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ExportedDigest::parse(&text)
        .map_err(|e| anyhow!("{} is not a digest printed by `bridge audit digest --latest --json`: {e}", path.display()))
}

pub async fn audit(command: AuditCommand, config: &Config, pool: &sqlx::PgPool) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Verify { account, against, out } => {
            let account = account.as_deref().map(parse_account).transpose()?;
            if let Some(a) = &account {
                account_exists(pool, a).await?;
            }
            let against = against.as_deref().map(read_exported_digest).transpose()?;
            let key = crate::secrets::MasterKey::load_checked(config, pool).await?;
            let report = audit::verify_against(pool, key.audit_key(), account.as_deref(), against.as_ref()).await?;
            if out.json {
                println!("{}", serde_json::to_value(&report)?);
            } else {
                println!(
                    "{} events in {} streams, {} digests checked; {} events are newer than the last digest",
                    report.events_checked, report.streams_checked, report.digests_checked, report.events_after_last_digest
                );
                if let Some(id) = report.against_digest {
                    println!("checked against the exported digest {id}");
                }
                for b in &report.breaks {
                    let position = b.position.map_or("-".to_owned(), |p| p.to_string());
                    let stream = b.stream.as_deref().unwrap_or("-");
                    println!("{:?} at position {position}, stream {stream}: {}", b.kind, b.detail);
                }
                let only_the_file = report.breaks.iter().all(|b| b.kind == audit::BreakKind::NotAuthentic);
                println!(
                    "{}",
                    match (report.ok, only_the_file) {
                        (true, _) => "the log is intact",
                        (false, true) => "THE EXPORTED DIGEST IS NOT AUTHENTIC; the log was not compared with it",
                        (false, false) => "THE LOG HAS BEEN ALTERED",
                    }
                );
            }
            Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        AuditCommand::Digest { latest: true, out } => {
            let key = crate::secrets::MasterKey::load_checked(config, pool).await?;
            let Some(latest) = ExportedDigest::latest(pool).await? else {
                bail!("no digest has been recorded yet (record one with `bridge audit digest`)");
            };
            // Never hand an auditor a digest that does not check out.
            latest.authenticate(key.audit_key()).map_err(|why| {
                anyhow!("the newest digest, {}, does not check out: {why}; run `bridge audit verify`", latest.digest_id)
            })?;
            super::print(out.json, serde_json::to_value(&latest)?, || {
                format!(
                    "digest {} covers the log up to position {} (recorded at {}), {} stream heads\nroot      {}\nsignature {}\n\
                     Keep the output of `bridge audit digest --latest --json` outside the database, and check the log \
                     against it with `bridge audit verify --against FILE`.",
                    latest.digest_id,
                    latest.covers.global_position,
                    latest.recorded_at,
                    latest.heads.len(),
                    hex::encode(&latest.root),
                    hex::encode(&latest.signature)
                )
            });
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Digest { latest: false, out } => {
            let key = crate::secrets::MasterKey::load_checked(config, pool).await?;
            let recorded = audit::digest::record(pool, key.audit_key()).await?;
            let value = match &recorded {
                Some(d) => {
                    json!({"recorded": true, "digest_id": d.digest_id, "covers": d.covers, "heads_changed": d.heads_changed})
                }
                None => json!({"recorded": false}),
            };
            super::print(out.json, value, || match recorded {
                Some(d) => format!(
                    "recorded digest {} up to position {} ({} streams changed)",
                    d.digest_id, d.covers.global_position, d.heads_changed
                ),
                None => "nothing new in the log since the last digest".into(),
            });
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Replay { account, from, to, stream } => {
            let account_id = parse_account(&account)?;
            account_exists(pool, &account_id).await?;
            let filter = audit::replay::Filter { account_id, from, to, stream, after: None, limit: None };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            audit::replay::replay(pool, &filter, |_, line| writeln!(out, "{line}")).await?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::State { account, as_of, out } => {
            let account_id = parse_account(&account)?;
            account_exists(pool, &account_id).await?;
            let state = audit::state::as_of(pool, &account_id, as_of).await?;
            super::print(out.json, serde_json::to_value(&state)?, || {
                let Some(a) = &state.account else { return format!("account {account_id} did not exist yet at {as_of}") };
                let mut lines = vec![format!("{} ({}), plan {}, {} as of {as_of}", a.account_id, a.name, a.plan, a.status)];
                lines.extend(
                    state
                        .lines
                        .iter()
                        .map(|l| format!("  line {} {} {}", l.line_id, l.status, l.phone.as_deref().unwrap_or("-"))),
                );
                lines.extend(state.keys.iter().map(|k| format!("  key {} {}", k.key_id, k.status)));
                lines
                    .extend(state.webhooks.iter().map(|w| format!("  webhook {} {} enabled={}", w.webhook_id, w.url, w.enabled)));
                if let Some(u) = &state.usage {
                    lines.push(format!(
                        "  usage {}..{}: sent_messages {}, webhook_events {}, lines {}",
                        u.cycle_start, u.cycle_end, u.sent_messages, u.webhook_events, u.lines
                    ));
                }
                lines.join("\n")
            });
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn usage(command: UsageCommand, plans: &domain::plan::PlanCatalog, pool: &sqlx::PgPool) -> anyhow::Result<ExitCode> {
    let UsageCommand::Export { cycle, from, to, format } = command;
    let period = crate::usage::ExportPeriod::choose(cycle.as_deref(), from, to)
        .map_err(|(field, message)| anyhow!("--{field}: {message}"))?;
    let rows = crate::usage::export(pool, plans, period, Utc::now()).await?;
    match format {
        ExportFormat::Csv => print!("{}", crate::usage::to_csv(&rows)),
        ExportFormat::Json => println!("{}", json!({"from": period.from, "to": period.to, "rows": rows})),
    }
    Ok(ExitCode::SUCCESS)
}
