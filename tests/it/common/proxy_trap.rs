//! A proxy that must never be used: it counts the connections it gets and closes them at once.
//! A server started with [`ProxyTrap::env`] would send every outbound request to it if its HTTP
//! clients honoured the proxy settings of the environment.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct ProxyTrap {
    url: String,
    connections: Arc<AtomicUsize>,
}

impl ProxyTrap {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        Self { url, connections }
    }

    /// How many connections were made to it.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Every proxy variable pointing at this trap, and no exceptions (`NO_PROXY` empty).
    pub fn env(&self) -> Vec<(&'static str, &str)> {
        let url = self.url.as_str();
        let mut env: Vec<(&'static str, &str)> =
            ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"].map(|name| (name, url)).into();
        env.extend([("NO_PROXY", ""), ("no_proxy", "")]);
        env
    }
}
