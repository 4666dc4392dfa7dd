//! `MsgSecretStore`: the secret of each message (sealed), with its retention deadline and parent
//! message time, merged on conflict the library's way.

use super::{count_u32, database, fenced, PgSessionStore};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use wacore::store::error::Result;
use wacore::store::traits::{
    merge_msg_secret_expiry, merge_msg_secret_message_ts, MessageSecret, MsgSecretEntry, MsgSecretStore,
};

const MSG_SECRETS: &str = "wa_msg_secrets";

type MsgSecretKey = (Arc<str>, Arc<str>, Arc<str>);

/// One entry a key, as writing the batch row by row would leave it: the last secret, and the
/// deadlines and parent times merged with the library's rules (both merges are associative, so
/// merging within the batch first and then with the stored row gives the same result).
fn merged_per_key(entries: Vec<MsgSecretEntry>) -> HashMap<MsgSecretKey, (MessageSecret, i64, i64)> {
    let mut merged: HashMap<MsgSecretKey, (MessageSecret, i64, i64)> = HashMap::with_capacity(entries.len());
    for entry in entries {
        let key = (entry.chat, entry.sender, entry.msg_id);
        merged
            .entry(key)
            .and_modify(|(secret, expires_at, message_ts)| {
                *secret = entry.secret;
                *expires_at = merge_msg_secret_expiry(*expires_at, entry.expires_at);
                *message_ts = merge_msg_secret_message_ts(*message_ts, entry.message_ts);
            })
            .or_insert((entry.secret, entry.expires_at, entry.message_ts));
    }
    merged
}

#[async_trait]
impl MsgSecretStore for PgSessionStore {
    /// One upsert for the batch. On conflict the SQL applies the same merges as
    /// `merge_msg_secret_expiry` (0 = never wins, else the later deadline) and
    /// `merge_msg_secret_message_ts` (the later parent time); the secret is replaced.
    async fn put_msg_secrets(&self, entries: Vec<MsgSecretEntry>) -> Result<usize> {
        let stored = entries.len();
        if stored == 0 {
            return Ok(0);
        }
        let merged = merged_per_key(entries);
        let (mut chats, mut senders, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        let (mut sealed, mut expiries, mut message_times) = (Vec::new(), Vec::new(), Vec::new());
        for ((chat, sender, id), (secret, expires_at, message_ts)) in &merged {
            sealed.push(self.seal(MSG_SECRETS, &[chat.as_bytes(), sender.as_bytes(), id.as_bytes()], secret));
            chats.push(chat.as_ref());
            senders.push(sender.as_ref());
            ids.push(id.as_ref());
            expiries.push(*expires_at);
            message_times.push(*message_ts);
        }
        let sql = fenced!(
            "INSERT INTO wa_msg_secrets (line_id, chat_jid, sender_jid, message_id, secret_sealed, expires_at, message_ts) \
             SELECT $1, u.chat_jid, u.sender_jid, u.message_id, u.sealed, u.expires_at, u.message_ts \
             FROM lease, unnest($4::text[], $5::text[], $6::text[], $7::bytea[], $8::bigint[], $9::bigint[]) \
                 AS u(chat_jid, sender_jid, message_id, sealed, expires_at, message_ts) \
             ON CONFLICT (line_id, chat_jid, sender_jid, message_id) DO UPDATE SET \
                 secret_sealed = EXCLUDED.secret_sealed, \
                 expires_at = CASE WHEN wa_msg_secrets.expires_at = 0 OR EXCLUDED.expires_at = 0 THEN 0 \
                                   ELSE greatest(wa_msg_secrets.expires_at, EXCLUDED.expires_at) END, \
                 message_ts = greatest(wa_msg_secrets.message_ts, EXCLUDED.message_ts)"
        );
        let statement = self.fenced(sql).bind(chats).bind(senders).bind(ids).bind(sealed).bind(expiries).bind(message_times);
        self.write(statement).await?;
        Ok(stored)
    }

    async fn get_msg_secret(&self, chat: &str, sender: &str, msg_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.get_msg_secret_with_ts(chat, sender, msg_id).await?.map(|(secret, _)| secret))
    }

    async fn get_msg_secret_with_ts(&self, chat: &str, sender: &str, msg_id: &str) -> Result<Option<(Vec<u8>, i64)>> {
        let row: Option<(Vec<u8>, i64)> = sqlx::query_as(
            "SELECT secret_sealed, message_ts FROM wa_msg_secrets \
             WHERE line_id = $1 AND chat_jid = $2 AND sender_jid = $3 AND message_id = $4",
        )
        .bind(self.line_id())
        .bind(chat)
        .bind(sender)
        .bind(msg_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(database)?;
        row.map(|(sealed, message_ts)| {
            Ok((self.open(MSG_SECRETS, &[chat.as_bytes(), sender.as_bytes(), msg_id.as_bytes()], &sealed)?, message_ts))
        })
        .transpose()
    }

    /// Rows with a deadline (not 0 = never) at or before the cutoff.
    async fn delete_expired_msg_secrets(&self, cutoff_timestamp: i64) -> Result<u32> {
        let sql = fenced!(
            "DELETE FROM wa_msg_secrets WHERE line_id = $1 AND expires_at <> 0 AND expires_at <= $4 \
             AND EXISTS (SELECT FROM lease)"
        );
        Ok(count_u32(self.write(self.fenced(sql).bind(cutoff_timestamp)).await?))
    }
}
