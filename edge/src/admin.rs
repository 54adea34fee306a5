//! The admin listener: health, readiness, JSON stats, Prometheus metrics, and purges for
//! this node alone.

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use edgecache_purge_api::{PurgeRequest, bearer_token, token_matches, validate_purge};
use serde_json::json;
use tracing::warn;

use crate::node::Edge;

/// Most entries one admin purge may name, as on the purge API.
const MAX_PURGE_ENTRIES: usize = 1000;

pub fn router(edge: Arc<Edge>) -> Router {
    let mutations = Router::new()
        .route("/purge", post(purge))
        .route("/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(
            edge.clone(),
            require_admin_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .merge(mutations)
        .with_state(edge)
}

/// With `edge.admin_token` set, a mutation needs `Authorization: Bearer TOKEN`, compared in
/// constant time; reads (health, stats, metrics) stay open.
async fn require_admin_token(
    State(edge): State<Arc<Edge>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &edge.admin_token else {
        return next.run(request).await;
    };
    match bearer_token(request.headers()) {
        Ok(given) if token_matches(given.as_bytes(), expected.0.as_bytes()) => {
            next.run(request).await
        }
        Ok(_) => {
            warn!(path = %request.uri().path(), "admin request refused: wrong bearer token");
            unauthorized("invalid bearer token")
        }
        Err(e) => {
            warn!(path = %request.uri().path(), "admin request refused: no bearer token");
            unauthorized(&e.to_string())
        }
    }
}

fn unauthorized(message: &str) -> Response {
    let mut resp = error(StatusCode::UNAUTHORIZED, message);
    resp.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    resp
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(edge): State<Arc<Edge>>) -> Response {
    if edge.caught_up() {
        "ready\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: applying purges missed while down\n",
        )
            .into_response()
    }
}

async fn stats(State(edge): State<Arc<Edge>>) -> impl IntoResponse {
    let mut doc = serde_json::to_value(edge.metrics.stats(
        &edge.pop,
        &edge.memory,
        edge.disk.as_ref(),
    ))
    .unwrap_or_default();
    doc["purge"] = json!({
        "last_seq": edge.purges.last_seq(),
        "applied": edge.metrics.purges_applied(),
        "rules": edge.purges.rule_count(),
        "caught_up": edge.caught_up(),
    });
    Json(doc)
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

/// `POST /reload`: reads the config file again and applies it; an invalid one gets 422
/// with the bad key, and the running config stays.
async fn reload(State(edge): State<Arc<Edge>>) -> Response {
    match edge.reload().await {
        Ok(report) => Json(json!({
            "status": "reloaded",
            "restart_required": report.restart_required,
        }))
        .into_response(),
        Err(e) => {
            warn!(pop = %edge.pop, key = e.key().unwrap_or(""), error = %e, "config reload refused; the running config stays");
            let status = match e {
                crate::ReloadError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                crate::ReloadError::NoSource => StatusCode::CONFLICT,
            };
            (
                status,
                Json(json!({"error": e.to_string(), "key": e.key()})),
            )
                .into_response()
        }
    }
}

/// `POST /purge` with the purge API's body: applied to this node only, at once.
async fn purge(
    State(edge): State<Arc<Edge>>,
    body: Result<Json<PurgeRequest>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            warn!(error = %e.body_text(), "admin purge refused");
            return error(StatusCode::BAD_REQUEST, &e.body_text());
        }
    };
    if let Err(e) = validate_purge(&request, MAX_PURGE_ENTRIES) {
        warn!(error = %e, "admin purge refused");
        return error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    edge.apply_purge(&request, None, None);
    edge.sweep_soon();
    Json(json!({ "applied": true, "rules": edge.purges.rule_count() })).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
