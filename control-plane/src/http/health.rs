//! `/metrics` (Prometheus/OpenMetrics text; each scrape PINGs Redis for `estuary_redis_up`), `/healthz` (the process runs) and `/readyz` (Redis
//! answers). No token, no device data.
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;
use crate::ra::store::Store;

/// What the health paths read.
struct Health {
    metrics: Arc<Metrics>,
    store: Store,
}

/// The router of `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: Arc<Metrics>, store: Store) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Arc::new(Health { metrics, store }))
}

/// How long a scrape waits for Redis's PING before `estuary_redis_up` reads 0.
const REDIS_PING_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

async fn metrics_text(State(h): State<Arc<Health>>) -> Response {
    let up = matches!(
        tokio::time::timeout(REDIS_PING_DEADLINE, h.store.ping()).await,
        Ok(Ok(()))
    );
    h.metrics.redis_up.set(i64::from(up));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.render(),
    )
        .into_response()
}

async fn ready(State(h): State<Arc<Health>>) -> Response {
    let (status, mut body) = match h.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready".to_string()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    if !body.ends_with('\n') {
        body.push('\n');
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}
