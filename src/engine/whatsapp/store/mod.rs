//! The session state of a `whatsapp` line in PostgreSQL: [`PgSessionStore`] implements every
//! storage trait of the client library (`wacore::store::traits`; together they are its `Backend`)
//! on the tables of `migrations/0016_whatsapp_sessions.sql`, keyed by line.
//!
//! Three rules hold for every method:
//! - `Ok` means committed: each write is one autocommitted statement, or one transaction.
//! - Fenced: a write lands only while the store's lease is still the line's current lease,
//!   checked in the same statement (see [`fenced!`]). A node that lost the line writes nothing and
//!   gets a [`SessionStoreError::LeaseLost`]; reads are not fenced.
//! - Sealed: key material and message content are stored sealed with the master key, bound to
//!   their line, table and key ([`PgSessionStore::seal`]); keys (addresses, jids, ids) stay clear.
//!
//! The behaviour of each method is the library's reference store's
//! (`wacore::store::InMemoryBackend`), which tests/it/whatsapp_store.rs checks differentially.
//! One file per trait: [`signal`], [`app_state`], [`protocol`], [`msg_secret`], [`device`].

mod app_state;
mod device;
mod msg_secret;
mod protocol;
mod signal;

use crate::commands::messages::LeaseGuard;
use crate::secrets::MasterKey;
use domain::ids::LineId;
use sqlx::postgres::PgArguments;
use sqlx::query::QueryAs;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use wacore::store::error::{Result, StoreError};

/// Why a session-store call failed, beyond the database itself. Carried inside the library's
/// [`StoreError`] (as its source); no variant holds a key or a value.
#[derive(Debug, thiserror::Error)]
pub enum SessionStoreError {
    /// Another node took the line (its lease epoch moved on): this store must stop writing.
    #[error("the lease of line {line_id} was lost: another node owns its WhatsApp session now")]
    LeaseLost { line_id: String },
    /// A sealed value does not open: another master key, or bytes altered or moved.
    #[error("a sealed value of {table} does not open with this master key")]
    Unsealable { table: &'static str },
    /// A stored value opened but is not what the library wrote.
    #[error("a stored value of {table} is malformed: {detail}")]
    Malformed { table: &'static str, detail: String },
}

impl SessionStoreError {
    /// Whether `error` (from any method of the store) says the line's lease was lost.
    pub fn is_lease_lost(error: &StoreError) -> bool {
        let mut layer: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = layer {
            if matches!(e.downcast_ref::<SessionStoreError>(), Some(SessionStoreError::LeaseLost { .. })) {
                return true;
            }
            layer = e.source();
        }
        false
    }
}

/// Every table of migration 0016: what [`PgSessionStore::delete_line`] empties for a line.
const SESSION_TABLES: [&str; 19] = [
    "wa_identities",
    "wa_sessions",
    "wa_prekeys",
    "wa_signed_prekeys",
    "wa_sender_keys",
    "wa_app_state_sync_keys",
    "wa_app_state_versions",
    "wa_app_state_mutation_macs",
    "wa_sender_key_devices",
    "wa_lid_mappings",
    "wa_pn_lids",
    "wa_base_keys",
    "wa_device_lists",
    "wa_group_metadata",
    "wa_tc_tokens",
    "wa_sent_messages",
    "wa_pending_inbound",
    "wa_msg_secrets",
    "wa_devices",
];

/// The CTE that checks (and share-locks) this store's lease: parameters $1 line, $2 owner, $3
/// epoch. A literal, for `concat!`.
macro_rules! lease_cte {
    () => {
        "lease AS (SELECT FROM line_leases WHERE line_id = $1 AND owner = $2 AND epoch = $3 FOR SHARE)"
    };
}
use lease_cte;

/// A fenced write, as one statement. `$body` is one INSERT, UPDATE or DELETE whose own parameters
/// start at $4 and which writes nothing unless the lease CTE has its row: an INSERT selects
/// `FROM lease`, an UPDATE or DELETE adds `AND EXISTS (SELECT FROM lease)`. The statement yields
/// whether the lease held and how many rows were written, so a write that legitimately touches no
/// row (a delete of a missing key) is told apart from one refused for a lost lease.
///
/// Why it is safe: the lease row stays share-locked until the statement commits. A takeover (an
/// UPDATE of that row) waits for it and its new owner then reads what it wrote; a write that
/// starts after a takeover committed re-checks the row's newest version and finds another epoch.
macro_rules! fenced {
    ($body:expr) => {
        concat!(
            "WITH ",
            $crate::engine::whatsapp::store::lease_cte!(),
            ", written AS (",
            $body,
            " RETURNING 1) SELECT EXISTS (SELECT FROM lease), (SELECT count(*) FROM written)"
        )
    };
}
use fenced;

/// The WhatsApp session state of one line, written under one lease.
pub struct PgSessionStore {
    pool: PgPool,
    lease: LeaseGuard,
    master_key: Arc<MasterKey>,
}

impl std::fmt::Debug for PgSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSessionStore").field("line_id", &self.lease.line_id).field("epoch", &self.lease.epoch).finish()
    }
}

impl PgSessionStore {
    pub fn new(pool: PgPool, lease: LeaseGuard, master_key: Arc<MasterKey>) -> Self {
        Self { pool, lease, master_key }
    }

    pub fn lease(&self) -> &LeaseGuard {
        &self.lease
    }

    fn line_id(&self) -> &str {
        self.lease.line_id.as_str()
    }

    /// Remove every row of a line's session state (logout), in one transaction. Not fenced: the
    /// line is being given up, whoever holds it.
    pub async fn delete_line(pool: &PgPool, line_id: &LineId) -> std::result::Result<(), sqlx::Error> {
        let mut tx = pool.begin().await?;
        for table in SESSION_TABLES {
            sqlx::query(&format!("DELETE FROM {table} WHERE line_id = $1")).bind(line_id.as_str()).execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// A [`fenced!`] statement with the lease bound; bind the body's own parameters, then
    /// [`PgSessionStore::write`] it.
    fn fenced<'q>(&'q self, sql: &'static str) -> QueryAs<'q, Postgres, (bool, i64), PgArguments> {
        sqlx::query_as(sql).bind(self.line_id()).bind(self.lease.owner.as_str()).bind(self.lease.epoch)
    }

    /// Run a fenced statement: the number of rows written, or an error if the lease was lost.
    async fn write(&self, statement: QueryAs<'_, Postgres, (bool, i64), PgArguments>) -> Result<u64> {
        let (held, written) = statement.fetch_one(&self.pool).await.map_err(database)?;
        if !held {
            return Err(self.lease_lost());
        }
        Ok(u64::try_from(written).unwrap_or(0))
    }

    /// A transaction for writes that take several statements: it starts by share-locking the
    /// lease row (an error if the lease is no longer ours), which keeps a takeover waiting until
    /// it commits, so its later statements need no check of their own.
    async fn begin_fenced(&self) -> Result<Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await.map_err(database)?;
        let held: Option<bool> = sqlx::query_scalar(concat!("WITH ", lease_cte!(), " SELECT true FROM lease"))
            .bind(self.line_id())
            .bind(self.lease.owner.as_str())
            .bind(self.lease.epoch)
            .fetch_optional(&mut *tx)
            .await
            .map_err(database)?;
        match held {
            Some(_) => Ok(tx),
            None => Err(self.lease_lost()),
        }
    }

    fn lease_lost(&self) -> StoreError {
        StoreError::Database(Box::new(SessionStoreError::LeaseLost { line_id: self.line_id().to_owned() }))
    }

    /// The associated data a value of `table` at `key` is sealed with: a label, the line, the
    /// table and each part of the key, each length-prefixed so no two places give the same bytes.
    fn aad(&self, table: &str, key: &[&[u8]]) -> Vec<u8> {
        let mut aad = b"wazion-bridge/whatsapp-session/v1".to_vec();
        for part in [self.line_id().as_bytes(), table.as_bytes()].into_iter().chain(key.iter().copied()) {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part);
        }
        aad
    }

    fn seal(&self, table: &'static str, key: &[&[u8]], plaintext: &[u8]) -> Vec<u8> {
        self.master_key.seal_bytes(&self.aad(table, key), plaintext)
    }

    fn open(&self, table: &'static str, key: &[&[u8]], sealed: &[u8]) -> Result<Vec<u8>> {
        self.master_key
            .open_bytes(&self.aad(table, key), sealed)
            .map_err(|_| StoreError::Serialization(Box::new(SessionStoreError::Unsealable { table })))
    }
}

fn database(error: sqlx::Error) -> StoreError {
    StoreError::Database(Box::new(error))
}

fn malformed(table: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Serialization(Box::new(SessionStoreError::Malformed { table, detail: detail.to_string() }))
}

/// The last value of each key, as a sequence of single writes would leave them: one upsert
/// statement may not touch a row twice, so a batch is reduced to one entry a key first.
fn last_per_key<K: Hash + Eq, V>(entries: impl IntoIterator<Item = (K, V)>) -> Vec<(K, V)> {
    entries.into_iter().collect::<HashMap<K, V>>().into_iter().collect()
}

/// A u32 id or count of the library as PostgreSQL stores it (no unsigned types there).
fn stored_u32(value: i64, table: &'static str) -> Result<u32> {
    u32::try_from(value).map_err(|_| malformed(table, "an id out of the u32 range"))
}

/// A count of deleted rows as the library reports it.
fn count_u32(rows: u64) -> u32 {
    u32::try_from(rows).unwrap_or(u32::MAX)
}
