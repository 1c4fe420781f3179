//! The HTTP server: the router on hyper's HTTP/1.1 server, with what
//! `axum::serve` leaves unset: a deadline for a request's headers, so that a
//! client that opens a connection and never sends a request, sends one a
//! byte at a time, or keeps a connection alive and idle, is cut off instead
//! of holding a connection and a file descriptor for ever. Graceful: on
//! `stop`, no new connection is taken and the open ones finish what they are
//! doing.
//!
//! HTTP/1.1 only. hyper's deadline for headers is HTTP/1's: an HTTP/2
//! connection has none, and the version detection of hyper-util's `auto`
//! server waits for a first byte without any deadline, so 1,000 connections
//! that send nothing stayed open there for good (`tests/it/abuse.rs`). The
//! API's clients (curl, browsers' `EventSource`, a reverse proxy) speak
//! HTTP/1.1.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1::Builder;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tracing::warn;

use crate::shutdown::CancellationToken;

/// How long a client has to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `stop`, then waits for the open
/// connections to finish (the caller bounds that wait).
pub async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) {
    let graceful = GracefulShutdown::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait, and go on.
                    warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let mut builder = Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    graceful.shutdown().await;
}
