//! The HTTP side (SPEC §8): `/metrics`, `/healthz`, `/readyz`. Webhooks come in a later change.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::daemon::Daemon;

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(daemon)
}

async fn metrics(State(d): State<Arc<Daemon>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        d.gate.metrics.encode(),
    )
}

async fn readyz(State(d): State<Arc<Daemon>>) -> impl IntoResponse {
    if d.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first sync of every repository\n",
        )
    }
}

/// Binds the configured `listen` address and serves in the background until `shutdown`. Returns
/// once bound, so that a port conflict is an error at start-up, not a log line later.
pub async fn serve(daemon: Arc<Daemon>, shutdown: CancellationToken) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(daemon.gate.config.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");
    let app = router(daemon);
    tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok(addr)
}
