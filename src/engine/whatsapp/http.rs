//! The HTTP client `whatsapp-rust` uses (the app version check, media uploads and downloads), over
//! our `reqwest`, pinned to WhatsApp's own hosts.
//!
//! The library builds these URLs from what WhatsApp's servers tell it (media hosts from the media
//! connection, direct paths from messages), never from a tenant's input, so this is deliberately
//! not the SSRF-guarded client of [`crate::net`]: instead it refuses, before connecting, any URL
//! that is not https on a WhatsApp host (`whatsapp.net`, `whatsapp.com` and their subdomains, on
//! the default port). A message from a contact carrying a crafted URL therefore cannot make the
//! server call anything else.
//!
//! URLs carry media tokens in their query, so an error names at most the host, never the URL.

use anyhow::anyhow;
use std::time::Duration;
use wacore::net::{HttpClient, HttpRequest, HttpResponse};

/// The domains the library talks to: `web.whatsapp.com` (the app version), `mmg.whatsapp.net`,
/// `media-*.cdn.whatsapp.net`, `media.*.fna.whatsapp.net` … (media hosts the server names),
/// `static.whatsapp.net` (static media URLs).
const WHATSAPP_DOMAINS: [&str; 2] = ["whatsapp.net", "whatsapp.com"];

/// The largest response body read into memory. WhatsApp's own limit for a document is larger, but
/// the gateway relays files in memory; anything bigger is refused rather than buffered.
const MAX_BODY_BYTES: usize = 128 * 1024 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A whole exchange, uploads of large files on slow links included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a URL was refused without being called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a valid URL")]
    Malformed,
    #[error("only https is allowed for WhatsApp hosts")]
    NotHttps,
    /// Credentials, or an explicit port other than https's.
    #[error("a WhatsApp URL carries no credentials and no port other than 443")]
    Unusual,
    #[error("`{0}` is not a WhatsApp host")]
    ForeignHost(String),
}

/// `raw` parsed, if it may be called: https, no credentials, the default port, and a host that is
/// one of [`WHATSAPP_DOMAINS`] or a subdomain of one (an IP literal never is).
pub fn pinned(raw: &str) -> Result<reqwest::Url, Refused> {
    let url = reqwest::Url::parse(raw).map_err(|_| Refused::Malformed)?;
    if url.scheme() != "https" {
        return Err(Refused::NotHttps);
    }
    if !url.username().is_empty() || url.password().is_some() || url.port().is_some_and(|p| p != 443) {
        return Err(Refused::Unusual);
    }
    match url.host() {
        Some(url::Host::Domain(host)) if is_whatsapp_domain(host) => Ok(url),
        Some(host) => Err(Refused::ForeignHost(host.to_string())),
        None => Err(Refused::Malformed),
    }
}

/// `host` (lower case, as the URL parser leaves it) is a WhatsApp domain or a subdomain of one:
/// `evilwhatsapp.net` and `whatsapp.net.example.com` are not.
fn is_whatsapp_domain(host: &str) -> bool {
    WHATSAPP_DOMAINS.iter().any(|domain| host == *domain || host.strip_suffix(domain).is_some_and(|sub| sub.ends_with('.')))
}

/// `wacore::net::HttpClient` over `reqwest`, refusing every host but WhatsApp's.
#[derive(Clone)]
pub struct WhatsAppHttp {
    client: reqwest::Client,
}

impl WhatsAppHttp {
    pub fn new() -> Result<Self, reqwest::Error> {
        Self::from_builder(reqwest::Client::builder())
    }

    /// The pinned client's settings on top of `builder` (tests add a DNS override to it).
    fn from_builder(builder: reqwest::ClientBuilder) -> Result<Self, reqwest::Error> {
        let client = builder
            .https_only(true)
            // A redirect could lead off WhatsApp's hosts; the library handles 3xx itself.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self { client })
    }
}

#[async_trait::async_trait]
impl HttpClient for WhatsAppHttp {
    /// Any completed exchange is `Ok`, whatever its status (the library reads 401/403/404/410 to
    /// refresh its media connection); `Err` means no exchange happened.
    async fn execute(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        let url = pinned(&request.url)?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let method = match request.method.as_str() {
            "GET" => reqwest::Method::GET,
            "POST" => reqwest::Method::POST,
            other => return Err(anyhow!("unsupported HTTP method {other} for {host}")),
        };
        let mut call = self.client.request(method, url);
        for (name, value) in &request.headers {
            call = call.header(name.as_str(), value.as_str());
        }
        if let Some(body) = request.body {
            call = call.body(body);
        }
        // `without_url`: reqwest's errors name the URL, and its query holds media tokens.
        let failed = |e: reqwest::Error| anyhow!("request to {host} failed: {}", e.without_url());
        let mut response = call.send().await.map_err(failed)?;
        let status_code = response.status().as_u16();
        if response.content_length().is_some_and(|length| length > MAX_BODY_BYTES as u64) {
            return Err(anyhow!("response from {host} is larger than {MAX_BODY_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(anyhow!("response from {host} is larger than {MAX_BODY_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpResponse { status_code, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn whatsapp_hosts_over_https_pass() {
        for url in [
            "https://web.whatsapp.com/sw.js",
            "https://mmg.whatsapp.net/v/t62.7118-24/abc.enc?auth=x&token=y",
            "https://media-mad1-1.cdn.whatsapp.net/mms/image/abc?token=t",
            "https://media.fmad3-1.fna.whatsapp.net/o1/v/t62",
            "https://static.whatsapp.net/sticker?id=1",
            "https://MMG.WhatsApp.NET:443/upper-case-and-explicit-443",
            "https://whatsapp.net/",
        ] {
            assert!(pinned(url).is_ok(), "{url} should pass");
        }
    }

    #[test]
    fn anything_else_is_refused_with_its_reason() {
        assert_eq!(pinned("http://mmg.whatsapp.net/x"), Err(Refused::NotHttps));
        assert_eq!(pinned("wss://web.whatsapp.com/ws/chat"), Err(Refused::NotHttps));
        assert_eq!(pinned("https://127.0.0.1/x"), Err(Refused::ForeignHost("127.0.0.1".into())));
        assert_eq!(pinned("https://[::1]/x"), Err(Refused::ForeignHost("[::1]".into())));
        assert_eq!(pinned("https://evilwhatsapp.net/x"), Err(Refused::ForeignHost("evilwhatsapp.net".into())));
        assert_eq!(
            pinned("https://mmg.whatsapp.net.evil.example/x"),
            Err(Refused::ForeignHost("mmg.whatsapp.net.evil.example".into()))
        );
        assert_eq!(pinned("https://mmg.whatsapp.net@evil.example/x"), Err(Refused::Unusual));
        assert_eq!(pinned("https://mmg.whatsapp.net:8443/x"), Err(Refused::Unusual));
        assert_eq!(pinned("not a url"), Err(Refused::Malformed));
    }

    /// A local listener standing in for a host: whether the client connected to it shows whether
    /// the request went past the pin. The refusal is decided before any connection is opened, so
    /// once `execute` has returned, a connection it had opened would already be waiting here.
    struct Listener(TcpListener);

    impl Listener {
        fn bind() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            Self(listener)
        }
        fn addr(&self) -> std::net::SocketAddr {
            self.0.local_addr().unwrap()
        }
        fn was_connected(&self) -> bool {
            match self.0.accept() {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                Err(e) => panic!("accept failed: {e}"),
            }
        }
    }

    /// A client whose DNS sends `mmg.whatsapp.net` and `evilwhatsapp.net` to `listener`, so no test
    /// touches the network.
    fn client_resolving_to(listener: &Listener) -> WhatsAppHttp {
        let builder =
            reqwest::Client::builder().resolve("mmg.whatsapp.net", listener.addr()).resolve("evilwhatsapp.net", listener.addr());
        WhatsAppHttp::from_builder(builder).unwrap()
    }

    fn refusal(error: &anyhow::Error) -> Option<&Refused> {
        error.downcast_ref::<Refused>()
    }

    #[tokio::test]
    async fn a_refused_url_is_never_connected_to() {
        let listener = Listener::bind();
        let client = client_resolving_to(&listener);
        let port = listener.addr().port();
        for url in [
            format!("http://127.0.0.1:{port}/x"),
            format!("https://127.0.0.1:{port}/x"),
            "https://evilwhatsapp.net/x".to_owned(),
            "http://mmg.whatsapp.net/x".to_owned(),
        ] {
            let error = client.execute(HttpRequest::get(&url)).await.unwrap_err();
            assert!(refusal(&error).is_some(), "{url}: {error}");
            assert!(!listener.was_connected(), "{url} was connected to");
        }
    }

    #[tokio::test]
    async fn a_whatsapp_host_is_let_through_to_the_connection() {
        let listener = Listener::bind();
        let client = client_resolving_to(&listener);
        // The stand-in host accepts and hangs up at once (it speaks no TLS), so the exchange fails
        // right after connecting: what matters is that it was attempted, and that the error names
        // the host without the token in the query.
        let listener = tokio::net::TcpListener::from_std(listener.0).unwrap();
        let host = tokio::spawn(async move { listener.accept().await.map(drop).is_ok() });
        let error =
            client.execute(HttpRequest::get("https://mmg.whatsapp.net/v/t62/abc.enc?token=SECRET-TOKEN")).await.unwrap_err();
        assert!(refusal(&error).is_none(), "{error}");
        assert!(host.await.unwrap(), "the host was not connected to");
        let message = format!("{error:#}");
        assert!(message.contains("mmg.whatsapp.net"), "{message}");
        assert!(!message.contains("SECRET-TOKEN"), "{message}");
    }
}
