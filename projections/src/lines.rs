//! Inline projection of the `line` stream into `lines`.

use crate::{ApplyFuture, Projection, StoredEvent};
use domain::line::{Line, LineEvent};
use domain::Aggregate;
use sqlx::PgConnection;

pub struct Lines;

impl Projection for Lines {
    fn name(&self) -> &'static str {
        "lines"
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            if event.stream_type != Line::STREAM_TYPE {
                return Ok(());
            }
            let (id, at) = (&event.stream_id, event.recorded_at);
            match event.decode::<LineEvent>()? {
                LineEvent::Created { line_id, account_id, engine } => {
                    sqlx::query(
                        "INSERT INTO lines (line_id, account_id, engine, status, created_at, updated_at) \
                         VALUES ($1, $2, $3, 'pending_qr', $4, $4)",
                    )
                    .bind(line_id.as_str())
                    .bind(account_id.as_str())
                    .bind(engine.as_str())
                    .bind(at)
                    .execute(conn)
                    .await?;
                }
                LineEvent::Connected { phone, .. } => {
                    sqlx::query(
                        "UPDATE lines SET status = 'connected', phone = $2, connected_at = $3, updated_at = $3 WHERE line_id = $1",
                    )
                    .bind(id)
                    .bind(phone.as_str())
                    .bind(at)
                    .execute(conn)
                    .await?;
                }
                LineEvent::Disconnected { .. } => {
                    sqlx::query(
                        "UPDATE lines SET status = 'disconnected', disconnected_at = $2, updated_at = $2 WHERE line_id = $1",
                    )
                    .bind(id)
                    .bind(at)
                    .execute(conn)
                    .await?;
                }
                LineEvent::LoggedOut { .. } => {
                    sqlx::query("UPDATE lines SET status = 'logged_out', logged_out_at = $2, updated_at = $2 WHERE line_id = $1")
                        .bind(id)
                        .bind(at)
                        .execute(conn)
                        .await?;
                }
                e @ (LineEvent::QrExpired {} | LineEvent::PairingRestarted {}) => {
                    let status = if matches!(e, LineEvent::QrExpired {}) { "qr_expired" } else { "pending_qr" };
                    sqlx::query("UPDATE lines SET status = $2, updated_at = $3 WHERE line_id = $1")
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
