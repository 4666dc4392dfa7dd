//! The simulated WhatsApp network.
//!
//! Its QR codes look and behave like WhatsApp Web's: a payload that rotates every
//! [`QR_ROTATION_SECS`] seconds while the line waits for a scan. They are deterministic (derived
//! from the line id and the rotation), so any node shows the same code at the same moment.

use chrono::{DateTime, TimeZone, Utc};
use domain::ids::LineId;
use sha2::{Digest, Sha256};

pub const QR_ROTATION_SECS: i64 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrCode {
    pub payload: String,
    pub expires_at: DateTime<Utc>,
}

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
}
