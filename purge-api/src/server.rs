//! The purge API service: shared state, the router and `run` for binaries and tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{AuthFailures, require_token};
use crate::config::PurgeApiConfig;
use crate::error::PurgeApiError;
use crate::log::PurgeLog;
use crate::metrics::Metrics;
use crate::pops::{PopRegistry, PopState};
use crate::ratelimit::RateLimiter;
use crate::routes;
use crate::wire::{PopInfo, PopProgress, PurgeStatus};

/// The purge service over one data dir. Cheap to clone: clones share the log and registry.
#[derive(Clone)]
pub struct PurgeApi {
    inner: Arc<Shared>,
}

struct Shared {
    config: PurgeApiConfig,
    db: sled::Db,
    log: PurgeLog,
    pops: PopRegistry,
    limiter: RateLimiter,
    auth_failures: AuthFailures,
    metrics: Metrics,
    /// Set on shutdown so open long-polls return at once instead of holding up the drain.
    stopping: watch::Sender<bool>,
}

impl std::fmt::Debug for PurgeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgeApi")
            .field("config", &self.inner.config)
            .field("log", &self.inner.log)
            .field("pops", &self.inner.pops)
            .finish_non_exhaustive()
    }
}

impl PurgeApi {
    /// Validates `config` and opens (or creates) the log in `config.log_dir()`. Blocking.
    pub fn open(config: PurgeApiConfig) -> Result<PurgeApi, PurgeApiError> {
        config.validate()?;
        let path = config.log_dir();
        let db = sled::open(&path).map_err(|source| PurgeApiError::Open { path, source })?;
        let log = PurgeLog::open(&db)?;
        let pops = PopRegistry::open(&db, config.pop_timeout())?;
        let limiter = RateLimiter::new(config.rate_per_second, config.burst);
        Ok(PurgeApi {
            inner: Arc::new(Shared {
                config,
                db,
                log,
                pops,
                limiter,
                auth_failures: AuthFailures::default(),
                metrics: Metrics::default(),
                stopping: watch::Sender::new(false),
            }),
        })
    }

    pub fn config(&self) -> &PurgeApiConfig {
        &self.inner.config
    }

    pub fn log(&self) -> &PurgeLog {
        &self.inner.log
    }

    pub fn pops(&self) -> &PopRegistry {
        &self.inner.pops
    }

    pub(crate) fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    pub(crate) fn auth_failures(&self) -> &AuthFailures {
        &self.inner.auth_failures
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Resolves once [`PurgeApi::shutdown`] was called.
    pub(crate) async fn stopped(&self) {
        let mut stopping = self.inner.stopping.subscribe();
        // The sender lives as long as `self`, so this only returns once it is set.
        let _ = stopping.wait_for(|stopping| *stopping).await;
    }

    /// Ends open long-polls (they answer with what they have); new ones return at once.
    pub fn shutdown(&self) {
        self.inner.stopping.send_replace(true);
    }

    /// Writes registry updates (heartbeats, progress) to disk; purges are flushed as accepted.
    pub fn flush(&self) -> Result<(), PurgeApiError> {
        self.inner.db.flush()?;
        Ok(())
    }

    /// `GET /v1/purge/{id}`: the purge and, per registered PoP, whether and when it applied.
    pub fn status(&self, id: &str, now_ms: u64) -> Result<PurgeStatus, PurgeApiError> {
        let record = self
            .log()
            .get(id)?
            .ok_or_else(|| PurgeApiError::NotFound(format!("no purge with id {id:?}")))?;
        let mut pops = Vec::new();
        for pop in self.pops().list() {
            let applied = pop.last_applied_seq >= record.seq;
            let applied_at = if applied {
                self.pops().applied_at(&pop.name, record.seq)?
            } else {
                None
            };
            let live = self.pops().is_live(&pop, now_ms);
            pops.push(PopProgress {
                name: pop.name,
                applied,
                applied_at,
                live,
            });
        }
        // A dead PoP does not hold up completion: it catches up before it serves again.
        let complete = pops.iter().all(|p| p.applied || !p.live);
        Ok(PurgeStatus {
            id: record.id,
            seq: record.seq,
            accepted_at: record.accepted_at,
            request: record.request,
            pops,
            complete,
        })
    }

    /// `GET /v1/pops`: every registered PoP with its liveness and lag at `now_ms`.
    pub fn pop_info(&self, now_ms: u64) -> Result<Vec<PopInfo>, PurgeApiError> {
        self.pops()
            .list()
            .into_iter()
            .map(|pop| self.info_of(pop, now_ms))
            .collect()
    }

    pub(crate) fn info_of(&self, pop: PopState, now_ms: u64) -> Result<PopInfo, PurgeApiError> {
        let behind = self.log().last_seq().saturating_sub(pop.last_applied_seq);
        let oldest_missing = match behind {
            0 => None,
            _ => self.log().get_seq(pop.last_applied_seq + 1)?,
        };
        let lag_ms = oldest_missing.map_or(0, |r| now_ms.saturating_sub(r.accepted_at));
        Ok(PopInfo {
            live: self.pops().is_live(&pop, now_ms),
            name: pop.name,
            url: pop.url,
            admin_url: pop.admin_url,
            last_applied_seq: pop.last_applied_seq,
            last_seen_ms: pop.last_seen_ms,
            lag_seconds: Duration::from_millis(lag_ms).as_secs_f64(),
            behind,
        })
    }
}

/// The service: `/v1/*` behind the bearer token, `/healthz` and `/metrics` open.
pub fn router(api: PurgeApi) -> Router {
    let v1 = Router::new()
        .route("/v1/purge", post(routes::purge))
        .route("/v1/purge/{id}", get(routes::status))
        .route("/v1/purges", get(routes::poll))
        .route("/v1/pops", get(routes::pops))
        .route("/v1/pops/register", post(routes::register))
        .route("/v1/pops/{name}", axum::routing::delete(routes::remove))
        .route("/v1/pops/{name}/applied", post(routes::applied))
        .route_layer(from_fn_with_state(api.clone(), require_token));
    Router::new()
        .merge(v1)
        .route("/healthz", get(routes::healthz))
        .route("/metrics", get(routes::metrics))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(from_fn_with_state(api.clone(), routes::trace))
        .layer(DefaultBodyLimit::max(api.config().max_body_bytes))
        .with_state(api)
}

/// How long shutdown waits for requests in flight (long-polls are woken at once).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `config` on `listener` until `shutdown` completes, then ends long-polls, drains
/// open requests and flushes the registry.
pub async fn run(
    listener: TcpListener,
    config: PurgeApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), PurgeApiError> {
    let api = tokio::task::spawn_blocking(move || PurgeApi::open(config))
        .await
        .map_err(|err| PurgeApiError::Task(err.to_string()))??;
    let addr = listener.local_addr().map_err(PurgeApiError::Serve)?;
    tracing::info!(
        %addr,
        log_dir = %api.config().log_dir().display(),
        last_seq = api.log().last_seq(),
        pops = api.pops().list().len(),
        "purge API serving"
    );
    let stopper = api.clone();
    let signal = async move {
        shutdown.await;
        stopper.shutdown();
    };
    let tls = match &api.config().tls {
        Some(tls) => {
            let bad =
                |e: edgecache_tls::TlsError| PurgeApiError::config("purge_api.tls", e.to_string());
            let store = edgecache_tls::CertStore::open(tls).map_err(bad)?;
            Some(edgecache_tls::server_config(store).map_err(bad)?)
        }
        None => None,
    };
    let options = edgecache_tls::Serve::plain()
        .with_tls(tls)
        .with_grace(SHUTDOWN_GRACE);
    let served = edgecache_tls::serve(listener, router(api.clone()), options, signal)
        .await
        .map_err(PurgeApiError::Serve);
    let flushed = api.flush();
    tracing::info!(%addr, last_seq = api.log().last_seq(), "purge API stopped");
    served.and(flushed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RegisterPop;
    use crate::{PurgeRequest, unix_ms};

    fn api(dir: &tempfile::TempDir) -> PurgeApi {
        PurgeApi::open(PurgeApiConfig::new("t", dir.path())).unwrap()
    }

    fn pop(name: &str) -> RegisterPop {
        RegisterPop {
            name: name.into(),
            url: format!("http://{name}.test"),
            admin_url: None,
            applied_seq: None,
        }
    }

    fn purge_all() -> PurgeRequest {
        PurgeRequest {
            all: true,
            ..Default::default()
        }
    }

    #[test]
    fn open_refuses_a_bad_config_and_creates_the_log_dir() {
        let dir = tempfile::tempdir().unwrap();
        let err = PurgeApi::open(PurgeApiConfig::new("", dir.path())).unwrap_err();
        assert_eq!(err.to_string(), "purge_api.token: must not be empty");
        let api = api(&dir);
        assert!(dir.path().join("purge-log").is_dir());
        assert_eq!(api.log().last_seq(), 0);
    }

    #[test]
    fn completion_waits_for_live_pops_only() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&dir);
        let now = unix_ms();
        api.pops().register(pop("live"), now).unwrap();
        // Last heard from 20 s ago, past the 15 s timeout.
        api.pops().register(pop("dead"), now - 20_000).unwrap();
        let record = api.log().append(purge_all()).unwrap();
        let before = api.status(&record.id, now).unwrap();
        assert!(!before.complete);
        let names: Vec<_> = before.pops.iter().map(|p| (&*p.name, p.live)).collect();
        assert_eq!(names, [("dead", false), ("live", true)]);
        api.pops()
            .report_applied("live", record.seq, now + 5)
            .unwrap();
        let after = api.status(&record.id, now + 10).unwrap();
        assert!(after.complete);
        let live = after.pops.iter().find(|p| p.name == "live").unwrap();
        assert_eq!((live.applied, live.applied_at), (true, Some(now + 5)));
        let dead = after.pops.iter().find(|p| p.name == "dead").unwrap();
        assert_eq!((dead.applied, dead.applied_at), (false, None));
    }

    #[test]
    fn unknown_purges_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let err = api(&dir).status("p-9-00", 0).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::NOT_FOUND);
        assert_eq!(err.to_string(), "no purge with id \"p-9-00\"");
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_purge_not_applied() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&dir);
        let first = api.log().append(purge_all()).unwrap();
        api.log().append(purge_all()).unwrap();
        let now = first.accepted_at + 2_500;
        api.pops().register(pop("us"), now).unwrap();
        let info = api.pop_info(now).unwrap();
        assert_eq!(info.len(), 1);
        assert_eq!((info[0].behind, info[0].lag_seconds), (2, 2.5));
        api.pops().report_applied("us", 2, now).unwrap();
        let info = api.pop_info(now + 1_000).unwrap();
        assert_eq!((info[0].behind, info[0].lag_seconds), (0, 0.0));
        assert_eq!(info[0].last_applied_seq, 2);
        assert!(info[0].live);
    }

    #[tokio::test]
    async fn stopped_resolves_after_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let api = api(&dir);
        let waiter = tokio::spawn({
            let api = api.clone();
            async move { api.stopped().await }
        });
        api.shutdown();
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
