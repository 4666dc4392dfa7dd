//! The HTTP/1 accept loop, with the `[http]` limits that keep slow or numerous clients from
//! holding the server:
//!
//! - a connection must send a request's whole header within `header_read_timeout_ms` (an idle
//!   keep-alive connection too), or it is closed;
//! - at most `max_connections` are served at once; beyond that the loop stops accepting, so new
//!   connections wait in the listen backlog until one closes (they are not refused).
//!
//! (The request timeout is a layer of the router, so that its answer carries the request id.)
//!
//! On shutdown it stops accepting, lets each connection finish the request it is serving (idle
//! ones close at once), and returns when the last one has closed.

use crate::config::HttpConfig;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub async fn serve(listener: TcpListener, app: Router, config: &HttpConfig, shutdown: CancellationToken) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_millis(config.header_read_timeout_ms));
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let connections = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    pause_after_accept_error(e).await;
                    continue;
                }
            },
        };
        // Handlers that need the client's address (the console's sign-in limit) find it here.
        let service =
            tower::ServiceExt::map_request(app.clone(), move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
                request
            });
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = served {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// A connection that failed before it was accepted concerns only that client; anything else
/// (out of file descriptors) gets a pause, so the loop does not spin while it lasts.
async fn pause_after_accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if !matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        tracing::error!(error = %e, "accepting a connection failed; pausing for a second");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
