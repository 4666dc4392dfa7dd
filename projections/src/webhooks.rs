//! Inline projection of the `webhook` stream into `webhooks`.

use crate::{ApplyFuture, Projection, StoredEvent};
use domain::webhook::{Webhook, WebhookEvent};
use domain::Aggregate;
use sqlx::PgConnection;

pub struct Webhooks;

impl Projection for Webhooks {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            if event.stream_type != Webhook::STREAM_TYPE {
                return Ok(());
            }
            let (id, at) = (&event.stream_id, event.recorded_at);
            match event.decode::<WebhookEvent>()? {
                WebhookEvent::Created { webhook_id, account_id, url, events, line_id, description, secret } => {
                    let events: Vec<String> = events.into_iter().map(String::from).collect();
                    sqlx::query(
                        "INSERT INTO webhooks (webhook_id, account_id, url, events, line_id, description, secret_sealed, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                    )
                    .bind(webhook_id.as_str())
                    .bind(account_id.as_str())
                    .bind(url)
                    .bind(events)
                    .bind(line_id.as_ref().map(|l| l.as_str()))
                    .bind(description)
                    .bind(secret.0)
                    .bind(at)
                    .execute(conn)
                    .await?;
                }
                WebhookEvent::Updated { url, events, enabled, description, line } => {
                    let events: Option<Vec<String>> = events.map(|e| e.into_iter().map(String::from).collect());
                    sqlx::query(
                        "UPDATE webhooks SET url = COALESCE($2, url), events = COALESCE($3, events), enabled = COALESCE($4, enabled), \
                             description = COALESCE($5, description), updated_at = $6, \
                             disabled_reason = CASE WHEN $4 THEN NULL ELSE disabled_reason END, \
                             line_id = CASE WHEN $7 THEN $8 ELSE line_id END \
                         WHERE webhook_id = $1",
                    )
                    .bind(id)
                    .bind(url)
                    .bind(events)
                    .bind(enabled)
                    .bind(description)
                    .bind(at)
                    .bind(line.is_some())
                    .bind(line.and_then(|l| l.line_id).map(String::from))
                    .execute(conn)
                    .await?;
                }
                WebhookEvent::SecretRotated { secret } => {
                    sqlx::query("UPDATE webhooks SET secret_sealed = $2, updated_at = $3 WHERE webhook_id = $1")
                        .bind(id)
                        .bind(secret.0)
                        .bind(at)
                        .execute(conn)
                        .await?;
                }
                WebhookEvent::Disabled { reason } => {
                    sqlx::query(
                        "UPDATE webhooks SET enabled = false, disabled_reason = $2, updated_at = $3 WHERE webhook_id = $1",
                    )
                    .bind(id)
                    .bind(reason)
                    .bind(at)
                    .execute(conn)
                    .await?;
                }
                WebhookEvent::Deleted {} => {
                    sqlx::query("DELETE FROM webhooks WHERE webhook_id = $1").bind(id).execute(conn).await?;
                }
            }
            Ok(())
        })
    }
}
