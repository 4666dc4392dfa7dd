//! Downloading `media_url` for send-media: http(s) only, within size and time limits, with the
//! content type checked against `media_type`, no redirects, and, unless private URLs are allowed,
//! only public addresses. The check is made on the addresses DNS returns, inside the client's own
//! resolver, so the address checked is the address connected to (no rebinding between the two).

use crate::net::{innermost, literal_not_public, outbound_client, refusal, NotPublic};
use domain::message::MediaType;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct MediaFile {
    pub bytes: Vec<u8>,
    pub content_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("media_url is not an http or https URL")]
    Scheme,
    #[error("media_url is refused: {0} (private, loopback and link-local addresses are never fetched)")]
    NotPublic(NotPublic),
    #[error("media_url could not be fetched: {0}")]
    Fetch(String),
    #[error("media_url answered HTTP {0}")]
    Status(u16),
    #[error("media_url redirects; redirects are not followed")]
    Redirect,
    #[error("media_url is larger than {0} bytes")]
    TooLarge(usize),
    #[error("media_url did not answer within {0} s")]
    Timeout(u64),
    #[error("media_url has content type `{found}`, which is not {expected}")]
    ContentType { found: String, expected: &'static str },
}

#[derive(Clone, Debug)]
pub struct MediaFetcher {
    client: reqwest::Client,
    max_bytes: usize,
    timeout: Duration,
    allow_private: bool,
}

impl MediaFetcher {
    pub fn new(max_bytes: usize, timeout: Duration, allow_private: bool) -> Self {
        let client =
            outbound_client(allow_private).connect_timeout(timeout.min(Duration::from_secs(10))).build().expect("an HTTP client");
        Self { client, max_bytes, timeout, allow_private }
    }

    pub async fn fetch(&self, url: &str, media_type: MediaType) -> Result<MediaFile, MediaError> {
        match tokio::time::timeout(self.timeout, self.fetch_inner(url, media_type)).await {
            Ok(result) => result,
            Err(_) => Err(MediaError::Timeout(self.timeout.as_secs().max(1))),
        }
    }

    async fn fetch_inner(&self, url: &str, media_type: MediaType) -> Result<MediaFile, MediaError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| MediaError::Scheme)?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(MediaError::Scheme);
        }
        // Literal addresses never reach the resolver: check them here.
        if let Some(refused) = literal_not_public(&parsed).filter(|_| !self.allow_private) {
            return Err(MediaError::NotPublic(refused));
        }
        let mut response = self.client.get(parsed).send().await.map_err(describe)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(MediaError::Redirect);
        }
        if !status.is_success() {
            return Err(MediaError::Status(status.as_u16()));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .unwrap_or_default();
        let expected = match media_type {
            MediaType::Image => "image/*",
            MediaType::Video => "video/*",
            MediaType::Audio => "audio/*",
            MediaType::Document => "a document",
        };
        let fits = match media_type {
            MediaType::Image => content_type.starts_with("image/"),
            MediaType::Video => content_type.starts_with("video/"),
            MediaType::Audio => content_type.starts_with("audio/"),
            // Any file may be sent as a document, but not an HTML error page.
            MediaType::Document => !content_type.is_empty() && content_type != "text/html",
        };
        if !fits {
            return Err(MediaError::ContentType { found: content_type, expected });
        }
        if response.content_length().is_some_and(|n| n > self.max_bytes as u64) {
            return Err(MediaError::TooLarge(self.max_bytes));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(describe)? {
            if bytes.len() + chunk.len() > self.max_bytes {
                return Err(MediaError::TooLarge(self.max_bytes));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(MediaFile { bytes, content_type })
    }
}

/// The innermost cause, which is what says what went wrong (and our own resolver's refusal).
fn describe(error: reqwest::Error) -> MediaError {
    match refusal(&error) {
        Some(refused) => MediaError::NotPublic(refused),
        None => MediaError::Fetch(innermost(&error)),
    }
}
