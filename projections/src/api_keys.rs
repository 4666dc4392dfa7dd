//! Inline projection of the `api_key` stream into the key index (`api_keys`, `api_key_secrets`).
//! Authentication reads it; it holds only SHA-256 hashes of secrets.

use crate::{ApplyFuture, Projection, StoredEvent};
use domain::api_key::{ApiKey, ApiKeyEvent};
use domain::Aggregate;
use sqlx::PgConnection;

pub struct ApiKeys;

impl Projection for ApiKeys {
    fn name(&self) -> &'static str {
        "api_keys"
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a StoredEvent) -> ApplyFuture<'a> {
        Box::pin(async move {
            if event.stream_type != ApiKey::STREAM_TYPE {
                return Ok(());
            }
            let at = event.recorded_at;
            let key_id = &event.stream_id;
            match event.decode::<ApiKeyEvent>()? {
                ApiKeyEvent::Created { key_id, account_id, name, key_hash } => {
                    sqlx::query(
                        "WITH k AS (INSERT INTO api_keys (key_id, account_id, name, status, created_at) \
                                    VALUES ($1, $2, $3, 'active', $4)) \
                         INSERT INTO api_key_secrets (key_hash, key_id) VALUES ($5, $1)",
                    )
                    .bind(key_id.as_str())
                    .bind(account_id.as_str())
                    .bind(name)
                    .bind(at)
                    .bind(&key_hash.0)
                    .execute(conn)
                    .await?;
                }
                ApiKeyEvent::Rotated { key_hash, previous_hash, previous_valid_until, ends_every_earlier_secret } => {
                    // The old secret either ends now or keeps working until the end of its grace. A
                    // rotation that ends every earlier secret also ends one still in an earlier grace.
                    sqlx::query(
                        "WITH old AS ( \
                             DELETE FROM api_key_secrets \
                              WHERE key_id = $1 AND ((key_hash = $3 AND $4::timestamptz IS NULL) OR $6)), \
                         graced AS ( \
                             UPDATE api_key_secrets SET valid_until = $4 WHERE key_hash = $3 AND $4::timestamptz IS NOT NULL), \
                         k AS (UPDATE api_keys SET rotated_at = $5 WHERE key_id = $1) \
                         INSERT INTO api_key_secrets (key_hash, key_id) VALUES ($2, $1)",
                    )
                    .bind(key_id)
                    .bind(&key_hash.0)
                    .bind(&previous_hash.0)
                    .bind(previous_valid_until)
                    .bind(at)
                    .bind(ends_every_earlier_secret)
                    .execute(conn)
                    .await?;
                }
                ApiKeyEvent::Revoked {} => {
                    sqlx::query(
                        "WITH s AS (DELETE FROM api_key_secrets WHERE key_id = $1) \
                         UPDATE api_keys SET status = 'revoked', revoked_at = $2 WHERE key_id = $1",
                    )
                    .bind(key_id)
                    .bind(at)
                    .execute(conn)
                    .await?;
                }
            }
            Ok(())
        })
    }
}
