//! Inline projection of the `console_user` stream into `console_users`: what sign-in, one-time
//! links and the console's Users page read. Its unique index on `lower(email)` makes one email one
//! user across every account.

use crate::{ApplyFuture, Projection, StoredEvent};
use domain::console_user::{ConsoleUser, ConsoleUserEvent};
use domain::Aggregate;
use sqlx::PgConnection;

pub struct ConsoleUsers;

/// The unique index an invitation of an email already in use violates.
pub const EMAIL_TAKEN: &str = "console_users_email_key";

impl Projection for ConsoleUsers {
    fn name(&self) -> &'static str {
        "console_users"
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            if event.stream_type != ConsoleUser::STREAM_TYPE {
                return Ok(());
            }
            let at = event.recorded_at;
            let id = &event.stream_id;
            let query = match event.decode::<ConsoleUserEvent>()? {
                ConsoleUserEvent::Invited { user_id, account_id, email, role, token_hash, token_expires_at } => sqlx::query(
                    "INSERT INTO console_users (user_id, account_id, email, role, link_token_hash, link_expires_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(user_id.to_string())
                .bind(account_id.to_string())
                .bind(email.as_str().to_owned())
                .bind(role.as_str())
                .bind(token_hash.0)
                .bind(token_expires_at)
                .bind(at),
                ConsoleUserEvent::PasswordSet { password_hash } => sqlx::query(
                    "UPDATE console_users SET password_hash = $2, link_token_hash = NULL, link_expires_at = NULL WHERE user_id = $1",
                )
                .bind(id)
                .bind(password_hash.0),
                ConsoleUserEvent::RoleChanged { to, .. } => {
                    sqlx::query("UPDATE console_users SET role = $2 WHERE user_id = $1").bind(id).bind(to.as_str())
                }
                ConsoleUserEvent::SignedIn {} => {
                    sqlx::query("UPDATE console_users SET last_sign_in_at = $2 WHERE user_id = $1").bind(id).bind(at)
                }
                ConsoleUserEvent::ResetLinkIssued { token_hash, token_expires_at } => sqlx::query(
                    "UPDATE console_users SET link_token_hash = $2, link_expires_at = $3 WHERE user_id = $1",
                )
                .bind(id)
                .bind(token_hash.0)
                .bind(token_expires_at),
                ConsoleUserEvent::Removed {} => sqlx::query(
                    "UPDATE console_users SET removed_at = $2, password_hash = NULL, link_token_hash = NULL, \
                            link_expires_at = NULL WHERE user_id = $1",
                )
                .bind(id)
                .bind(at),
            };
            query.execute(conn).await?;
            Ok(())
        })
    }
}
