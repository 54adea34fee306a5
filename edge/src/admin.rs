//! The admin listener: health, readiness, JSON stats and Prometheus metrics.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Json};
use axum::routing::get;

use crate::node::Edge;

pub fn router(edge: Arc<Edge>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .with_state(edge)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz() -> &'static str {
    "ready\n"
}

async fn stats(State(edge): State<Arc<Edge>>) -> impl IntoResponse {
    Json(
        edge.metrics
            .stats(&edge.pop, &edge.memory, edge.disk.as_ref()),
    )
}

async fn metrics(State(edge): State<Arc<Edge>>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        edge.metrics.render(&edge.memory),
    )
}
