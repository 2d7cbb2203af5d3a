//! # geodb-server — the `geodb` binary
//!
//! The only crate with sockets, threads and timers. It opens a node's
//! storage, transactions and SQL ([`node`]), serves the HTTP API
//! ([`http`]), keeps interactive sessions ([`session`]), runs statements
//! off the async path ([`exec`]), and reports logs, traces and metrics
//! ([`telemetry`]), over TLS when given certificates ([`tls`]). [`serve`]
//! ties them together for `geodb dev` and `geodb start`.

pub mod auth;
pub mod backup;
pub mod cluster;
pub mod config;
pub mod dev;
pub mod exec;
pub mod gc;
pub mod http;
pub mod node;
pub mod pg;
pub mod rehomer;
pub mod replication;
pub mod session;
pub mod telemetry;
pub mod tls;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

use crate::node::Node;

/// How often idle sessions are looked for: a tenth of the timeout, so a
/// session lives at most 10% past it, and at least every second.
fn reap_interval(idle_timeout: Duration) -> Duration {
    (idle_timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Binds the HTTP address (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Serves the API on `listener` (and the PostgreSQL wire protocol on
/// `pg`, if given) until `shutdown` resolves, then stops taking requests,
/// lets running ones finish, and returns.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    pg: Option<TcpListener>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let reaper = {
        let node = node.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(reap_interval(node.sessions.idle_timeout()));
            loop {
                every.tick().await;
                let reaped = node.sessions.reap(Instant::now());
                if reaped > 0 {
                    tracing::info!(reaped, "rolled back and removed idle sessions");
                    metrics::gauge!(telemetry::names::SESSIONS).set(node.sessions.len() as f64);
                }
            }
        })
    };
    let follower = tokio::spawn(rehomer::follow_traffic(node.clone()));
    let collector = tokio::spawn(gc::collect(node.clone()));
    let postgres = pg.map(|listener| tokio::spawn(pg::serve(node.clone(), listener)));
    let app = http::router(node.clone());
    let stopping = node.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing running requests");
        stopping.stop_serving();
    };
    let result = match &node.tls {
        None => serve_http(listener, app, shutdown).await,
        Some(tls) => {
            let listener = tls::TlsListener::new(listener, tls.http_acceptor(), tls::Listener::Http)
                .map_err(|e| format!("cannot listen for HTTPS: {e}"))?;
            serve_http(listener, app, shutdown).await
        }
    };
    reaper.abort();
    follower.abort();
    collector.abort();
    if let Some(postgres) = postgres {
        postgres.abort();
    }
    result
}

/// Serves `app` on `listener` (TCP, or TLS over it) until `shutdown`.
async fn serve_http<L>(
    listener: L,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
    for<'a> http::auth::Peer: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    // Each request learns its connection's address and client certificate
    // (`http::auth`).
    let app = app.into_make_service_with_connect_info::<http::auth::Peer>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(|e| format!("server error: {e}"))
}

/// The scheme of the node's HTTP API: `https` with certificates.
pub fn http_scheme(node: &Node) -> &'static str {
    if node.tls.is_some() { "https" } else { "http" }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
