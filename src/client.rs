//! The fallback client: nearest healthy PoP first, the next PoP on failure, then the origin.
//!
//! A request goes to the PoPs in the router's order (`GET {router}/v1/route`, cached and
//! refreshed in the background; the static list when there is no router or it fails), then
//! to the origin. A candidate is left for the next one on a connect error, a connect or
//! first-byte timeout, a broken connection, or a 5xx head — never once a response head was
//! handed to the caller: the response streams from whoever sent the head.
//!
//! Only safe methods (GET, HEAD, OPTIONS, TRACE) are retried by default. PUT and DELETE are
//! idempotent (RFC 9110 §9.2.2) but retried only with [`ClientConfig::retry_put_delete`],
//! since a timed-out write may still have happened. Other methods go to the first candidate
//! only.
//!
//! Each PoP has a circuit breaker: after [`BreakerPolicy::failures`] consecutive failures it
//! is skipped for [`BreakerPolicy::open_for`], then one request probes it. The origin has no
//! breaker: it is the last resort, and skipping it would fail a request without trying.
//!
//! - `breaker`: the breaker state machine.
//! - `order`: router answers and the static list.
//! - `attempt`: one try, its timeouts, and why it failed.
//! - `command`: `edgecache get`.

mod attempt;
mod breaker;
mod command;
mod order;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};
use tracing::Instrument as _;
use tracing::{debug, info_span, warn};

pub(crate) use attempt::describe;
pub use attempt::{AttemptFailure, FailureKind};
pub use breaker::{BreakerPolicy, BreakerState};
pub use command::{GetArgs, get_command};
pub(crate) use order::fetch_route;
pub use order::{RouteAnswer, RoutedPop};

use attempt::{Outgoing, Timeouts};
use breaker::{Admission, Breakers};
use order::{PopOrder, normalize_base};

/// Where to send requests and how patiently.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The router's base URL; `GET {router}/v1/route` orders the PoPs.
    pub router: Option<String>,
    /// PoP base URLs, nearest first: used when there is no router or it fails.
    pub pops: Vec<String>,
    /// The origin's base URL: the last candidate.
    pub origin: String,
    /// Limit for opening a connection.
    pub connect_timeout: Duration,
    /// Limit for the response head once connected.
    pub first_byte_timeout: Duration,
    /// Limit for the whole request over all candidates, body included; `None`: no limit.
    pub total_timeout: Option<Duration>,
    /// When to skip a failing PoP.
    pub breaker: BreakerPolicy,
    /// How often the router is asked again.
    pub route_refresh: Duration,
    /// Also retry PUT and DELETE on the next candidate.
    pub retry_put_delete: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            router: None,
            pops: Vec::new(),
            origin: "http://127.0.0.1:8000".into(),
            connect_timeout: Duration::from_millis(500),
            first_byte_timeout: Duration::from_secs(2),
            total_timeout: None,
            breaker: BreakerPolicy::default(),
            route_refresh: Duration::from_secs(5),
            retry_put_delete: false,
        }
    }
}

impl ClientConfig {
    /// Checks every URL and limit, naming the bad one.
    pub fn validate(&self) -> Result<(), ClientError> {
        if let Some(router) = &self.router {
            check_base_url("router", router)?;
        }
        for pop in &self.pops {
            check_base_url("pops", pop)?;
        }
        check_base_url("origin", &self.origin)?;
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("first_byte_timeout", self.first_byte_timeout),
            ("route_refresh", self.route_refresh),
            ("total_timeout", self.total_timeout.unwrap_or(Duration::MAX)),
        ] {
            if value.is_zero() {
                return Err(ClientError::Config {
                    key,
                    message: "must be more than zero".into(),
                });
            }
        }
        if self.breaker.failures == 0 {
            return Err(ClientError::Config {
                key: "breaker.failures",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

fn check_base_url(key: &'static str, url: &str) -> Result<(), ClientError> {
    let bad = |message: String| ClientError::Config { key, message };
    let parsed = Url::parse(url).map_err(|e| bad(format!("{url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(format!("{url:?}: not an http(s) URL")));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad(format!("{url:?}: a base URL has no query or fragment")));
    }
    Ok(())
}

/// What went wrong with a request as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A bad [`ClientConfig`] value.
    #[error("client config {key}: {message}")]
    Config { key: &'static str, message: String },
    /// The HTTP client could not be built (TLS setup).
    #[error("HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// No candidate gave a response head; every try (and skip) in order.
    #[error("{method} {path}: no PoP nor the origin answered: {}", list(.failures))]
    Exhausted {
        method: Method,
        path: String,
        failures: Vec<AttemptFailure>,
    },
}

fn list(failures: &[AttemptFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A response head from one candidate; the body streams from `response`.
#[derive(Debug)]
pub struct FallbackResponse {
    /// The base URL that answered.
    pub served_by: String,
    /// Candidates actually tried, this one included (skipped ones do not count).
    pub attempts: u32,
    /// The candidates that failed or were skipped before this one.
    pub failures: Vec<AttemptFailure>,
    pub response: reqwest::Response,
}

/// The fallback client. Cheap to clone; clones share the connection pool, the router answer
/// and the breakers.
#[derive(Debug, Clone)]
pub struct FallbackClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    origin: String,
    http: reqwest::Client,
    order: Arc<PopOrder>,
    breakers: Breakers,
}

impl FallbackClient {
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        config.validate()?;
        // No proxy: the client must see a PoP's connect error itself, not a proxy's 502.
        // No redirects: the caller sees what the PoP said, and `served_by` stays true.
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(ClientError::Build)?;
        let origin = normalize_base(&config.origin);
        let order = Arc::new(PopOrder::new(
            config.router.clone(),
            config.pops.clone(),
            http.clone(),
            config.connect_timeout + config.first_byte_timeout,
            config.route_refresh,
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                breakers: Breakers::new(config.breaker),
                origin,
                http,
                order,
                config,
            }),
        })
    }

    /// `GET path` (with its query), e.g. `client.get("/img/logo.png?v=2")`.
    pub async fn get(&self, path: &str) -> Result<FallbackResponse, ClientError> {
        self.request(Method::GET, path, HeaderMap::new(), None)
            .await
    }

    /// Sends a request to the first candidate that answers; see the module docs for which
    /// failures move on. A 5xx from the last candidate tried is returned as it is.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<FallbackResponse, ClientError> {
        let span = info_span!("fallback", method = %method, path = %path);
        self.request_inner(method, path, headers, body)
            .instrument(span)
            .await
    }

    async fn request_inner(
        &self,
        method: Method,
        path: &str,
        headers: HeaderMap,
        body: Option<Bytes>,
    ) -> Result<FallbackResponse, ClientError> {
        let inner = &*self.inner;
        let deadline = inner.config.total_timeout.map(|t| Instant::now() + t);
        let retried = is_retried(&method, inner.config.retry_put_delete);
        let path_with_slash = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let candidates = self.candidates().await;
        let last = candidates.len() - 1;
        let outgoing = Outgoing {
            method: &method,
            headers: &headers,
            body: body.as_ref(),
        };
        let timeouts = Timeouts {
            connect: inner.config.connect_timeout,
            first_byte: inner.config.first_byte_timeout,
        };
        let mut failures = Vec::new();
        let mut attempts = 0;
        for (i, base) in candidates.iter().enumerate() {
            let is_origin = i == last;
            if !is_origin && inner.breakers.admit(base, Instant::now()) == Admission::Skip {
                failures.push(AttemptFailure {
                    url: base.clone(),
                    kind: FailureKind::CircuitOpen,
                });
                continue;
            }
            attempts += 1;
            let url = format!("{base}{path_with_slash}");
            let result = attempt::send(&inner.http, &url, &outgoing, timeouts, deadline).await;
            let kind = match result {
                Ok(response) if !response.status().is_server_error() => {
                    if !is_origin {
                        inner.breakers.record_success(base);
                    }
                    debug!(served_by = %base, attempts, status = response.status().as_u16(), "served");
                    return Ok(FallbackResponse {
                        served_by: base.clone(),
                        attempts,
                        failures,
                        response,
                    });
                }
                Ok(response) => {
                    if !is_origin {
                        inner.breakers.record_failure(base, Instant::now());
                    }
                    if is_origin || !retried {
                        return Ok(FallbackResponse {
                            served_by: base.clone(),
                            attempts,
                            failures,
                            response,
                        });
                    }
                    FailureKind::ServerError(response.status().as_u16())
                }
                Err(kind) => {
                    if !is_origin && kind != FailureKind::TotalTimeout {
                        inner.breakers.record_failure(base, Instant::now());
                    }
                    kind
                }
            };
            warn!(url = %base, failure = kind.as_str(), error = %kind, "candidate failed");
            let stop = !retried || kind == FailureKind::TotalTimeout;
            failures.push(AttemptFailure {
                url: base.clone(),
                kind,
            });
            if stop {
                break;
            }
        }
        Err(ClientError::Exhausted {
            method,
            path: path_with_slash,
            failures,
        })
    }

    /// The base URLs a request would try now, in order: PoPs, then the origin.
    pub async fn candidates(&self) -> Vec<String> {
        let mut candidates = self.inner.order.pops().await;
        candidates.retain(|c| *c != self.inner.origin);
        candidates.push(self.inner.origin.clone());
        candidates
    }

    /// The breaker of one base URL as a request would see it now.
    pub fn breaker_state(&self, base_url: &str) -> BreakerState {
        self.inner
            .breakers
            .state(&normalize_base(base_url), Instant::now())
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }
}

/// Whether a failed try may be repeated on the next candidate.
fn is_retried(method: &Method, retry_put_delete: bool) -> bool {
    match *method {
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE => true,
        Method::PUT | Method::DELETE => retry_put_delete,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_safe_methods_are_retried_by_default() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(is_retried(&m, false), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::PUT, Method::DELETE] {
            assert!(!is_retried(&m, false), "{m}");
        }
        assert!(is_retried(&Method::PUT, true));
        assert!(is_retried(&Method::DELETE, true));
        assert!(!is_retried(&Method::POST, true));
    }

    #[test]
    fn bad_config_names_the_key() {
        let config = ClientConfig {
            pops: vec!["ftp://x".into()],
            ..ClientConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("client config pops:"), "{err}");
        let config = ClientConfig {
            first_byte_timeout: Duration::ZERO,
            ..ClientConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("first_byte_timeout"), "{err}");
    }

    #[tokio::test]
    async fn the_origin_comes_last_and_once() {
        let client = FallbackClient::new(ClientConfig {
            pops: vec![
                "http://127.0.1.1:8080/".into(),
                "http://127.0.0.1:8000".into(),
                "http://127.0.2.1:8080".into(),
            ],
            origin: "http://127.0.0.1:8000/".into(),
            ..ClientConfig::default()
        })
        .unwrap();
        assert_eq!(
            client.candidates().await,
            [
                "http://127.0.1.1:8080",
                "http://127.0.2.1:8080",
                "http://127.0.0.1:8000"
            ]
        );
    }
}
