//! How the library's failures reach a session: [`WaError::Rejected`] when WhatsApp refused the
//! request itself (sending it again will not help), [`WaError::Unavailable`] when the connection
//! was down or too slow (try again once the line is back). Pure, tested on constructed errors.

use super::super::seam::WaError;
use std::error::Error;
use whatsapp_rust::pair_code::PairError;
use whatsapp_rust::{ClientError, ErrorChainExt, SendError};

/// The connection, not the request, is at fault somewhere in `error`'s chain.
fn connection_trouble(error: &(dyn Error + 'static)) -> bool {
    error.is_timeout() || error.is_transport_unavailable()
}

fn server_refusal(error: &(dyn Error + 'static)) -> Option<String> {
    error.server_rejection().map(|refused| format!("WhatsApp refused the request ({}: {})", refused.code, refused.text))
}

/// A failed send, before the server acknowledged it.
pub fn send_failure(error: &SendError) -> WaError {
    if connection_trouble(error) {
        return WaError::Unavailable(format!("not sent, the connection is down: {error}"));
    }
    if let Some(refusal) = server_refusal(error) {
        return WaError::Rejected(refusal);
    }
    match error {
        SendError::NotLoggedIn => WaError::Unavailable("not sent, the line is not logged in".into()),
        SendError::Client(_) | SendError::Iq(_) => WaError::Unavailable(format!("not sent: {error}")),
        // Invalid requests and the library's own failures to build the message (encryption,
        // recipients' devices) do not get better by waiting.
        _ => WaError::Rejected(format!("not sent: {error}")),
    }
}

/// The server's `<ack>` of a sent message: no error means accepted.
pub fn server_ack(error_code: Option<&str>) -> Result<(), WaError> {
    let Some(code) = error_code else { return Ok(()) };
    let meaning = match code {
        "400" => "the message was malformed",
        "404" => "the recipient was not found",
        "406" => "the message is not acceptable",
        "463" => "the recipient requires a contact token (the number may not accept messages from strangers)",
        "479" => "a field of the message has the wrong format",
        "500" | "503" => "WhatsApp had a server error",
        _ => "the message was refused",
    };
    Err(WaError::Rejected(format!("WhatsApp refused the message (error {code}): {meaning}")))
}

pub fn not_on_whatsapp(user: &str) -> WaError {
    WaError::Rejected(format!("+{user} is not on WhatsApp"))
}

/// An upload or download of media: an HTTP refusal (4xx) is WhatsApp's answer about this file;
/// anything else (no host answered, a timeout) is the network's.
pub fn media_failure(what: &str, error: &anyhow::Error) -> WaError {
    let chain: &(dyn Error + 'static) = error.as_ref();
    match chain.http_status() {
        Some(status) if (400..500).contains(&status) => WaError::Rejected(format!("WhatsApp refused the {what} (HTTP {status})")),
        _ => WaError::Unavailable(format!("the {what} failed: {error}")),
    }
}

/// Any other request (read receipts, app-state mutations): the server's refusals and bad
/// arguments are rejections, the connection's trouble is unavailability.
pub fn request_failure(what: &str, error: &(dyn Error + 'static)) -> WaError {
    if connection_trouble(error) || ErrorChainExt::sources(error).any(|cause| cause.downcast_ref::<ClientError>().is_some()) {
        WaError::Unavailable(format!("{what} failed, the connection is down: {error}"))
    } else if let Some(refusal) = server_refusal(error) {
        WaError::Rejected(format!("{what}: {refusal}"))
    } else {
        WaError::Rejected(format!("{what} failed: {error}"))
    }
}

/// A pairing code request: the library's validation (a number too short, a code still
/// outstanding) and the server's refusals (throttling included) are rejections.
pub fn pairing_failure(error: &PairError) -> WaError {
    match error {
        PairError::RequestFailed(_) if connection_trouble(error) => {
            WaError::Unavailable(format!("no pairing code, the connection is down: {error}"))
        }
        _ => WaError::Rejected(format!("no pairing code: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whatsapp_rust::http::HttpStatusError;
    use whatsapp_rust::pair_code::PairCodeError;
    use whatsapp_rust::IqError;

    fn server_error(code: u16, text: &str) -> IqError {
        IqError::ServerError { code, text: text.into(), error_type: None, backoff: None }
    }

    #[test]
    fn connection_trouble_is_unavailable() {
        for error in [
            SendError::Client(ClientError::NotConnected),
            SendError::Iq(IqError::Timeout),
            SendError::Iq(IqError::NotConnected),
            SendError::NotLoggedIn,
        ] {
            assert!(matches!(send_failure(&error), WaError::Unavailable(_)), "{error}");
        }
    }

    #[test]
    fn refusals_are_rejected_with_the_reason() {
        assert_eq!(
            send_failure(&SendError::Iq(server_error(403, "forbidden"))),
            WaError::Rejected("WhatsApp refused the request (403: forbidden)".into())
        );
        assert!(
            matches!(send_failure(&SendError::InvalidRequest("bad jid".into())), WaError::Rejected(r) if r.contains("bad jid"))
        );
        assert!(matches!(
            send_failure(&SendError::Internal(anyhow::anyhow!("device-list refresh left no valid devices"))),
            WaError::Rejected(r) if r.contains("no valid devices")
        ));
    }

    #[test]
    fn a_nacked_message_is_rejected_and_an_ack_accepts() {
        assert_eq!(server_ack(None), Ok(()));
        assert!(matches!(server_ack(Some("479")), Err(WaError::Rejected(r)) if r.contains("479") && r.contains("wrong format")));
        assert!(matches!(server_ack(Some("999")), Err(WaError::Rejected(r)) if r.contains("999")));
    }

    #[test]
    fn a_number_not_on_whatsapp_is_rejected() {
        assert_eq!(not_on_whatsapp("34600000000"), WaError::Rejected("+34600000000 is not on WhatsApp".into()));
    }

    #[test]
    fn media_refused_by_whatsapp_is_rejected_and_a_network_failure_is_not() {
        let refused = anyhow::Error::new(HttpStatusError { status: 415 }).context("Upload failed 415");
        assert_eq!(media_failure("upload", &refused), WaError::Rejected("WhatsApp refused the upload (HTTP 415)".into()));
        let gone = anyhow::Error::new(HttpStatusError { status: 410 }).context("download failed");
        assert!(matches!(media_failure("download", &gone), WaError::Rejected(_)));
        let unreachable = anyhow::anyhow!("request to mmg.whatsapp.net failed: connection refused");
        assert!(matches!(media_failure("upload", &unreachable), WaError::Unavailable(_)));
        let server = anyhow::Error::new(HttpStatusError { status: 503 }).context("Upload failed 503");
        assert!(matches!(media_failure("upload", &server), WaError::Unavailable(_)));
    }

    #[test]
    fn other_requests() {
        let timeout = anyhow::Error::new(IqError::Timeout);
        assert!(matches!(request_failure("archive", timeout.as_ref()), WaError::Unavailable(_)));
        let not_connected = anyhow::anyhow!(ClientError::NotConnected);
        assert!(matches!(request_failure("read receipt", not_connected.as_ref()), WaError::Unavailable(_)));
        let refused = anyhow::Error::new(server_error(400, "bad-request"));
        assert!(matches!(request_failure("archive", refused.as_ref()), WaError::Rejected(r) if r.contains("400")));
    }

    #[test]
    fn pairing_code_failures() {
        assert!(matches!(pairing_failure(&PairError::PairCode(PairCodeError::PhoneNumberTooShort)), WaError::Rejected(_)));
        assert!(matches!(pairing_failure(&PairError::RequestFailed(IqError::Timeout)), WaError::Unavailable(_)));
        assert!(matches!(pairing_failure(&PairError::RequestFailed(server_error(429, "rate-overlimit"))), WaError::Rejected(_)));
    }
}
