//! Request ids and the access log. Every response, errors and preflights included, carries
//! `X-Request-Id`: the client's own when it is well formed, else one we make up.

use super::error::ErrorCause;
use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use std::time::Instant;
use tracing::field::Empty;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

/// The id of the request being served, for handlers that record it in event metadata.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// 1 to 128 characters of letters, digits and `-_.:/+=`: enough for UUIDs, ULIDs and tracing ids,
/// and nothing that could break a log line or a header.
fn well_formed(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b))
}

fn generate() -> String {
    format!("req_{}", uuid::Uuid::now_v7().simple())
}

pub async fn middleware(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| well_formed(v))
        .map(str::to_owned)
        .unwrap_or_else(generate);
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    // Every log line of the request carries its id, and the account and line it acts on once the
    // key and the line are known (JSON logs put them under `span`).
    let span = tracing::info_span!("request", request_id = %id, account_id = Empty, line_id = Empty);

    let mut response = next.run(request).instrument(span.clone()).await;

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    // Unmatched paths count as one route: ids in raw paths would make a series each.
    crate::metrics::global().http_request(method.as_str(), route.as_deref().unwrap_or("unmatched"), status, elapsed);
    let route = route.as_deref().unwrap_or(&path);
    span.in_scope(|| {
        if let Some(ErrorCause(cause)) = response.extensions().get::<ErrorCause>() {
            tracing::error!(request_id = %id, %method, route, status, elapsed_ms, cause = %cause, "request failed");
        } else {
            tracing::info!(request_id = %id, %method, route, status, elapsed_ms, "request");
        }
    });
    response.headers_mut().insert(HEADER, HeaderValue::from_str(&id).expect("validated or generated"));
    response
}
