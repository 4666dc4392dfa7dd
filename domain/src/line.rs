//! The line aggregate: a WhatsApp number linked by QR, and its connection state.

use crate::aggregate::Aggregate;
use crate::event::DomainEvent;
use crate::ids::{AccountId, LineId};
use crate::phone::PhoneNumber;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineStatus {
    /// Created; waiting for its QR code to be scanned.
    PendingQr,
    /// Every QR code of the pairing run went unscanned; asking for the QR code again starts a new run.
    QrExpired,
    Connected,
    /// Linked, but the session dropped; it reconnects without a new scan.
    Disconnected,
    /// Unlinked for good; a new line is needed.
    LoggedOut,
}

impl LineStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LineStatus::PendingQr => "pending_qr",
            LineStatus::QrExpired => "qr_expired",
            LineStatus::Connected => "connected",
            LineStatus::Disconnected => "disconnected",
            LineStatus::LoggedOut => "logged_out",
        }
    }
}

/// Which session engine drives a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngineKind {
    /// The simulated WhatsApp network built into the server.
    Sim,
    /// A real WhatsApp number, linked through the in-process WhatsApp Web client.
    Whatsapp,
}

impl EngineKind {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "sim" => Some(EngineKind::Sim),
            "whatsapp" => Some(EngineKind::Whatsapp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Sim => "sim",
            EngineKind::Whatsapp => "whatsapp",
        }
    }
}

#[derive(Debug, Clone)]
pub enum LineCommand {
    Create {
        line_id: LineId,
        account_id: AccountId,
        engine: EngineKind,
    },
    /// The QR code was scanned by `phone` (or the session came back). `jid` is the WhatsApp
    /// identity the engine linked (a real engine's device jid); `None`: the phone's own.
    Connect {
        phone: PhoneNumber,
        jid: Option<String>,
    },
    Disconnect {
        reason: String,
    },
    /// The pairing run's QR codes all went unscanned.
    ExpireQr,
    /// Start a new pairing run for a line whose codes expired.
    RestartPairing,
    /// Unlinked for good: by the tenant (no reason) or from the phone, a ban … (the reason).
    Logout {
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum LineEvent {
    #[serde(rename = "line.created")]
    Created { line_id: LineId, account_id: AccountId, engine: EngineKind },
    /// Schema 2 added `jid`, the WhatsApp identity the engine linked (a real engine reports its
    /// device's jid; the sim, a phone's personal jid). Schema 1 rows are upcast on reading.
    #[serde(rename = "line.connected")]
    Connected { phone: PhoneNumber, jid: String },
    #[serde(rename = "line.disconnected")]
    Disconnected { reason: String },
    /// `reason` (absent in lines logged out by their tenant) came with the engines that can be
    /// logged out from elsewhere; an optional field, so no schema change.
    #[serde(rename = "line.logged_out")]
    LoggedOut {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    #[serde(rename = "line.qr_expired")]
    QrExpired {},
    #[serde(rename = "line.pairing_restarted")]
    PairingRestarted {},
}

impl DomainEvent for LineEvent {
    fn schema_version(&self) -> i32 {
        match self {
            LineEvent::Connected { .. } => 2,
            _ => 1,
        }
    }

    fn upcast(event_type: &str, schema_version: i32, mut payload: Value) -> Value {
        // line.connected 1 → 2: the lines linked before engines reported a jid were all linked
        // by the phone's own account, whose jid is the phone's personal jid.
        if event_type == "line.connected" && schema_version < 2 {
            let jid = payload.get("phone").and_then(Value::as_str).and_then(|p| PhoneNumber::parse(p).ok()).map(|p| p.jid());
            if let (Some(object), Some(jid)) = (payload.as_object_mut(), jid) {
                object.entry("jid").or_insert(Value::String(jid));
            }
        }
        payload
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LineError {
    #[error("line already exists")]
    AlreadyExists,
    #[error("line not found")]
    NotFound,
    #[error("the line is logged out; create a new line")]
    LoggedOut,
    #[error("the line is already linked to {0}")]
    LinkedToAnother(PhoneNumber),
    #[error("the line is not connected")]
    NotConnected,
    /// On the simulated network a number is one phone: another line that is not logged out holds
    /// it already (checked by the database, so concurrent scans cannot both win).
    #[error("that number is already linked to another line")]
    NumberInUse,
    /// Pairing is only for a line that was never linked.
    #[error("the line is already linked")]
    NotPending,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Line {
    pub line: Option<LineState>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LineState {
    pub line_id: LineId,
    pub account_id: AccountId,
    pub engine: EngineKind,
    pub status: LineStatus,
    pub phone: Option<PhoneNumber>,
}

impl Aggregate for Line {
    const STREAM_TYPE: &'static str = "line";
    type Command = LineCommand;
    type Event = LineEvent;
    type Error = LineError;
    type Context<'a> = ();

    fn decide(&self, command: LineCommand, _: &()) -> Result<Vec<LineEvent>, LineError> {
        let line = match (command, &self.line) {
            (LineCommand::Create { line_id, account_id, engine }, None) => {
                return Ok(vec![LineEvent::Created { line_id, account_id, engine }])
            }
            (LineCommand::Create { .. }, Some(_)) => return Err(LineError::AlreadyExists),
            (_, None) => return Err(LineError::NotFound),
            (command, Some(line)) => (command, line),
        };
        use LineStatus::*;
        match line {
            (LineCommand::Logout { .. }, l) if l.status == LoggedOut => Ok(vec![]),
            (_, l) if l.status == LoggedOut => Err(LineError::LoggedOut),
            (LineCommand::Logout { reason }, _) => Ok(vec![LineEvent::LoggedOut { reason }]),
            (LineCommand::Connect { phone, jid }, l) => match (&l.status, &l.phone) {
                (Connected, Some(p)) if *p == phone => Ok(vec![]),
                // A linked line belongs to its number: another phone cannot take it over.
                (_, Some(p)) if *p != phone => Err(LineError::LinkedToAnother(p.clone())),
                _ => Ok(vec![LineEvent::Connected { jid: jid.unwrap_or_else(|| phone.jid()), phone }]),
            },
            (LineCommand::Disconnect { reason }, l) => match l.status {
                Connected => Ok(vec![LineEvent::Disconnected { reason }]),
                _ => Err(LineError::NotConnected),
            },
            (LineCommand::ExpireQr, l) => match l.status {
                PendingQr => Ok(vec![LineEvent::QrExpired {}]),
                _ => Ok(vec![]),
            },
            (LineCommand::RestartPairing, l) => match l.status {
                QrExpired => Ok(vec![LineEvent::PairingRestarted {}]),
                PendingQr => Ok(vec![]),
                _ => Err(LineError::NotPending),
            },
            (LineCommand::Create { .. }, _) => unreachable!("handled above"),
        }
    }

    fn apply(&mut self, event: &LineEvent) {
        match (event, &mut self.line) {
            (LineEvent::Created { line_id, account_id, engine }, _) => {
                self.line = Some(LineState {
                    line_id: line_id.clone(),
                    account_id: account_id.clone(),
                    engine: *engine,
                    status: LineStatus::PendingQr,
                    phone: None,
                })
            }
            (LineEvent::Connected { phone, .. }, Some(l)) => {
                l.status = LineStatus::Connected;
                l.phone = Some(phone.clone());
            }
            (LineEvent::Disconnected { .. }, Some(l)) => l.status = LineStatus::Disconnected,
            (LineEvent::LoggedOut { .. }, Some(l)) => l.status = LineStatus::LoggedOut,
            (LineEvent::QrExpired {}, Some(l)) => l.status = LineStatus::QrExpired,
            (LineEvent::PairingRestarted {}, Some(l)) => l.status = LineStatus::PendingQr,
            (_, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;

    fn created() -> LineEvent {
        LineEvent::Created {
            line_id: LineId::parse("line_0000000000000000000000000a").unwrap(),
            account_id: AccountId::parse("acc_0000000000000000000000000a").unwrap(),
            engine: EngineKind::Sim,
        }
    }

    fn phone(p: &str) -> PhoneNumber {
        PhoneNumber::parse(p).unwrap()
    }

    fn connected(p: &str) -> LineEvent {
        LineEvent::Connected { phone: phone(p), jid: phone(p).jid() }
    }

    #[test]
    fn a_connected_event_of_schema_1_is_upcast_with_the_phones_jid() {
        let stored = serde_json::json!({"phone": "+34600000001"});
        let event = LineEvent::from_stored("line.connected", 1, stored).unwrap();
        assert_eq!(event, connected("+34600000001"));
        let (event_type, payload) = event.to_stored();
        assert_eq!((event_type.as_str(), event.schema_version()), ("line.connected", 2));
        assert_eq!(payload["jid"], "34600000001@s.whatsapp.net");
        // Without the upcast, the old shape does not decode.
        assert!(
            serde_json::from_value::<LineEvent>(serde_json::json!({"type": "line.connected", "phone": "+34600000001"})).is_err()
        );
    }

    #[test]
    fn a_scan_connects_a_pending_line_to_the_scanning_phone() {
        let decided = given::<Line>(&[created()]).when(LineCommand::Connect { phone: phone("+34600000001"), jid: None }, &());
        assert_eq!(decided, Ok(vec![connected("+34600000001")]));
        let line = Line::from_events(&[created(), connected("+34600000001")]);
        assert_eq!(line.line.unwrap().status, LineStatus::Connected);
    }

    #[test]
    fn a_disconnected_line_reconnects_only_to_its_own_number() {
        let history = [created(), connected("+34600000001"), LineEvent::Disconnected { reason: "network".into() }];
        assert!(given::<Line>(&history).when(LineCommand::Connect { phone: phone("+34600000001"), jid: None }, &()).is_ok());
        assert_eq!(
            given::<Line>(&history).when(LineCommand::Connect { phone: phone("+34600000002"), jid: None }, &()),
            Err(LineError::LinkedToAnother(phone("+34600000001")))
        );
    }

    #[test]
    fn only_a_connected_line_can_drop() {
        assert_eq!(
            given::<Line>(&[created()]).when(LineCommand::Disconnect { reason: "x".into() }, &()),
            Err(LineError::NotConnected)
        );
    }

    #[test]
    fn logout_is_final_and_idempotent() {
        let out = [created(), LineEvent::LoggedOut { reason: None }];
        assert_eq!(given::<Line>(&out).when(LineCommand::Logout { reason: None }, &()), Ok(vec![]));
        assert_eq!(
            given::<Line>(&out).when(LineCommand::Connect { phone: phone("+34600000001"), jid: None }, &()),
            Err(LineError::LoggedOut)
        );
        assert_eq!(
            given::<Line>(&[created()]).when(LineCommand::Logout { reason: None }, &()),
            Ok(vec![LineEvent::LoggedOut { reason: None }])
        );
    }

    #[test]
    fn a_pairing_run_that_expires_waits_for_a_new_one_and_a_real_engine_reports_its_device_jid() {
        let expired = given::<Line>(&[created()]).when(LineCommand::ExpireQr, &()).unwrap();
        assert_eq!(expired, vec![LineEvent::QrExpired {}]);
        let history = [created(), LineEvent::QrExpired {}];
        assert_eq!(Line::from_events(&history).line.unwrap().status, LineStatus::QrExpired);
        assert_eq!(given::<Line>(&history).when(LineCommand::ExpireQr, &()), Ok(vec![]));
        let restarted = given::<Line>(&history).when(LineCommand::RestartPairing, &()).unwrap();
        assert_eq!(restarted, vec![LineEvent::PairingRestarted {}]);
        let history = [created(), LineEvent::QrExpired {}, LineEvent::PairingRestarted {}];
        assert_eq!(Line::from_events(&history).line.unwrap().status, LineStatus::PendingQr);
        let device = "34600000001:7@s.whatsapp.net".to_owned();
        let connect = LineCommand::Connect { phone: phone("+34600000001"), jid: Some(device.clone()) };
        let linked = given::<Line>(&history).when(connect, &());
        assert_eq!(linked, Ok(vec![LineEvent::Connected { phone: phone("+34600000001"), jid: device }]));
        let connected = [created(), connected("+34600000001")];
        assert_eq!(given::<Line>(&connected).when(LineCommand::RestartPairing, &()), Err(LineError::NotPending));
    }

    #[test]
    fn a_logout_from_the_phone_keeps_its_reason_and_old_logouts_still_read() {
        let reason = Some("unlinked from the phone".to_owned());
        let out = given::<Line>(&[created()]).when(LineCommand::Logout { reason: reason.clone() }, &()).unwrap();
        assert_eq!(out, vec![LineEvent::LoggedOut { reason }]);
        let old = LineEvent::from_stored("line.logged_out", 1, serde_json::json!({})).unwrap();
        assert_eq!(old, LineEvent::LoggedOut { reason: None });
        assert_eq!(old.to_stored(), ("line.logged_out".to_owned(), serde_json::json!({})));
    }
}
