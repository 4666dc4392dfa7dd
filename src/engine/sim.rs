//! The simulated WhatsApp network.
//!
//! Lines of this server that use the `sim` engine are phones on one simulated network: a message
//! sent to the number of another connected sim line arrives there as an inbound message, and every
//! sent message is delivered and read by its recipient on a configurable schedule. Sends are
//! de-duplicated by engine message id, and a per-line fault switch makes them fail or hang.
//!
//! Its QR codes look and behave like WhatsApp Web's: a payload that rotates every
//! [`QR_ROTATION_SECS`] seconds while the line waits for a scan. They are deterministic (derived
//! from the line id and the rotation), so any node shows the same code at the same moment.

use super::{EngineError, EngineFuture, EngineLine, Outbound, QrCode, SessionEngine};
use crate::commands::messages as message_commands;
use crate::store::{Actor, EventStore, Metadata};
use chrono::{DateTime, TimeZone, Utc};
use domain::chat_id::ChatId;
use domain::ids::{AccountId, LineId};
use domain::message::MessageStatus;
use domain::phone::PhoneNumber;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct SimNetwork {
    store: EventStore,
    delivered_after: Duration,
    read_after: Duration,
    shutdown: CancellationToken,
    receipts: TaskTracker,
}

impl SimNetwork {
    pub fn new(store: EventStore, delivered_after: Duration, read_after: Duration, shutdown: CancellationToken) -> Self {
        Self { store, delivered_after, read_after, shutdown, receipts: TaskTracker::new() }
    }

    async fn deliver(&self, message: &Outbound) -> Result<(), EngineError> {
        // The moment the network is reached, before any of its own bookkeeping.
        let reached_at = Utc::now();
        let pool = self.store.pool();
        let fault: Option<String> = sqlx::query_scalar("SELECT mode FROM sim_faults WHERE line_id = $1")
            .bind(message.line_id.as_str())
            .fetch_optional(pool)
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        match fault.as_deref() {
            Some("fail") => return Err(EngineError::Rejected("simulated failure (sandbox fault switch)".into())),
            // Never answers: the dispatcher's timeout decides.
            Some("hang") => std::future::pending::<()>().await,
            _ => {}
        }
        // The network remembers every id it carried: the same id twice is delivered once. The
        // record and the delivery commit together, so a crash between them cannot lose a message
        // that a retry would then drop as a duplicate.
        let unavailable = |e: sqlx::Error| EngineError::Unavailable(e.to_string());
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let first: Option<i32> = sqlx::query_scalar(
            "INSERT INTO sim_deliveries (engine_message_id, from_line, to_phone, delivered_at, message_id, media_bytes, media_content_type) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (engine_message_id) DO NOTHING RETURNING 1",
        )
        .bind(&message.engine_message_id)
        .bind(message.line_id.as_str())
        .bind(message.to.as_str())
        .bind(reached_at)
        .bind(message.message_id.as_str())
        .bind(message.media.as_ref().map(|m| m.bytes.len() as i32))
        .bind(message.media.as_ref().map(|m| m.content_type.as_str()))
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        if first.is_none() {
            tx.rollback().await.map_err(unavailable)?;
            tracing::info!(engine_message_id = %message.engine_message_id, "sim: duplicate send dropped");
            return Ok(());
        }
        // The recipient phone may be another sim line of this server (at most one holds a number:
        // migration 0012), of this tenant or of another.
        let recipients: Vec<(String, String, bool)> = sqlx::query_as(
            "SELECT r.line_id, r.account_id, r.account_id = s.account_id FROM lines r JOIN lines s ON s.line_id = $2 \
             WHERE r.phone = $1 AND r.engine = 'sim' AND r.status = 'connected' AND r.line_id <> $2",
        )
        .bind(message.to.as_str())
        .bind(message.line_id.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let to_own_line = recipients.iter().any(|(_, _, same_account)| *same_account);
        let mut appends = Vec::with_capacity(recipients.len());
        for (line_id, account_id, _) in recipients {
            let (Ok(line_id), Ok(account_id)) = (LineId::parse(&line_id), AccountId::parse(&account_id)) else { continue };
            let inbound = message_commands::Inbound {
                line_id: line_id.clone(),
                from: message.from.clone(),
                group: None,
                engine_message_id: message.engine_message_id.clone(),
                content: message.content.clone(),
                quoted_engine_message_id: message.quoted_engine_message_id.clone(),
            };
            let metadata = Metadata::new(Actor::Engine { line_id: line_id.to_string() });
            let (append, _) = message_commands::inbound_append(&metadata, &account_id, inbound);
            self.store.append_in(&mut tx, &append).await.map_err(|e| EngineError::Unavailable(format!("{e:#}")))?;
            appends.push(append);
        }
        tx.commit().await.map_err(unavailable)?;
        for append in &appends {
            self.store.committed(append);
        }
        if !matches!(message.content, domain::message::Content::Reaction { .. }) {
            self.schedule_receipts(message, to_own_line);
        }
        Ok(())
    }

    /// The recipient's phone acknowledges: delivered, then read. A sim line of the sender's own
    /// account reads a message when its tenant marks the chat read ([`SessionEngine::mark_read`]);
    /// every other simulated phone, another tenant's line included, reads on the configured
    /// schedule, so the receipts never tell a sender whether a number belongs to someone's line.
    fn schedule_receipts(&self, message: &Outbound, to_own_line: bool) {
        let (store, shutdown) = (self.store.clone(), self.shutdown.clone());
        let (delivered_after, read_after) = (self.delivered_after, self.read_after);
        let (message_id, line_id) = (message.message_id.clone(), message.line_id.to_string());
        self.receipts.spawn(async move {
            let metadata = Metadata::new(Actor::Engine { line_id });
            let receipts: &[(Duration, MessageStatus)] = if to_own_line {
                &[(delivered_after, MessageStatus::Delivered)]
            } else {
                &[(delivered_after, MessageStatus::Delivered), (read_after, MessageStatus::Read)]
            };
            for &(after, status) in receipts {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(after) => {}
                }
                if let Err(e) = message_commands::receipt(&store, &metadata, &message_id, status).await {
                    tracing::warn!(%message_id, error = %e, "sim: recording a receipt failed");
                }
            }
        });
    }
}

impl SessionEngine for SimNetwork {
    fn send<'a>(&'a self, message: &'a Outbound) -> EngineFuture<'a> {
        Box::pin(self.deliver(message))
    }

    fn mark_read<'a>(&'a self, line: &'a EngineLine, _chat: &'a ChatId, engine_message_ids: &'a [String]) -> EngineFuture<'a> {
        let line_id = &line.id;
        Box::pin(async move {
            // The senders of those messages, if they were sim lines of the same account, get a read
            // receipt (another account's sender already got one on the schedule).
            let senders: Vec<String> = sqlx::query_scalar(
                "SELECT d.message_id FROM sim_deliveries d \
                 JOIN lines s ON s.line_id = d.from_line JOIN lines r ON r.line_id = $2 AND r.account_id = s.account_id \
                 WHERE d.engine_message_id = ANY($1) AND d.message_id IS NOT NULL",
            )
            .bind(engine_message_ids)
            .bind(line_id.as_str())
            .fetch_all(self.store.pool())
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
            let metadata = Metadata::new(Actor::Engine { line_id: line_id.to_string() });
            for id in senders.iter().filter_map(|id| domain::ids::MessageId::parse(id).ok()) {
                message_commands::receipt(&self.store, &metadata, &id, MessageStatus::Read)
                    .await
                    .map_err(|e| EngineError::Unavailable(format!("{e:#}")))?;
            }
            Ok(())
        })
    }

    /// The simulated phone keeps no archive of its own: the read model is the whole state.
    fn archive<'a>(&'a self, _line: &'a EngineLine, _chat: &'a ChatId, _archived: bool) -> EngineFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    /// A logged-out sim line stops being reachable: `deliver` only finds connected lines.
    fn logout<'a>(&'a self, _line: &'a EngineLine) -> EngineFuture<'a> {
        Box::pin(async { Ok(()) })
    }

    fn qr_code<'a>(&'a self, line: &'a EngineLine) -> EngineFuture<'a, Option<QrCode>> {
        Box::pin(async move { Ok(Some(qr_code(&line.id, Utc::now()))) })
    }

    /// The sandbox's code is derived from the line and the number; linking still happens by the
    /// sandbox's scan (there is no phone to type it on).
    fn pairing_code<'a>(&'a self, line: &'a EngineLine, phone: &'a PhoneNumber) -> EngineFuture<'a, String> {
        Box::pin(async move { Ok(pairing_code(&line.id, phone)) })
    }
}

/// The alphabet of WhatsApp's pairing codes (no 0, I, O or U, which read ambiguously).
pub const PAIRING_CODE_ALPHABET: &[u8; 32] = b"123456789ABCDEFGHJKLMNPQRSTVWXYZ";

/// The sandbox's pairing code of a line for a number: 8 characters of WhatsApp's alphabet.
pub fn pairing_code(line_id: &LineId, phone: &PhoneNumber) -> String {
    let digest = Sha256::digest(format!("{line_id}:{phone}").as_bytes());
    digest[..8].iter().map(|b| PAIRING_CODE_ALPHABET[(b & 31) as usize] as char).collect()
}

pub const QR_ROTATION_SECS: i64 = 20;

/// The QR code a waiting sim line shows at `now`.
pub fn qr_code(line_id: &LineId, now: DateTime<Utc>) -> QrCode {
    let rotation = now.timestamp().div_euclid(QR_ROTATION_SECS);
    let digest = Sha256::digest(format!("{line_id}:{rotation}").as_bytes());
    let reference = hex::encode(&digest[..12]);
    let payload = format!("2@sim{reference},{line_id},{rotation}");
    let expires_at = Utc.timestamp_opt((rotation + 1) * QR_ROTATION_SECS, 0).single().expect("valid time");
    QrCode { payload, expires_at }
}

/// The QR payload drawn as an SVG image.
pub fn qr_svg(payload: &str) -> String {
    let code = qrcode::QrCode::new(payload.as_bytes()).expect("a QR payload this short always fits");
    code.render::<qrcode::render::svg::Color>().min_dimensions(256, 256).quiet_zone(true).build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_rotates_and_is_the_same_within_a_rotation() {
        let line = LineId::new();
        let t0: DateTime<Utc> = "2026-11-25T10:00:00Z".parse().unwrap();
        let a = qr_code(&line, t0);
        let b = qr_code(&line, t0 + chrono::Duration::seconds(19));
        let c = qr_code(&line, t0 + chrono::Duration::seconds(20));
        assert_eq!(a, b);
        assert_ne!(a.payload, c.payload);
        assert_eq!(a.expires_at, t0 + chrono::Duration::seconds(20));
        assert!(qr_svg(&a.payload).starts_with("<?xml"));
    }

    #[test]
    fn a_sandbox_pairing_code_is_eight_characters_of_whatsapps_alphabet() {
        let (line, phone) = (LineId::new(), PhoneNumber::parse("+34600000001").unwrap());
        let code = pairing_code(&line, &phone);
        assert_eq!(code.len(), 8);
        assert!(code.bytes().all(|b| PAIRING_CODE_ALPHABET.contains(&b)), "{code}");
        assert_eq!(code, pairing_code(&line, &phone));
        assert_ne!(code, pairing_code(&line, &PhoneNumber::parse("+34600000002").unwrap()));
    }
}
