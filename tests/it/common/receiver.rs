//! A real HTTP webhook receiver for tests: it records every request (headers and the raw body,
//! byte for byte) and answers as the test scripts it: a status, a status with headers, or no
//! answer at all (to provoke timeouts, or to hold a request while the sender is killed).

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct Request {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    StatusWith(u16, Vec<(&'static str, String)>),
    /// Never answer (the sender times out, or dies waiting).
    Hang,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Reply>,
    default: Option<Reply>,
    requests: Vec<Request>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    count: watch::Receiver<usize>,
}

impl Receiver {
    /// Listen on 127.0.0.1 (an ephemeral port); answers 200 unless scripted otherwise.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let (count_tx, count) = watch::channel(0usize);
        let count_tx = Arc::new(count_tx);
        let state = inner.clone();
        let handler = move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            let count_tx = count_tx.clone();
            async move {
                let reply = {
                    let mut s = state.lock().unwrap();
                    s.requests.push(Request { headers, body });
                    let reply = s.script.pop_front().or_else(|| s.default.clone()).unwrap_or(Reply::Status(200));
                    count_tx.send_replace(s.requests.len());
                    reply
                };
                answer(reply).await
            }
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, inner, count }
    }

    /// Answer the next requests with these replies, in order; then the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().unwrap().script.extend(replies);
    }

    /// Answer every request not scripted with this.
    pub fn set_default(&self, reply: Reply) {
        self.inner.lock().unwrap().default = Some(reply);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Await at least `n` requests in all; returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Request> {
        let mut count = self.count.clone();
        let reached = tokio::time::timeout(timeout, count.wait_for(|c| *c >= n)).await;
        let requests = self.requests();
        assert!(
            reached.is_ok(),
            "expected {n} webhook requests within {timeout:?}, got {}: {:?}",
            requests.len(),
            requests.iter().map(|r| r.json()).collect::<Vec<_>>()
        );
        requests
    }

    /// Await a request whose body satisfies `matches`; returns it.
    pub async fn wait_for_body(&self, what: &str, timeout: Duration, matches: impl Fn(&Value) -> bool) -> Request {
        let mut count = self.count.clone();
        let found = tokio::time::timeout(timeout, async {
            loop {
                if let Some(r) = self.requests().into_iter().find(|r| matches(&r.json())) {
                    return r;
                }
                count.changed().await.unwrap();
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!("no webhook request {what}; got {:?}", self.requests().iter().map(|r| r.json()).collect::<Vec<_>>())
        })
    }
}

async fn answer(reply: Reply) -> Response {
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::StatusWith(code, headers) => {
            let mut response = StatusCode::from_u16(code).unwrap().into_response();
            for (name, value) in headers {
                response.headers_mut().insert(name, value.parse().unwrap());
            }
            response
        }
        Reply::Hang => std::future::pending().await,
    }
}
