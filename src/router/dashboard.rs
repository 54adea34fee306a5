//! The live dashboard: `GET /dashboard` (one self-contained HTML page) and `GET
//! /v1/dashboard` (its JSON), built from samples of every PoP's admin `/stats`, the
//! router's health probes and, when configured, the purge API's `GET /v1/pops`.

pub mod sampler;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use edgecache_purge_api::{PopInfo as PurgePop, PurgeClient};
use futures_util::future::join_all;
use serde::Serialize;
use tokio::time::MissedTickBehavior;

use super::RouterError;
use super::config::{DashboardConfig, RouterConfig};
use super::health::HealthView;
use super::select::Endpoint;
use sampler::{History, PopStats, Rates, read_purge_pops, read_stats};

/// The page: plain HTML, CSS and JS, no external assets.
const PAGE: &str = include_str!("../../assets/dashboard.html");

/// One PoP as the dashboard knows it.
#[derive(Debug)]
struct PopMeta {
    name: String,
    url: String,
    admin_url: Option<String>,
    lat: f64,
    lon: f64,
}

/// What the last reads said about one PoP.
#[derive(Debug, Default)]
struct PopState {
    stats: Option<PopStats>,
    /// Why the last read failed; `None` after a good one.
    error: Option<String>,
    read_at: Option<SystemTime>,
    history: History,
}

#[derive(Debug, Default)]
struct PurgeState {
    pops: Vec<PurgePop>,
    error: Option<String>,
    read_at: Option<SystemTime>,
}

/// The dashboard's state, shared by the sampling task and the HTTP handlers.
#[derive(Debug)]
pub struct Dashboard {
    pops: Vec<PopMeta>,
    health: HealthView,
    interval: Duration,
    timeout: Duration,
    http: reqwest::Client,
    purge: Option<PurgeClient>,
    state: Mutex<(Vec<PopState>, PurgeState)>,
}

/// The body of `GET /v1/dashboard`.
#[derive(Debug, Serialize)]
pub struct DashboardAnswer {
    pub generated_at_ms: u64,
    pub interval_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purge_api: Option<PurgeApiRow>,
    pub pops: Vec<PopRow>,
}

/// The purge API as last read.
#[derive(Debug, Serialize)]
pub struct PurgeApiRow {
    pub url: String,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The newest seq in the purge log, as far as the PoPs' progress tells.
    pub last_seq: Option<u64>,
}

/// One row of the table.
#[derive(Debug, Serialize)]
pub struct PopRow {
    pub name: String,
    pub url: String,
    pub admin_url: Option<String>,
    pub lat: f64,
    pub lon: f64,
    /// `up`, `down` (the router's health probes fail) or `no-stats` (healthy, but its
    /// admin `/stats` cannot be read or no admin URL is configured).
    pub status: &'static str,
    pub healthy: bool,
    /// The last figures read; kept while the PoP cannot be read.
    pub stats: Option<PopStats>,
    pub stats_error: Option<String>,
    /// How long ago `stats` were read.
    pub stats_age_ms: Option<u64>,
    /// `None` until two reads in a row succeeded.
    pub rates: Option<Rates>,
    /// This PoP's entry in the purge API's `GET /v1/pops`.
    pub purge: Option<PurgePop>,
}

impl Dashboard {
    /// The dashboard for a validated `config`, reading health from `health`.
    pub fn new(config: &RouterConfig, health: HealthView) -> Result<Dashboard, RouterError> {
        let settings: &DashboardConfig = &config.dashboard;
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout())
            .timeout(settings.timeout())
            .user_agent(concat!("edgecache-router/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(RouterError::Client)?;
        let purge = match (&settings.purge_api, &settings.purge_token) {
            (Some(api), Some(token)) => Some(
                PurgeClient::with_http(http.clone(), api, token).map_err(|e| {
                    RouterError::config("router.dashboard.purge_api", e.to_string())
                })?,
            ),
            _ => None,
        };
        let mut pops = Vec::with_capacity(config.pops.len());
        for (i, p) in config.pops.iter().enumerate() {
            let admin_url = p
                .admin_url
                .as_deref()
                .map(|a| Endpoint::parse(&format!("router.pops[{i}].admin_url"), a))
                .transpose()?
                .map(|e| e.url);
            pops.push(PopMeta {
                name: p.name.clone(),
                url: Endpoint::parse(&format!("router.pops[{i}].url"), &p.url)?.url,
                admin_url,
                lat: p.lat,
                lon: p.lon,
            });
        }
        let states = pops.iter().map(|_| PopState::default()).collect();
        Ok(Dashboard {
            pops,
            health,
            interval: settings.interval(),
            timeout: settings.timeout(),
            http,
            purge,
            state: Mutex::new((states, PurgeState::default())),
        })
    }

    /// Reads every PoP and the purge API once per interval, until the task is dropped.
    pub async fn sample_forever(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.sample_once().await;
        }
    }

    /// One round of reads, all at once; each is bounded by the timeout.
    pub async fn sample_once(&self) {
        let reads = self.pops.iter().map(|pop| async move {
            match &pop.admin_url {
                Some(admin) => Some(read_stats(&self.http, admin, self.timeout).await),
                None => None,
            }
        });
        let purge = async {
            match &self.purge {
                Some(client) => Some(read_purge_pops(client, self.timeout).await),
                None => None,
            }
        };
        let (results, purge) = tokio::join!(join_all(reads), purge);
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (states, purge_state) = &mut *guard;
        for ((pop, state), result) in self.pops.iter().zip(states.iter_mut()).zip(results) {
            match result {
                None => {}
                Some(Ok(stats)) => {
                    if state.error.is_some() {
                        tracing::info!(pop = %pop.name, "PoP stats readable again");
                    }
                    state.history.record(now, &stats);
                    state.stats = Some(stats);
                    state.error = None;
                    state.read_at = Some(wall);
                }
                Some(Err(e)) => {
                    if state.error.is_none() {
                        tracing::warn!(pop = %pop.name, error = %e, "cannot read PoP stats");
                    }
                    state.history.clear();
                    state.error = Some(e.to_string());
                }
            }
        }
        match purge {
            None => {}
            Some(Ok(pops)) => {
                if purge_state.error.is_some() {
                    tracing::info!("purge API readable again");
                }
                purge_state.pops = pops;
                purge_state.error = None;
                purge_state.read_at = Some(wall);
            }
            Some(Err(e)) => {
                if purge_state.error.is_none() {
                    tracing::warn!(error = %e, "cannot read the purge API's PoPs");
                }
                purge_state.error = Some(e.to_string());
            }
        }
    }

    /// The current figures.
    pub fn answer(&self) -> DashboardAnswer {
        let now = SystemTime::now();
        let health = self.health.snapshot();
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (states, purge_state) = &*guard;
        let rows = self
            .pops
            .iter()
            .zip(states)
            .enumerate()
            .map(|(i, (pop, state))| {
                let healthy = health.get(i).copied().unwrap_or(true);
                let readable =
                    pop.admin_url.is_some() && state.error.is_none() && state.stats.is_some();
                let status = match (healthy, readable) {
                    (false, _) => "down",
                    (true, true) => "up",
                    (true, false) => "no-stats",
                };
                PopRow {
                    name: pop.name.clone(),
                    url: pop.url.clone(),
                    admin_url: pop.admin_url.clone(),
                    lat: pop.lat,
                    lon: pop.lon,
                    status,
                    healthy,
                    stats: state.stats.clone(),
                    stats_error: match &pop.admin_url {
                        None => Some("no admin URL configured".to_owned()),
                        Some(_) => state.error.clone(),
                    },
                    stats_age_ms: state
                        .read_at
                        .map(|t| millis(now.duration_since(t).unwrap_or_default())),
                    rates: state.history.rates(),
                    purge: purge_state
                        .pops
                        .iter()
                        .find(|p| p.name == pop.name)
                        .cloned(),
                }
            })
            .collect();
        let purge_api = self.purge.as_ref().map(|client| PurgeApiRow {
            url: client.base_url().trim_end_matches('/').to_owned(),
            reachable: purge_state.read_at.is_some() && purge_state.error.is_none(),
            error: purge_state.error.clone(),
            last_seq: purge_state
                .pops
                .iter()
                .map(|p| p.last_applied_seq + p.behind)
                .max(),
        });
        DashboardAnswer {
            generated_at_ms: millis(now.duration_since(UNIX_EPOCH).unwrap_or_default()),
            interval_ms: millis(self.interval),
            purge_api,
            pops: rows,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `/dashboard` and `/v1/dashboard` over `dashboard`.
pub fn routes(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/dashboard", get(page))
        .route("/v1/dashboard", get(answer))
        .with_state(dashboard)
}

async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn answer(State(dashboard): State<Arc<Dashboard>>) -> Response {
    let mut response = Json(dashboard.answer()).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
