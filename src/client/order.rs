//! Which PoPs to try, in order: the router's answer (fetched, cached, refreshed behind the
//! callers' backs), else the static list.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{debug, warn};

/// How long the router's last good answer is still used while the router fails. A router
/// that blips should not send every client to the static list, which knows nothing of health.
pub const STALE_ANSWER_FOR: Duration = Duration::from_secs(30);

/// `GET {router}/v1/route`: the client's location and the PoPs, nearest healthy first.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteAnswer {
    pub pops: Vec<RoutedPop>,
    /// The origin the router knows of. The client keeps its configured origin, which its
    /// operator chose; this is only shown.
    #[serde(default)]
    pub origin: Option<String>,
}

/// One PoP in a router answer.
#[derive(Debug, Clone, Deserialize)]
pub struct RoutedPop {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub distance_km: Option<f64>,
    #[serde(default = "yes")]
    pub healthy: bool,
}

fn yes() -> bool {
    true
}

impl RouteAnswer {
    /// The base URLs to try: the healthy PoPs in the router's order. Unhealthy ones are left
    /// out: the router probes them, and each would cost a connect attempt.
    pub fn ordered_pops(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.pops.len());
        for pop in self.pops.iter().filter(|p| p.healthy) {
            let url = normalize_base(&pop.url);
            if !out.contains(&url) {
                out.push(url);
            }
        }
        out
    }
}

/// A base URL without its trailing slashes, so `{base}{path}` has exactly one.
pub fn normalize_base(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// What a caller should do about the router right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Use these PoPs.
    Use(Vec<String>),
    /// Use these PoPs, and refresh the answer in the background (this caller won the slot).
    RefreshBehind(Vec<String>),
    /// Nothing was ever asked: ask the router now and wait for it.
    FetchNow,
}

/// The router's answers over time. Pure: every method takes `now`.
#[derive(Debug)]
pub struct RouteCache {
    refresh_every: Duration,
    static_pops: Vec<String>,
    /// The last good answer and when it arrived.
    good: Option<(Vec<String>, Instant)>,
    /// When the router was last asked, whatever it said.
    asked_at: Option<Instant>,
    refreshing: bool,
}

impl RouteCache {
    pub fn new(refresh_every: Duration, static_pops: Vec<String>) -> Self {
        Self {
            refresh_every,
            static_pops,
            good: None,
            asked_at: None,
            refreshing: false,
        }
    }

    pub fn plan(&mut self, now: Instant) -> Plan {
        let Some(asked_at) = self.asked_at else {
            return Plan::FetchNow;
        };
        let pops = self.current(now);
        if now >= asked_at + self.refresh_every && !self.refreshing {
            self.refreshing = true;
            Plan::RefreshBehind(pops)
        } else {
            Plan::Use(pops)
        }
    }

    /// The router's last good answer while it is recent enough, else the static list.
    pub fn current(&self, now: Instant) -> Vec<String> {
        match &self.good {
            Some((pops, at)) if now.saturating_duration_since(*at) <= STALE_ANSWER_FOR => {
                pops.clone()
            }
            _ => self.static_pops.clone(),
        }
    }

    pub fn record_answer(&mut self, pops: Vec<String>, now: Instant) {
        self.good = Some((pops, now));
        self.asked_at = Some(now);
        self.refreshing = false;
    }

    pub fn record_failure(&mut self, now: Instant) {
        self.asked_at = Some(now);
        self.refreshing = false;
    }
}

/// The PoP order for one client: a router (optional) and a static list.
#[derive(Debug)]
pub struct PopOrder {
    router: Option<String>,
    static_pops: Vec<String>,
    http: reqwest::Client,
    /// Bounds one router request, body included.
    fetch_timeout: Duration,
    cache: Mutex<RouteCache>,
    /// One router request at a time: concurrent first callers wait for the first answer.
    fetching: tokio::sync::Mutex<()>,
}

impl PopOrder {
    pub fn new(
        router: Option<String>,
        static_pops: Vec<String>,
        http: reqwest::Client,
        fetch_timeout: Duration,
        refresh_every: Duration,
    ) -> Self {
        let static_pops: Vec<String> = static_pops.iter().map(|p| normalize_base(p)).collect();
        Self {
            router: router.map(|r| normalize_base(&r)),
            cache: Mutex::new(RouteCache::new(refresh_every, static_pops.clone())),
            static_pops,
            http,
            fetch_timeout,
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The PoPs to try, nearest first. Never waits for the router except the first time.
    pub async fn pops(self: &Arc<Self>) -> Vec<String> {
        if self.router.is_none() {
            return self.static_pops.clone();
        }
        let plan = self.lock_cache().plan(Instant::now());
        match plan {
            Plan::Use(pops) => pops,
            Plan::RefreshBehind(pops) => {
                let me = self.clone();
                tokio::spawn(async move { me.refresh().await });
                pops
            }
            Plan::FetchNow => {
                let _one = self.fetching.lock().await;
                // Someone else may have asked while this caller waited.
                if self.lock_cache().plan(Instant::now()) == Plan::FetchNow {
                    self.ask_router().await;
                }
                self.lock_cache().current(Instant::now())
            }
        }
    }

    async fn refresh(&self) {
        let _one = self.fetching.lock().await;
        self.ask_router().await;
    }

    async fn ask_router(&self) {
        let Some(router) = &self.router else {
            return;
        };
        let result = fetch_route(&self.http, router, self.fetch_timeout).await;
        let now = Instant::now();
        let mut cache = self.lock_cache();
        match result {
            Ok(answer) => {
                let pops = answer.ordered_pops();
                debug!(router = %router, pops = ?pops, "router answered");
                cache.record_answer(pops, now);
            }
            Err(message) => {
                warn!(router = %router, error = %message, "router failed; using the last answer or the static PoP list");
                cache.record_failure(now);
            }
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, RouteCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One `GET {router}/v1/route`.
pub async fn fetch_route(
    http: &reqwest::Client,
    router: &str,
    timeout: Duration,
) -> Result<RouteAnswer, String> {
    let url = format!("{router}/v1/route");
    let response = http
        .get(&url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| super::attempt::describe(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{url}: status {status}"));
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| super::attempt::describe(&e))?;
    serde_json::from_slice(&body).map_err(|e| format!("{url}: not a route answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> RouteAnswer {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn healthy_pops_keep_the_router_order() {
        let a = answer(
            r#"{"client":{"ip":"127.2.0.9","country":"IE","lat":53.3,"lon":-6.2},
                "pops":[{"name":"eu-west","url":"http://127.0.2.1:8080/","distance_km":3.1,"healthy":true},
                        {"name":"us-east","url":"http://127.0.1.1:8080","distance_km":5400.0,"healthy":true},
                        {"name":"ap-south","url":"http://127.0.3.1:8080","distance_km":7900.0,"healthy":true}]}"#,
        );
        assert_eq!(
            a.ordered_pops(),
            [
                "http://127.0.2.1:8080",
                "http://127.0.1.1:8080",
                "http://127.0.3.1:8080"
            ]
        );
    }

    #[test]
    fn unhealthy_pops_are_left_out() {
        let a = answer(
            r#"{"pops":[{"name":"a","url":"http://a","healthy":false},
                        {"name":"b","url":"http://b","healthy":true},
                        {"name":"c","url":"http://c"}],
                "origin":"http://o"}"#,
        );
        assert_eq!(a.ordered_pops(), ["http://b", "http://c"]);
        assert_eq!(a.origin.as_deref(), Some("http://o"));
    }

    #[test]
    fn duplicate_pops_are_tried_once() {
        let a =
            answer(r#"{"pops":[{"name":"a","url":"http://a/"},{"name":"a2","url":"http://a"}]}"#);
        assert_eq!(a.ordered_pops(), ["http://a"]);
    }

    #[test]
    fn the_first_caller_fetches_then_the_answer_is_cached() {
        let t0 = Instant::now();
        let mut c = RouteCache::new(Duration::from_secs(5), vec!["http://static".into()]);
        assert_eq!(c.plan(t0), Plan::FetchNow);
        c.record_answer(vec!["http://near".into()], t0);
        assert_eq!(
            c.plan(t0 + Duration::from_secs(4)),
            Plan::Use(vec!["http://near".into()])
        );
    }

    #[test]
    fn a_stale_answer_is_refreshed_by_one_caller_in_the_background() {
        let t0 = Instant::now();
        let mut c = RouteCache::new(Duration::from_secs(5), vec![]);
        c.record_answer(vec!["http://near".into()], t0);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(c.plan(t1), Plan::RefreshBehind(vec!["http://near".into()]));
        assert_eq!(c.plan(t1), Plan::Use(vec!["http://near".into()]));
        c.record_answer(vec!["http://other".into()], t1);
        assert_eq!(c.plan(t1), Plan::Use(vec!["http://other".into()]));
    }

    #[test]
    fn a_router_that_never_answered_means_the_static_list() {
        let t0 = Instant::now();
        let mut c = RouteCache::new(Duration::from_secs(5), vec!["http://static".into()]);
        c.record_failure(t0);
        assert_eq!(c.plan(t0), Plan::Use(vec!["http://static".into()]));
        assert_eq!(
            c.plan(t0 + Duration::from_secs(5)),
            Plan::RefreshBehind(vec!["http://static".into()])
        );
    }

    #[test]
    fn a_failing_router_keeps_its_last_answer_for_a_while_then_the_static_list() {
        let t0 = Instant::now();
        let mut c = RouteCache::new(Duration::from_secs(5), vec!["http://static".into()]);
        c.record_answer(vec!["http://near".into()], t0);
        c.record_failure(t0 + Duration::from_secs(10));
        assert_eq!(c.current(t0 + STALE_ANSWER_FOR), ["http://near"]);
        assert_eq!(
            c.current(t0 + STALE_ANSWER_FOR + Duration::from_secs(1)),
            ["http://static"]
        );
    }

    #[test]
    fn a_router_with_no_healthy_pop_sends_callers_to_the_origin() {
        let t0 = Instant::now();
        let mut c = RouteCache::new(Duration::from_secs(5), vec!["http://static".into()]);
        let a = answer(r#"{"pops":[{"name":"a","url":"http://a","healthy":false}]}"#);
        c.record_answer(a.ordered_pops(), t0);
        assert!(c.current(t0).is_empty());
    }
}
