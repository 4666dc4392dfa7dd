//! Inline projection of the `account` stream into `accounts`: what authentication, plan limits
//! and the subscription check read at decision time.

use crate::{ApplyFuture, Projection, StoredEvent};
use domain::account::AccountEvent;
use domain::Aggregate;
use sqlx::PgConnection;

pub struct Accounts;

impl Projection for Accounts {
    fn name(&self) -> &'static str {
        "accounts"
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            if event.stream_type != domain::account::Account::STREAM_TYPE {
                return Ok(());
            }
            let at = event.recorded_at;
            let id = &event.stream_id;
            match event.decode::<AccountEvent>()? {
                AccountEvent::Opened { account_id, name, plan, cycle_anchor } => {
                    sqlx::query(
                        "INSERT INTO accounts (account_id, name, plan, status, cycle_anchor, created_at, updated_at) \
                         VALUES ($1, $2, $3, 'active', $4, $5, $5)",
                    )
                    .bind(account_id.as_str())
                    .bind(name.as_str())
                    .bind(plan.as_str())
                    .bind(cycle_anchor)
                    .bind(at)
                    .execute(conn)
                    .await?;
                }
                AccountEvent::PlanChanged { to, .. } => {
                    sqlx::query("UPDATE accounts SET plan = $2, updated_at = $3 WHERE account_id = $1")
                        .bind(id)
                        .bind(to.as_str())
                        .bind(at)
                        .execute(conn)
                        .await?;
                }
                AccountEvent::Suspended { .. } | AccountEvent::Activated {} => {
                    let status = if event.event_type == "account.suspended" { "suspended" } else { "active" };
                    sqlx::query("UPDATE accounts SET status = $2, updated_at = $3 WHERE account_id = $1")
                        .bind(id)
                        .bind(status)
                        .bind(at)
                        .execute(conn)
                        .await?;
                }
            }
            Ok(())
        })
    }
}
