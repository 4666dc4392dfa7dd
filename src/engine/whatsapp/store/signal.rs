//! `SignalStore`: identities, sessions, pre-keys, signed pre-keys and sender keys, every value
//! sealed.

use super::{database, fenced, last_per_key, stored_u32, PgSessionStore};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use wacore::store::error::Result;
use wacore::store::traits::SignalStore;

/// The SQL of a table of sealed values by remote address (identities, sessions, sender keys): all
/// three have the shape `(line_id, address, <value>_sealed)`.
struct ByAddress {
    table: &'static str,
    put: &'static str,
    get: &'static str,
    delete: &'static str,
}

macro_rules! by_address {
    ($table:literal, $column:literal) => {
        ByAddress {
            table: $table,
            put: fenced!(concat!(
                "INSERT INTO ",
                $table,
                " (line_id, address, ",
                $column,
                ") SELECT $1, u.address, u.sealed FROM lease, unnest($4::text[], $5::bytea[]) AS u(address, sealed) \
                 ON CONFLICT (line_id, address) DO UPDATE SET ",
                $column,
                " = EXCLUDED.",
                $column
            )),
            get: concat!("SELECT ", $column, " FROM ", $table, " WHERE line_id = $1 AND address = $2"),
            delete: fenced!(concat!(
                "DELETE FROM ",
                $table,
                " WHERE line_id = $1 AND address = $4 AND EXISTS (SELECT FROM lease)"
            )),
        }
    };
}

const IDENTITIES: ByAddress = by_address!("wa_identities", "identity_key_sealed");
const SESSIONS: ByAddress = by_address!("wa_sessions", "record_sealed");
const SENDER_KEYS: ByAddress = by_address!("wa_sender_keys", "record_sealed");

impl PgSessionStore {
    async fn put_by_address<V: AsRef<[u8]>>(&self, sql: &ByAddress, entries: &[(Arc<str>, V)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let entries = last_per_key(entries.iter().map(|(address, value)| (address.as_ref(), value.as_ref())));
        let addresses: Vec<&str> = entries.iter().map(|(address, _)| *address).collect();
        let sealed: Vec<Vec<u8>> =
            entries.iter().map(|(address, value)| self.seal(sql.table, &[address.as_bytes()], value)).collect();
        self.write(self.fenced(sql.put).bind(addresses).bind(sealed)).await?;
        Ok(())
    }

    async fn get_by_address(&self, sql: &ByAddress, address: &str) -> Result<Option<Vec<u8>>> {
        let sealed: Option<Vec<u8>> =
            sqlx::query_scalar(sql.get).bind(self.line_id()).bind(address).fetch_optional(&self.pool).await.map_err(database)?;
        sealed.map(|sealed| self.open(sql.table, &[address.as_bytes()], &sealed)).transpose()
    }

    async fn delete_by_address(&self, sql: &ByAddress, address: &str) -> Result<()> {
        self.write(self.fenced(sql.delete).bind(address)).await?;
        Ok(())
    }
}

const PREKEYS: &str = "wa_prekeys";
const SIGNED_PREKEYS: &str = "wa_signed_prekeys";

#[async_trait]
impl SignalStore for PgSessionStore {
    async fn put_identity(&self, address: &str, key: [u8; 32]) -> Result<()> {
        self.put_by_address(&IDENTITIES, &[(Arc::from(address), key)]).await
    }

    async fn put_identities_batch(&self, identities: &[(Arc<str>, [u8; 32])]) -> Result<()> {
        self.put_by_address(&IDENTITIES, identities).await
    }

    async fn load_identity(&self, address: &str) -> Result<Option<[u8; 32]>> {
        match self.get_by_address(&IDENTITIES, address).await? {
            None => Ok(None),
            Some(key) => key.try_into().map(Some).map_err(|_| super::malformed(IDENTITIES.table, "not a 32-byte key")),
        }
    }

    async fn delete_identity(&self, address: &str) -> Result<()> {
        self.delete_by_address(&IDENTITIES, address).await
    }

    async fn get_session(&self, address: &str) -> Result<Option<Bytes>> {
        Ok(self.get_by_address(&SESSIONS, address).await?.map(Bytes::from))
    }

    async fn put_session(&self, address: &str, session: &[u8]) -> Result<()> {
        self.put_by_address(&SESSIONS, &[(Arc::from(address), session)]).await
    }

    async fn put_sessions_batch(&self, sessions: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.put_by_address(&SESSIONS, sessions).await
    }

    async fn delete_session(&self, address: &str) -> Result<()> {
        self.delete_by_address(&SESSIONS, address).await
    }

    async fn has_session(&self, address: &str) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM wa_sessions WHERE line_id = $1 AND address = $2)")
            .bind(self.line_id())
            .bind(address)
            .fetch_one(&self.pool)
            .await
            .map_err(database)
    }

    /// Addresses are `user@server` or `user:device@server`: a session or identity of `user` is
    /// one whose address starts with the user and then `@` or `:`.
    async fn has_signal_state_for_user(&self, user: &str) -> Result<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM wa_sessions WHERE line_id = $1 \
                 AND (starts_with(address, $2 || '@') OR starts_with(address, $2 || ':'))) \
             OR EXISTS (SELECT FROM wa_identities WHERE line_id = $1 \
                 AND (starts_with(address, $2 || '@') OR starts_with(address, $2 || ':')))",
        )
        .bind(self.line_id())
        .bind(user)
        .fetch_one(&self.pool)
        .await
        .map_err(database)
    }

    async fn store_prekey(&self, id: u32, record: &[u8], uploaded: bool) -> Result<()> {
        self.store_prekeys_batch(&[(id, Bytes::copy_from_slice(record))], uploaded).await
    }

    async fn store_prekeys_batch(&self, keys: &[(u32, Bytes)], uploaded: bool) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let keys = last_per_key(keys.iter().map(|(id, record)| (*id, record)));
        let ids: Vec<i64> = keys.iter().map(|(id, _)| i64::from(*id)).collect();
        let sealed: Vec<Vec<u8>> = keys.iter().map(|(id, record)| self.seal(PREKEYS, &[&id.to_be_bytes()], record)).collect();
        let sql = fenced!(
            "INSERT INTO wa_prekeys (line_id, prekey_id, record_sealed, uploaded) \
             SELECT $1, u.id, u.sealed, $6 FROM lease, unnest($4::bigint[], $5::bytea[]) AS u(id, sealed) \
             ON CONFLICT (line_id, prekey_id) DO UPDATE SET record_sealed = EXCLUDED.record_sealed, uploaded = EXCLUDED.uploaded"
        );
        self.write(self.fenced(sql).bind(ids).bind(sealed).bind(uploaded)).await?;
        Ok(())
    }

    async fn load_prekey(&self, id: u32) -> Result<Option<Bytes>> {
        Ok(self.load_prekeys_batch(&[id]).await?.pop().map(|(_, record)| record))
    }

    /// In the order of `ids` (a repeated id is answered again), missing ones left out.
    async fn load_prekeys_batch(&self, ids: &[u32]) -> Result<Vec<(u32, Bytes)>> {
        let wanted: Vec<i64> = ids.iter().map(|id| i64::from(*id)).collect();
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT u.id, p.record_sealed FROM unnest($2::bigint[]) WITH ORDINALITY AS u(id, ord) \
             JOIN wa_prekeys p ON p.line_id = $1 AND p.prekey_id = u.id ORDER BY u.ord",
        )
        .bind(self.line_id())
        .bind(wanted)
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        rows.into_iter()
            .map(|(id, sealed)| {
                let id = stored_u32(id, PREKEYS)?;
                Ok((id, Bytes::from(self.open(PREKEYS, &[&id.to_be_bytes()], &sealed)?)))
            })
            .collect()
    }

    async fn mark_prekeys_uploaded(&self, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = ids.iter().map(|id| i64::from(*id)).collect();
        let sql = fenced!(
            "UPDATE wa_prekeys SET uploaded = true \
             WHERE line_id = $1 AND prekey_id = ANY($4::bigint[]) AND EXISTS (SELECT FROM lease)"
        );
        self.write(self.fenced(sql).bind(ids)).await?;
        Ok(())
    }

    async fn remove_prekey(&self, id: u32) -> Result<()> {
        let sql = fenced!("DELETE FROM wa_prekeys WHERE line_id = $1 AND prekey_id = $4 AND EXISTS (SELECT FROM lease)");
        self.write(self.fenced(sql).bind(i64::from(id))).await?;
        Ok(())
    }

    async fn get_max_prekey_id(&self) -> Result<u32> {
        let max: i64 = sqlx::query_scalar("SELECT coalesce(max(prekey_id), 0) FROM wa_prekeys WHERE line_id = $1")
            .bind(self.line_id())
            .fetch_one(&self.pool)
            .await
            .map_err(database)?;
        stored_u32(max, PREKEYS)
    }

    async fn store_signed_prekey(&self, id: u32, record: &[u8]) -> Result<()> {
        let sealed = self.seal(SIGNED_PREKEYS, &[&id.to_be_bytes()], record);
        let sql = fenced!(
            "INSERT INTO wa_signed_prekeys (line_id, prekey_id, record_sealed) SELECT $1, $4, $5 FROM lease \
             ON CONFLICT (line_id, prekey_id) DO UPDATE SET record_sealed = EXCLUDED.record_sealed"
        );
        self.write(self.fenced(sql).bind(i64::from(id)).bind(sealed)).await?;
        Ok(())
    }

    async fn load_signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>> {
        let sealed: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT record_sealed FROM wa_signed_prekeys WHERE line_id = $1 AND prekey_id = $2")
                .bind(self.line_id())
                .bind(i64::from(id))
                .fetch_optional(&self.pool)
                .await
                .map_err(database)?;
        sealed.map(|sealed| self.open(SIGNED_PREKEYS, &[&id.to_be_bytes()], &sealed)).transpose()
    }

    async fn load_all_signed_prekeys(&self) -> Result<Vec<(u32, Vec<u8>)>> {
        let rows: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT prekey_id, record_sealed FROM wa_signed_prekeys WHERE line_id = $1 ORDER BY prekey_id")
                .bind(self.line_id())
                .fetch_all(&self.pool)
                .await
                .map_err(database)?;
        rows.into_iter()
            .map(|(id, sealed)| {
                let id = stored_u32(id, SIGNED_PREKEYS)?;
                Ok((id, self.open(SIGNED_PREKEYS, &[&id.to_be_bytes()], &sealed)?))
            })
            .collect()
    }

    async fn remove_signed_prekey(&self, id: u32) -> Result<()> {
        let sql = fenced!("DELETE FROM wa_signed_prekeys WHERE line_id = $1 AND prekey_id = $4 AND EXISTS (SELECT FROM lease)");
        self.write(self.fenced(sql).bind(i64::from(id))).await?;
        Ok(())
    }

    async fn put_sender_key(&self, address: &str, record: &[u8]) -> Result<()> {
        self.put_by_address(&SENDER_KEYS, &[(Arc::from(address), record)]).await
    }

    async fn put_sender_keys_batch(&self, sender_keys: &[(Arc<str>, Bytes)]) -> Result<()> {
        self.put_by_address(&SENDER_KEYS, sender_keys).await
    }

    async fn get_sender_key(&self, address: &str) -> Result<Option<Vec<u8>>> {
        self.get_by_address(&SENDER_KEYS, address).await
    }

    async fn delete_sender_key(&self, address: &str) -> Result<()> {
        self.delete_by_address(&SENDER_KEYS, address).await
    }
}
