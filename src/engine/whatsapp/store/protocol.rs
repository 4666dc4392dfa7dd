//! `ProtocolStore`: sender-key distribution per group device, LID ↔ phone mappings, base keys,
//! device lists, group metadata, trusted-contact tokens, sent messages kept for retries (sealed)
//! and the pending-inbound buffer of the durability hook (sealed).

use super::{count_u32, database, fenced, last_per_key, lease_cte, malformed, PgSessionStore};
use async_trait::async_trait;
use sqlx::types::Json;
use wacore::store::error::Result;
use wacore::store::traits::{
    DeviceInfo, DeviceListRecord, LidPnMappingEntry, PendingInboundKey, PendingInboundRow, ProtocolStore, TcTokenEntry,
};

const SENT_MESSAGES: &str = "wa_sent_messages";
const PENDING_INBOUND: &str = "wa_pending_inbound";

type LidMappingRow = (String, String, i64, i64, String);

fn lid_mapping((lid, phone_number, created_at, updated_at, learning_source): LidMappingRow) -> LidPnMappingEntry {
    LidPnMappingEntry { lid, phone_number, created_at, updated_at, learning_source }
}

type TcTokenRow = (Vec<u8>, i64, Option<i64>);

#[async_trait]
impl ProtocolStore for PgSessionStore {
    // --- Sender keys per group device ---

    async fn get_sender_key_devices(&self, group_jid: &str) -> Result<Vec<(String, bool)>> {
        sqlx::query_as("SELECT device_jid, has_key FROM wa_sender_key_devices WHERE line_id = $1 AND group_jid = $2")
            .bind(self.line_id())
            .bind(group_jid)
            .fetch_all(&self.pool)
            .await
            .map_err(database)
    }

    async fn set_sender_key_status(&self, group_jid: &str, entries: &[(&str, bool)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let (devices, has_key): (Vec<&str>, Vec<bool>) = last_per_key(entries.iter().copied()).into_iter().unzip();
        let sql = fenced!(
            "INSERT INTO wa_sender_key_devices (line_id, group_jid, device_jid, has_key) \
             SELECT $1, $4, u.device_jid, u.has_key FROM lease, unnest($5::text[], $6::boolean[]) AS u(device_jid, has_key) \
             ON CONFLICT (line_id, group_jid, device_jid) DO UPDATE SET has_key = EXCLUDED.has_key"
        );
        self.write(self.fenced(sql).bind(group_jid).bind(devices).bind(has_key)).await?;
        Ok(())
    }

    async fn clear_sender_key_devices(&self, group_jid: &str) -> Result<()> {
        let sql =
            fenced!("DELETE FROM wa_sender_key_devices WHERE line_id = $1 AND group_jid = $4 AND EXISTS (SELECT FROM lease)");
        self.write(self.fenced(sql).bind(group_jid)).await?;
        Ok(())
    }

    async fn delete_sender_key_device_rows(&self, device_jids: &[&str]) -> Result<()> {
        if device_jids.is_empty() {
            return Ok(());
        }
        let sql = fenced!(
            "DELETE FROM wa_sender_key_devices \
             WHERE line_id = $1 AND device_jid = ANY($4::text[]) AND EXISTS (SELECT FROM lease)"
        );
        self.write(self.fenced(sql).bind(device_jids)).await?;
        Ok(())
    }

    async fn clear_all_sender_key_devices(&self) -> Result<()> {
        let sql = fenced!("DELETE FROM wa_sender_key_devices WHERE line_id = $1 AND EXISTS (SELECT FROM lease)");
        self.write(self.fenced(sql)).await?;
        Ok(())
    }

    // --- LID ↔ phone number ---

    async fn get_lid_mapping(&self, lid: &str) -> Result<Option<LidPnMappingEntry>> {
        let row: Option<LidMappingRow> = sqlx::query_as(
            "SELECT lid, phone_number, created_at, updated_at, learning_source FROM wa_lid_mappings \
             WHERE line_id = $1 AND lid = $2",
        )
        .bind(self.line_id())
        .bind(lid)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        Ok(row.map(lid_mapping))
    }

    /// The mapping of the LID last mapped to this number, if that entry is still there.
    async fn get_pn_mapping(&self, phone: &str) -> Result<Option<LidPnMappingEntry>> {
        let row: Option<LidMappingRow> = sqlx::query_as(
            "SELECT m.lid, m.phone_number, m.created_at, m.updated_at, m.learning_source \
             FROM wa_pn_lids r JOIN wa_lid_mappings m ON m.line_id = r.line_id AND m.lid = r.lid \
             WHERE r.line_id = $1 AND r.phone_number = $2",
        )
        .bind(self.line_id())
        .bind(phone)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        Ok(row.map(lid_mapping))
    }

    async fn put_lid_mapping(&self, entry: &LidPnMappingEntry) -> Result<()> {
        self.put_lid_mappings(std::slice::from_ref(entry)).await
    }

    /// In order, in one transaction: each entry may move the reverse index of the one before.
    /// Per entry, as the reference store does: a LID that moves to another number drops that old
    /// number's reverse entry (whichever LID it names), its new number now names it, and the
    /// mapping itself is replaced. One statement an entry: its CTEs all read the state before it.
    async fn put_lid_mappings(&self, entries: &[LidPnMappingEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_fenced().await?;
        for entry in entries {
            sqlx::query(
                "WITH moved AS ( \
                     DELETE FROM wa_pn_lids r USING wa_lid_mappings m \
                     WHERE m.line_id = $1 AND m.lid = $2 AND m.phone_number <> $3 \
                       AND r.line_id = $1 AND r.phone_number = m.phone_number), \
                 reverse AS ( \
                     INSERT INTO wa_pn_lids (line_id, phone_number, lid) VALUES ($1, $3, $2) \
                     ON CONFLICT (line_id, phone_number) DO UPDATE SET lid = EXCLUDED.lid) \
                 INSERT INTO wa_lid_mappings (line_id, lid, phone_number, created_at, updated_at, learning_source) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (line_id, lid) DO UPDATE SET phone_number = EXCLUDED.phone_number, \
                     created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, \
                     learning_source = EXCLUDED.learning_source",
            )
            .bind(self.line_id())
            .bind(&entry.lid)
            .bind(&entry.phone_number)
            .bind(entry.created_at)
            .bind(entry.updated_at)
            .bind(&entry.learning_source)
            .execute(&mut *tx)
            .await
            .map_err(database)?;
        }
        tx.commit().await.map_err(database)
    }

    async fn get_all_lid_mappings(&self) -> Result<Vec<LidPnMappingEntry>> {
        let rows: Vec<LidMappingRow> = sqlx::query_as(
            "SELECT lid, phone_number, created_at, updated_at, learning_source FROM wa_lid_mappings WHERE line_id = $1",
        )
        .bind(self.line_id())
        .fetch_all(&self.pool)
        .await
        .map_err(database)?;
        Ok(rows.into_iter().map(lid_mapping).collect())
    }

    // --- Base keys ---

    async fn save_base_key(&self, address: &str, message_id: &str, base_key: &[u8]) -> Result<()> {
        let sql = fenced!(
            "INSERT INTO wa_base_keys (line_id, address, message_id, base_key) SELECT $1, $4, $5, $6 FROM lease \
             ON CONFLICT (line_id, address, message_id) DO UPDATE SET base_key = EXCLUDED.base_key"
        );
        self.write(self.fenced(sql).bind(address).bind(message_id).bind(base_key)).await?;
        Ok(())
    }

    async fn has_same_base_key(&self, address: &str, message_id: &str, current_base_key: &[u8]) -> Result<bool> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM wa_base_keys \
             WHERE line_id = $1 AND address = $2 AND message_id = $3 AND base_key = $4)",
        )
        .bind(self.line_id())
        .bind(address)
        .bind(message_id)
        .bind(current_base_key)
        .fetch_one(&self.pool)
        .await
        .map_err(database)
    }

    async fn delete_base_key(&self, address: &str, message_id: &str) -> Result<()> {
        let sql = fenced!(
            "DELETE FROM wa_base_keys WHERE line_id = $1 AND address = $4 AND message_id = $5 AND EXISTS (SELECT FROM lease)"
        );
        self.write(self.fenced(sql).bind(address).bind(message_id)).await?;
        Ok(())
    }

    // --- Device lists ---

    async fn update_device_list(&self, record: DeviceListRecord) -> Result<()> {
        self.update_device_lists(vec![record]).await
    }

    async fn update_device_lists(&self, records: Vec<DeviceListRecord>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let records = last_per_key(records.into_iter().map(|record| (record.user.clone(), record)));
        let users: Vec<&str> = records.iter().map(|(user, _)| user.as_str()).collect();
        let devices: Vec<Json<&[DeviceInfo]>> = records.iter().map(|(_, r)| Json(&r.devices[..])).collect();
        let timestamps: Vec<i64> = records.iter().map(|(_, r)| r.timestamp).collect();
        let phashes: Vec<Option<&str>> = records.iter().map(|(_, r)| r.phash.as_deref()).collect();
        let raw_ids: Vec<Option<i64>> = records.iter().map(|(_, r)| r.raw_id.map(i64::from)).collect();
        let sql = fenced!(
            "INSERT INTO wa_device_lists (line_id, user_id, devices, list_timestamp, phash, raw_id) \
             SELECT $1, u.user_id, u.devices, u.list_timestamp, u.phash, u.raw_id \
             FROM lease, unnest($4::text[], $5::jsonb[], $6::bigint[], $7::text[], $8::bigint[]) \
                 AS u(user_id, devices, list_timestamp, phash, raw_id) \
             ON CONFLICT (line_id, user_id) DO UPDATE SET devices = EXCLUDED.devices, \
                 list_timestamp = EXCLUDED.list_timestamp, phash = EXCLUDED.phash, raw_id = EXCLUDED.raw_id"
        );
        self.write(self.fenced(sql).bind(users).bind(devices).bind(timestamps).bind(phashes).bind(raw_ids)).await?;
        Ok(())
    }

    async fn get_devices(&self, user: &str) -> Result<Option<DeviceListRecord>> {
        let row: Option<(Json<Vec<DeviceInfo>>, i64, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT devices, list_timestamp, phash, raw_id FROM wa_device_lists WHERE line_id = $1 AND user_id = $2",
        )
        .bind(self.line_id())
        .bind(user)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        row.map(|(Json(devices), timestamp, phash, raw_id)| {
            let raw_id = raw_id
                .map(|raw_id| u32::try_from(raw_id).map_err(|_| malformed("wa_device_lists", "a raw id out of the u32 range")))
                .transpose()?;
            Ok(DeviceListRecord { user: user.to_owned(), devices, timestamp, phash, raw_id })
        })
        .transpose()
    }

    async fn delete_devices(&self, user: &str) -> Result<()> {
        let sql = fenced!("DELETE FROM wa_device_lists WHERE line_id = $1 AND user_id = $4 AND EXISTS (SELECT FROM lease)");
        self.write(self.fenced(sql).bind(user)).await?;
        Ok(())
    }

    // --- Group metadata ---

    async fn get_group_metadata(&self, group_jid: &str) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT metadata FROM wa_group_metadata WHERE line_id = $1 AND group_jid = $2")
            .bind(self.line_id())
            .bind(group_jid)
            .fetch_optional(&self.pool)
            .await
            .map_err(database)
    }

    async fn put_group_metadata(&self, group_jid: &str, blob: &[u8]) -> Result<()> {
        let sql = fenced!(
            "INSERT INTO wa_group_metadata (line_id, group_jid, metadata) SELECT $1, $4, $5 FROM lease \
             ON CONFLICT (line_id, group_jid) DO UPDATE SET metadata = EXCLUDED.metadata"
        );
        self.write(self.fenced(sql).bind(group_jid).bind(blob)).await?;
        Ok(())
    }

    async fn delete_group_metadata(&self, group_jid: &str) -> Result<()> {
        let sql = fenced!("DELETE FROM wa_group_metadata WHERE line_id = $1 AND group_jid = $4 AND EXISTS (SELECT FROM lease)");
        self.write(self.fenced(sql).bind(group_jid)).await?;
        Ok(())
    }

    // --- Trusted-contact tokens ---

    async fn get_tc_token(&self, jid: &str) -> Result<Option<TcTokenEntry>> {
        let row: Option<TcTokenRow> =
            sqlx::query_as("SELECT token, token_timestamp, sender_timestamp FROM wa_tc_tokens WHERE line_id = $1 AND jid = $2")
                .bind(self.line_id())
                .bind(jid)
                .fetch_optional(&self.pool)
                .await
                .map_err(database)?;
        Ok(row.map(|(token, token_timestamp, sender_timestamp)| TcTokenEntry { token, token_timestamp, sender_timestamp }))
    }

    async fn put_tc_token(&self, jid: &str, entry: &TcTokenEntry) -> Result<()> {
        let sql = fenced!(
            "INSERT INTO wa_tc_tokens (line_id, jid, token, token_timestamp, sender_timestamp) SELECT $1, $4, $5, $6, $7 FROM lease \
             ON CONFLICT (line_id, jid) DO UPDATE SET token = EXCLUDED.token, token_timestamp = EXCLUDED.token_timestamp, \
                 sender_timestamp = EXCLUDED.sender_timestamp"
        );
        let statement = self.fenced(sql).bind(jid).bind(&entry.token).bind(entry.token_timestamp).bind(entry.sender_timestamp);
        self.write(statement).await?;
        Ok(())
    }

    async fn delete_tc_token(&self, jid: &str) -> Result<()> {
        let sql = fenced!("DELETE FROM wa_tc_tokens WHERE line_id = $1 AND jid = $4 AND EXISTS (SELECT FROM lease)");
        self.write(self.fenced(sql).bind(jid)).await?;
        Ok(())
    }

    async fn get_all_tc_token_jids(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("SELECT jid FROM wa_tc_tokens WHERE line_id = $1")
            .bind(self.line_id())
            .fetch_all(&self.pool)
            .await
            .map_err(database)
    }

    /// A row stays while its received token or its sender bucket is still live.
    async fn delete_expired_tc_tokens(&self, token_cutoff: i64, sender_cutoff: i64) -> Result<u32> {
        let sql = fenced!(
            "DELETE FROM wa_tc_tokens WHERE line_id = $1 AND EXISTS (SELECT FROM lease) \
             AND NOT ((length(token) > 0 AND token_timestamp >= $4) OR coalesce(sender_timestamp >= $5, false))"
        );
        Ok(count_u32(self.write(self.fenced(sql).bind(token_cutoff).bind(sender_cutoff)).await?))
    }

    /// One atomic upsert: a placeholder row if there is none, else the sender timestamp only ever
    /// moves forward (`greatest` ignores a NULL), the token untouched.
    async fn touch_tc_token_sender_timestamp(&self, jid: &str, sender_timestamp: i64) -> Result<()> {
        let sql = fenced!(
            "INSERT INTO wa_tc_tokens (line_id, jid, token, token_timestamp, sender_timestamp) \
             SELECT $1, $4, ''::bytea, $5, $5 FROM lease \
             ON CONFLICT (line_id, jid) DO UPDATE \
                 SET sender_timestamp = greatest(wa_tc_tokens.sender_timestamp, EXCLUDED.sender_timestamp)"
        );
        self.write(self.fenced(sql).bind(jid).bind(sender_timestamp)).await?;
        Ok(())
    }

    /// One atomic upsert, newer-wins: the stored token is replaced only when it is a placeholder
    /// or the incoming one is at least as new; the sender timestamp is kept.
    async fn store_received_tc_token(&self, jid: &str, token: &[u8], token_timestamp: i64) -> Result<()> {
        let sql = fenced!(
            "INSERT INTO wa_tc_tokens (line_id, jid, token, token_timestamp, sender_timestamp) \
             SELECT $1, $4, $5, $6, NULL FROM lease \
             ON CONFLICT (line_id, jid) DO UPDATE SET token = EXCLUDED.token, token_timestamp = EXCLUDED.token_timestamp \
                 WHERE length(wa_tc_tokens.token) = 0 OR EXCLUDED.token_timestamp >= wa_tc_tokens.token_timestamp"
        );
        self.write(self.fenced(sql).bind(jid).bind(token).bind(token_timestamp)).await?;
        Ok(())
    }

    // --- Sent messages (retry receipts) ---

    /// Stamped with the library's clock, which its expiry cutoffs come from.
    async fn store_sent_message(&self, chat_jid: &str, message_id: &str, payload: &[u8]) -> Result<()> {
        let sealed = self.seal(SENT_MESSAGES, &[chat_jid.as_bytes(), message_id.as_bytes()], payload);
        let sql = fenced!(
            "INSERT INTO wa_sent_messages (line_id, chat_jid, message_id, payload_sealed, stored_at) \
             SELECT $1, $4, $5, $6, $7 FROM lease \
             ON CONFLICT (line_id, chat_jid, message_id) DO UPDATE \
                 SET payload_sealed = EXCLUDED.payload_sealed, stored_at = EXCLUDED.stored_at"
        );
        let now = wacore::time::now_secs();
        self.write(self.fenced(sql).bind(chat_jid).bind(message_id).bind(sealed).bind(now)).await?;
        Ok(())
    }

    /// Read and delete in one fenced statement, so a message is taken once.
    async fn take_sent_message(&self, chat_jid: &str, message_id: &str) -> Result<Option<Vec<u8>>> {
        let sql = concat!(
            "WITH ",
            lease_cte!(),
            ", taken AS (DELETE FROM wa_sent_messages \
                 WHERE line_id = $1 AND chat_jid = $4 AND message_id = $5 AND EXISTS (SELECT FROM lease) \
                 RETURNING payload_sealed) \
             SELECT EXISTS (SELECT FROM lease), (SELECT payload_sealed FROM taken)"
        );
        let (held, sealed): (bool, Option<Vec<u8>>) = sqlx::query_as(sql)
            .bind(self.line_id())
            .bind(self.lease.owner.as_str())
            .bind(self.lease.epoch)
            .bind(chat_jid)
            .bind(message_id)
            .fetch_one(&self.pool)
            .await
            .map_err(database)?;
        if !held {
            return Err(self.lease_lost());
        }
        sealed.map(|sealed| self.open(SENT_MESSAGES, &[chat_jid.as_bytes(), message_id.as_bytes()], &sealed)).transpose()
    }

    async fn delete_expired_sent_messages(&self, cutoff_timestamp: i64) -> Result<u32> {
        let sql = fenced!("DELETE FROM wa_sent_messages WHERE line_id = $1 AND stored_at < $4 AND EXISTS (SELECT FROM lease)");
        Ok(count_u32(self.write(self.fenced(sql).bind(cutoff_timestamp)).await?))
    }

    // --- Pending inbound (the durability hook's buffer) ---

    async fn store_pending_inbound(&self, chat: &str, sender: &str, id: &str, message: &[u8]) -> Result<()> {
        self.store_pending_inbound_batch(&[PendingInboundRow { chat, sender, id, message }]).await
    }

    async fn get_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<Option<Vec<u8>>> {
        let sealed: Option<Vec<u8>> = sqlx::query_scalar(
            "SELECT message_sealed FROM wa_pending_inbound \
             WHERE line_id = $1 AND chat_jid = $2 AND sender_jid = $3 AND message_id = $4",
        )
        .bind(self.line_id())
        .bind(chat)
        .bind(sender)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        sealed.map(|sealed| self.open(PENDING_INBOUND, &[chat.as_bytes(), sender.as_bytes(), id.as_bytes()], &sealed)).transpose()
    }

    async fn delete_pending_inbound(&self, chat: &str, sender: &str, id: &str) -> Result<()> {
        self.delete_pending_inbound_batch(&[PendingInboundKey { chat, sender, id }]).await
    }

    async fn delete_expired_pending_inbound(&self, cutoff_timestamp: i64) -> Result<u32> {
        let sql = fenced!("DELETE FROM wa_pending_inbound WHERE line_id = $1 AND stored_at < $4 AND EXISTS (SELECT FROM lease)");
        Ok(count_u32(self.write(self.fenced(sql).bind(cutoff_timestamp)).await?))
    }

    /// Stamped with the library's clock, which its expiry cutoffs come from.
    async fn store_pending_inbound_batch(&self, rows: &[PendingInboundRow<'_>]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let rows = last_per_key(rows.iter().map(|row| ((row.chat, row.sender, row.id), row.message)));
        let mut chats = Vec::with_capacity(rows.len());
        let mut senders = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        let mut sealed = Vec::with_capacity(rows.len());
        for ((chat, sender, id), message) in rows {
            sealed.push(self.seal(PENDING_INBOUND, &[chat.as_bytes(), sender.as_bytes(), id.as_bytes()], message));
            chats.push(chat);
            senders.push(sender);
            ids.push(id);
        }
        let sql = fenced!(
            "INSERT INTO wa_pending_inbound (line_id, chat_jid, sender_jid, message_id, message_sealed, stored_at) \
             SELECT $1, u.chat_jid, u.sender_jid, u.message_id, u.sealed, $8 \
             FROM lease, unnest($4::text[], $5::text[], $6::text[], $7::bytea[]) AS u(chat_jid, sender_jid, message_id, sealed) \
             ON CONFLICT (line_id, chat_jid, sender_jid, message_id) DO UPDATE \
                 SET message_sealed = EXCLUDED.message_sealed, stored_at = EXCLUDED.stored_at"
        );
        let now = wacore::time::now_secs();
        self.write(self.fenced(sql).bind(chats).bind(senders).bind(ids).bind(sealed).bind(now)).await?;
        Ok(())
    }

    async fn delete_pending_inbound_batch(&self, keys: &[PendingInboundKey<'_>]) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let chats: Vec<&str> = keys.iter().map(|key| key.chat).collect();
        let senders: Vec<&str> = keys.iter().map(|key| key.sender).collect();
        let ids: Vec<&str> = keys.iter().map(|key| key.id).collect();
        let sql = fenced!(
            "DELETE FROM wa_pending_inbound p USING unnest($4::text[], $5::text[], $6::text[]) AS u(chat_jid, sender_jid, message_id) \
             WHERE p.line_id = $1 AND p.chat_jid = u.chat_jid AND p.sender_jid = u.sender_jid AND p.message_id = u.message_id \
               AND EXISTS (SELECT FROM lease)"
        );
        self.write(self.fenced(sql).bind(chats).bind(senders).bind(ids)).await?;
        Ok(())
    }
}
