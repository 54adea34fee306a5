//! One handler per endpoint of the purge API, plus the per-request span and error log.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::Instrument;

use crate::auth::Caller;
use crate::error::{ErrorNote, PurgeApiError};
use crate::server::PurgeApi;
use crate::validate::validate_purge;
use crate::wire::{Accepted, AppliedReport, PollResponse, PopInfo, PurgeStatus, RegisterPop};
use crate::{PurgeRequest, unix_ms};

/// Records per poll when the edge names no `limit`, and the most it may ask for.
const DEFAULT_POLL_LIMIT: usize = 100;
const MAX_POLL_LIMIT: usize = 1000;

/// `POST /v1/purge`: rate limit, parse, validate, append durably, then `202`.
pub(crate) async fn purge(
    State(api): State<PurgeApi>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<PurgeRequest>, JsonRejection>,
) -> Result<Response, PurgeApiError> {
    api.limiter()
        .check(&caller.0, Instant::now())
        .map_err(|retry_after| PurgeApiError::RateLimited { retry_after })?;
    let Json(request) =
        body.map_err(|r| PurgeApiError::from_json(r, api.config().max_body_bytes))?;
    validate_purge(&request, api.config().max_entries)?;
    let writer = api.clone();
    let record = tokio::task::spawn_blocking(move || writer.log().append(request))
        .await
        .map_err(|err| PurgeApiError::Task(err.to_string()))??;
    api.metrics().purge_accepted();
    let r = &record.request;
    tracing::info!(
        id = %record.id,
        seq = record.seq,
        urls = r.urls.len(),
        prefixes = r.prefixes.len(),
        tags = r.tags.len(),
        all = r.all,
        soft = r.soft,
        "purge accepted"
    );
    let location = format!("/v1/purge/{}", record.id);
    let accepted = Accepted {
        id: record.id,
        seq: record.seq,
    };
    let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /v1/purge/{id}`.
pub(crate) async fn status(
    State(api): State<PurgeApi>,
    Path(id): Path<String>,
) -> Result<Json<PurgeStatus>, PurgeApiError> {
    api.status(&id, unix_ms()).map(Json)
}

/// The query of `GET /v1/purges`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PollQuery {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
    /// Seconds to wait for a purge past `since`; capped at `poll_max_wait_seconds`.
    #[serde(default)]
    wait: u64,
    /// The polling PoP: the poll then counts as its heartbeat.
    pop: Option<String>,
}

/// `GET /v1/purges?since=N&limit=M&wait=S&pop=NAME`: the pull path, and with `wait` the push
/// path too — the answer goes out as soon as a purge past `since` is on disk.
pub(crate) async fn poll(
    State(api): State<PurgeApi>,
    query: Result<Query<PollQuery>, QueryRejection>,
) -> Result<Json<PollResponse>, PurgeApiError> {
    let Query(query) = query.map_err(PurgeApiError::from_query)?;
    let limit = query
        .limit
        .unwrap_or(DEFAULT_POLL_LIMIT)
        .clamp(1, MAX_POLL_LIMIT);
    let wait = Duration::from_secs(query.wait).min(api.config().poll_max_wait());
    let heartbeat = || {
        if let Some(pop) = &query.pop
            && !api.pops().touch(pop, unix_ms())
        {
            tracing::debug!(pop = %pop, "poll from an unregistered PoP");
        }
    };
    heartbeat();
    if !wait.is_zero() && api.log().last_seq() <= query.since {
        let _waiting = api.metrics().poll_waiting();
        tokio::select! {
            _ = api.log().wait_past(query.since, wait) => {}
            () = api.stopped() => {}
        }
        heartbeat();
    }
    let purges = api.log().since(query.since, limit)?;
    // Read after the records so `last_seq` is never below the last one returned.
    let last_seq = api.log().last_seq();
    Ok(Json(PollResponse { purges, last_seq }))
}

/// `GET /v1/pops`.
pub(crate) async fn pops(State(api): State<PurgeApi>) -> Result<Json<Vec<PopInfo>>, PurgeApiError> {
    api.pop_info(unix_ms()).map(Json)
}

/// `POST /v1/pops/register`.
pub(crate) async fn register(
    State(api): State<PurgeApi>,
    body: Result<Json<RegisterPop>, JsonRejection>,
) -> Result<Json<PopInfo>, PurgeApiError> {
    let Json(pop) = body.map_err(|r| PurgeApiError::from_json(r, api.config().max_body_bytes))?;
    if let Some(seq) = pop.applied_seq {
        check_seq(&api, "applied_seq", seq)?;
    }
    let state = api.pops().register(pop, unix_ms())?;
    tracing::info!(
        pop = %state.name,
        url = %state.url,
        applied_seq = state.last_applied_seq,
        "pop registered"
    );
    api.info_of(state, unix_ms()).map(Json)
}

/// `POST /v1/pops/{name}/applied`.
pub(crate) async fn applied(
    State(api): State<PurgeApi>,
    Path(name): Path<String>,
    body: Result<Json<AppliedReport>, JsonRejection>,
) -> Result<Json<PopInfo>, PurgeApiError> {
    let Json(report) =
        body.map_err(|r| PurgeApiError::from_json(r, api.config().max_body_bytes))?;
    check_seq(&api, "seq", report.seq)?;
    let state = api.pops().report_applied(&name, report.seq, unix_ms())?;
    tracing::debug!(pop = %name, seq = report.seq, "pop applied");
    api.info_of(state, unix_ms()).map(Json)
}

/// A PoP cannot have applied what the log does not hold; if it claims to, the log was
/// reset under it and it must start again from 0.
fn check_seq(api: &PurgeApi, field: &str, seq: u64) -> Result<(), PurgeApiError> {
    let last = api.log().last_seq();
    if seq > last {
        return Err(PurgeApiError::bad_request(format!(
            "{field}: {seq} is past the log's last seq {last} (was the purge log reset?)"
        )));
    }
    Ok(())
}

/// `DELETE /v1/pops/{name}`: forget a decommissioned PoP so it no longer shows as dead.
pub(crate) async fn remove(
    State(api): State<PurgeApi>,
    Path(name): Path<String>,
) -> Result<StatusCode, PurgeApiError> {
    if api.pops().remove(&name)? {
        tracing::info!(pop = %name, "pop removed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(PurgeApiError::NotFound(format!(
            "no PoP named {name:?} is registered"
        )))
    }
}

pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

pub(crate) async fn metrics(State(api): State<PurgeApi>) -> Result<Response, PurgeApiError> {
    let text = api
        .metrics()
        .render(api.log().last_seq(), &api.pop_info(unix_ms())?);
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], text).into_response())
}

pub(crate) async fn not_found(method: Method, uri: Uri) -> PurgeApiError {
    PurgeApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

pub(crate) async fn method_not_allowed(method: Method, uri: Uri) -> PurgeApiError {
    PurgeApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// Middleware: one span per request, and the one log line (and count) per error.
pub(crate) async fn trace(State(api): State<PurgeApi>, request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path()
    );
    async move {
        let response = next.run(request).await;
        let status = response.status().as_u16();
        match response.extensions().get::<ErrorNote>() {
            Some(note) => {
                api.metrics().error(note.reason);
                if response.status().is_server_error() {
                    tracing::error!(status, reason = note.reason, error = %note.message, "request failed");
                } else {
                    tracing::info!(status, reason = note.reason, error = %note.message, "request refused");
                }
            }
            None => tracing::debug!(status, "response"),
        }
        response
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PurgeApiConfig;

    fn api(dir: &tempfile::TempDir, burst: u32) -> PurgeApi {
        let mut config = PurgeApiConfig::new("t", dir.path());
        config.burst = burst;
        config.rate_per_second = 0.01;
        PurgeApi::open(config).unwrap()
    }

    fn tags(t: &str) -> Result<Json<PurgeRequest>, JsonRejection> {
        Ok(Json(PurgeRequest {
            tags: vec![t.into()],
            ..Default::default()
        }))
    }

    fn caller() -> Extension<Caller> {
        Extension(Caller("t".into()))
    }

    fn query(since: u64, wait: u64, pop: Option<&str>) -> Result<Query<PollQuery>, QueryRejection> {
        Ok(Query(PollQuery {
            since,
            limit: None,
            wait,
            pop: pop.map(str::to_owned),
        }))
    }

    #[tokio::test]
    async fn an_accepted_purge_is_logged_with_its_location() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&dir, 5);
        let response = purge(State(api.clone()), caller(), tags("a"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let record = api.log().get_seq(1).unwrap().unwrap();
        assert_eq!(
            response.headers()[header::LOCATION],
            format!("/v1/purge/{}", record.id).as_str()
        );
    }

    #[tokio::test]
    async fn the_rate_limit_applies_before_anything_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&dir, 1);
        purge(State(api.clone()), caller(), tags("a"))
            .await
            .unwrap();
        let err = purge(State(api.clone()), caller(), tags("b"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(api.log().last_seq(), 1);
    }

    #[tokio::test]
    async fn an_invalid_purge_is_refused_and_not_logged() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&dir, 5);
        let err = purge(State(api.clone()), caller(), tags("two words"))
            .await
            .unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(api.log().last_seq(), 0);
    }

    #[tokio::test]
    async fn a_poll_is_a_heartbeat_and_ends_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&dir, 5);
        let registration = RegisterPop {
            name: "us".into(),
            url: "http://us.test".into(),
            admin_url: None,
            applied_seq: None,
        };
        api.pops().register(registration, 0).unwrap();
        api.shutdown();
        let Json(answer) = poll(State(api.clone()), query(0, 10, Some("us")))
            .await
            .unwrap();
        assert_eq!(
            answer,
            PollResponse {
                purges: vec![],
                last_seq: 0
            }
        );
        assert!(api.pops().get("us").unwrap().last_seen_ms > 0);
    }

    #[tokio::test]
    async fn progress_past_the_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&dir, 5);
        let err = applied(
            State(api.clone()),
            Path("us".into()),
            Ok(Json(AppliedReport { seq: 3 })),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "seq: 3 is past the log's last seq 0 (was the purge log reset?)"
        );
    }

    #[tokio::test]
    async fn unknown_routes_and_methods_name_themselves() {
        let err = not_found(Method::GET, Uri::from_static("/v2/x")).await;
        assert_eq!(err.to_string(), "no route for GET /v2/x");
        let err = method_not_allowed(Method::PUT, Uri::from_static("/v1/purge")).await;
        assert_eq!(err.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
}
