//! `AppSyncStore`: app-state sync keys (their key data sealed), collection versions with their
//! ltHash state, and mutation MACs per collection.

use super::{database, fenced, last_per_key, malformed, PgSessionStore};
use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sqlx::types::Json;
use std::collections::HashMap;
use wacore::appstate::hash::HashState;
use wacore::appstate::processor::AppStateMutationMAC;
use wacore::store::error::{Result, StoreError};
use wacore::store::traits::{AppStateSyncKey, AppSyncStore};

const SYNC_KEYS: &str = "wa_app_state_sync_keys";
const VERSIONS: &str = "wa_app_state_versions";

/// A collection version as the library counts it (u64) and as PostgreSQL stores it (bigint).
fn stored_version(version: u64) -> Result<i64> {
    i64::try_from(version).map_err(|_| StoreError::Validation("an app-state version beyond i64".to_owned()))
}

#[async_trait]
impl AppSyncStore for PgSessionStore {
    async fn get_sync_key(&self, key_id: &[u8]) -> Result<Option<AppStateSyncKey>> {
        let row: Option<(Vec<u8>, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT key_data_sealed, fingerprint, key_timestamp FROM wa_app_state_sync_keys WHERE line_id = $1 AND key_id = $2",
        )
        .bind(self.line_id())
        .bind(key_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        row.map(|(sealed, fingerprint, timestamp)| {
            Ok(AppStateSyncKey { key_data: self.open(SYNC_KEYS, &[key_id], &sealed)?, fingerprint, timestamp })
        })
        .transpose()
    }

    /// Also makes this key the latest one set (`set_order` moves on at every set).
    async fn set_sync_key(&self, key_id: &[u8], key: AppStateSyncKey) -> Result<()> {
        let sealed = self.seal(SYNC_KEYS, &[key_id], &key.key_data);
        let sql = fenced!(
            "INSERT INTO wa_app_state_sync_keys (line_id, key_id, key_data_sealed, fingerprint, key_timestamp) \
             SELECT $1, $4, $5, $6, $7 FROM lease \
             ON CONFLICT (line_id, key_id) DO UPDATE SET key_data_sealed = EXCLUDED.key_data_sealed, \
                 fingerprint = EXCLUDED.fingerprint, key_timestamp = EXCLUDED.key_timestamp, \
                 set_order = nextval('wa_app_state_sync_key_order')"
        );
        self.write(self.fenced(sql).bind(key_id).bind(sealed).bind(key.fingerprint).bind(key.timestamp)).await?;
        Ok(())
    }

    async fn get_latest_sync_key_id(&self) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT key_id FROM wa_app_state_sync_keys WHERE line_id = $1 ORDER BY set_order DESC LIMIT 1")
            .bind(self.line_id())
            .fetch_optional(&self.pool)
            .await
            .map_err(database)
    }

    /// A collection never set is at version 0 with an empty state.
    async fn get_version(&self, name: &str) -> Result<HashState> {
        let row: Option<(i64, Vec<u8>, Json<HashMap<String, String>>, bool)> = sqlx::query_as(
            "SELECT version, hash, index_value_map, mac_mismatch_fatal FROM wa_app_state_versions \
             WHERE line_id = $1 AND collection = $2",
        )
        .bind(self.line_id())
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        let Some((version, hash, Json(index_value_map), mac_mismatch_fatal)) = row else {
            return Ok(HashState::default());
        };
        Ok(HashState {
            version: u64::try_from(version).map_err(|_| malformed(VERSIONS, "a negative version"))?,
            hash: hash.try_into().map_err(|_| malformed(VERSIONS, "not a 128-byte hash"))?,
            index_value_map: index_value_map
                .into_iter()
                .map(|(index, value)| Ok((index, B64.decode(value).map_err(|e| malformed(VERSIONS, e))?)))
                .collect::<Result<_>>()?,
            mac_mismatch_fatal,
        })
    }

    async fn set_version(&self, name: &str, state: HashState) -> Result<()> {
        let index_value_map: HashMap<&str, String> =
            state.index_value_map.iter().map(|(index, value)| (index.as_str(), B64.encode(value))).collect();
        let sql = fenced!(
            "INSERT INTO wa_app_state_versions (line_id, collection, version, hash, index_value_map, mac_mismatch_fatal) \
             SELECT $1, $4, $5, $6, $7, $8 FROM lease \
             ON CONFLICT (line_id, collection) DO UPDATE SET version = EXCLUDED.version, hash = EXCLUDED.hash, \
                 index_value_map = EXCLUDED.index_value_map, mac_mismatch_fatal = EXCLUDED.mac_mismatch_fatal"
        );
        let statement = self
            .fenced(sql)
            .bind(name)
            .bind(stored_version(state.version)?)
            .bind(&state.hash[..])
            .bind(Json(index_value_map))
            .bind(state.mac_mismatch_fatal);
        self.write(statement).await?;
        Ok(())
    }

    async fn put_mutation_macs(&self, name: &str, version: u64, mutations: &[AppStateMutationMAC]) -> Result<()> {
        if mutations.is_empty() {
            return Ok(());
        }
        let mutations = last_per_key(mutations.iter().map(|m| (&m.index_mac[..], &m.value_mac[..])));
        let (index_macs, value_macs): (Vec<&[u8]>, Vec<&[u8]>) = mutations.into_iter().unzip();
        let sql = fenced!(
            "INSERT INTO wa_app_state_mutation_macs (line_id, collection, index_mac, value_mac, version) \
             SELECT $1, $4, u.index_mac, u.value_mac, $7 FROM lease, unnest($5::bytea[], $6::bytea[]) AS u(index_mac, value_mac) \
             ON CONFLICT (line_id, collection, index_mac) DO UPDATE SET value_mac = EXCLUDED.value_mac, version = EXCLUDED.version"
        );
        self.write(self.fenced(sql).bind(name).bind(index_macs).bind(value_macs).bind(stored_version(version)?)).await?;
        Ok(())
    }

    async fn get_mutation_mac(&self, name: &str, index_mac: &[u8]) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar(
            "SELECT value_mac FROM wa_app_state_mutation_macs WHERE line_id = $1 AND collection = $2 AND index_mac = $3",
        )
        .bind(self.line_id())
        .bind(name)
        .bind(index_mac)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)
    }

    async fn get_mutation_macs(&self, name: &str, index_macs: &[[u8; 32]]) -> Result<HashMap<[u8; 32], Vec<u8>>> {
        let wanted: Vec<&[u8]> = index_macs.iter().map(|mac| &mac[..]).collect();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT index_mac, value_mac FROM wa_app_state_mutation_macs \
             WHERE line_id = $1 AND collection = $2 AND index_mac = ANY($3::bytea[])",
        )
        .bind(self.line_id())
        .bind(name)
        .bind(wanted)
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        rows.into_iter()
            .map(|(index_mac, value_mac)| {
                let index_mac: [u8; 32] =
                    index_mac.try_into().map_err(|_| malformed("wa_app_state_mutation_macs", "not a 32-byte index MAC"))?;
                Ok((index_mac, value_mac))
            })
            .collect()
    }

    async fn delete_mutation_macs(&self, name: &str, index_macs: &[Vec<u8>]) -> Result<()> {
        if index_macs.is_empty() {
            return Ok(());
        }
        let sql = fenced!(
            "DELETE FROM wa_app_state_mutation_macs \
             WHERE line_id = $1 AND collection = $4 AND index_mac = ANY($5::bytea[]) AND EXISTS (SELECT FROM lease)"
        );
        self.write(self.fenced(sql).bind(name).bind(index_macs)).await?;
        Ok(())
    }

    async fn clear_mutation_macs(&self, name: &str) -> Result<()> {
        let sql = fenced!(
            "DELETE FROM wa_app_state_mutation_macs WHERE line_id = $1 AND collection = $4 AND EXISTS (SELECT FROM lease)"
        );
        self.write(self.fenced(sql).bind(name)).await?;
        Ok(())
    }
}
