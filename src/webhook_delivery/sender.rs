//! One HTTP attempt: sign the exact body, POST it to the webhook's URL, and say what happened.

use crate::net::{innermost, literal_not_public, refusal};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{Duration, Instant};

pub const EVENT_HEADER: &str = "x-wazion-bridge-event";
pub const SIGNATURE_HEADER: &str = "x-wazion-bridge-signature";
pub const DELIVERY_HEADER: &str = "x-wazion-bridge-delivery";
pub const TIMESTAMP_HEADER: &str = "x-wazion-bridge-timestamp";

/// `sha256=<hex HMAC-SHA256(secret, body)>`, as the published API specifies.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    pub duration: Duration,
    /// Why it failed without an answer (timeout, refused connection, non-public address), or the
    /// status line of an answer that was not 2xx.
    pub error: Option<String>,
}

pub struct Request<'a> {
    pub url: &'a str,
    pub secret: &'a str,
    pub event_type: &'a str,
    pub delivery_id: &'a str,
    pub body: &'a str,
}

pub async fn send(client: &reqwest::Client, allow_private: bool, timeout: Duration, request: Request<'_>) -> Attempt {
    let started = Instant::now();
    let failed = |error: String| Attempt { status: None, retry_after: None, duration: started.elapsed(), error: Some(error) };
    let url = match reqwest::Url::parse(request.url) {
        Ok(url) => url,
        Err(_) => return failed("the webhook URL is not a URL".into()),
    };
    // Literal addresses never reach the client's resolver, which checks names.
    if let Some(refused) = literal_not_public(&url).filter(|_| !allow_private) {
        return failed(format!("refused: {refused}"));
    }
    let response = client
        .post(url)
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, request.event_type)
        .header(SIGNATURE_HEADER, signature(request.secret, request.body.as_bytes()))
        .header(DELIVERY_HEADER, request.delivery_id)
        .header(TIMESTAMP_HEADER, chrono::Utc::now().timestamp().to_string())
        .body(request.body.to_owned())
        .send()
        .await;
    match response {
        Ok(response) => {
            let status = response.status();
            let retry_after =
                response.headers().get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let error = (!status.is_success()).then(|| {
                let mut error = format!("HTTP {}", status.as_u16());
                if let Some(reason) = status.canonical_reason() {
                    error = format!("{error} {reason}");
                }
                if status.is_redirection() {
                    error.push_str(" (redirects are not followed)");
                }
                error
            });
            Attempt { status: Some(status.as_u16()), retry_after, duration: started.elapsed(), error }
        }
        Err(e) if e.is_timeout() => failed(format!("no answer within {} ms", timeout.as_millis())),
        Err(e) => match refusal(&e) {
            Some(refused) => failed(format!("refused: {refused}")),
            None => failed(innermost(&e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_published_hmac() {
        // RFC 4231 test case 2.
        let sig = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
