//! The origin client: a pooled reqwest client with connect, first-byte, idle and total
//! timeouts, failover across the configured origins, and the framing checks every origin
//! response passes before anyone sees it. What a request carries upstream is decided in
//! [`crate::forward`].
//!
//! - [`failover`]: per-origin health (skip after repeated failures, half-open probes).
//! - [`s3`]: S3-style bucket origins (object URLs, SigV4).

pub mod failover;
pub mod s3;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method};
use tracing::{info, warn};

use crate::config::{EdgeConfig, OriginEntry, TimeoutConfig};
use crate::error::{EdgeError, UpstreamError};
use crate::forward::ClientBody;
use failover::OriginHealth;
use s3::S3Target;

/// A client for the configured origins. A reload swaps the whole set at once: requests
/// already sent finish with the set they started with.
#[derive(Clone)]
pub struct Upstream {
    current: Arc<ArcSwap<Origins>>,
}

/// The origins of one configuration, in failover order, and their timeouts.
struct Origins {
    origins: Box<[Origin]>,
    timeouts: TimeoutConfig,
}

/// One configured origin and its health.
struct Origin {
    target: Target,
    health: OriginHealth,
    /// How logs name it: its URL without credentials.
    label: String,
    /// The shared client, or one of its own that trusts the origin's `ca`.
    client: reqwest::Client,
}

enum Target {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8000` or
    /// `https://assets.example.com/static`.
    Http {
        base: String,
    },
    S3(S3Target),
}

/// Why an attempt counts as a failure of its origin, for logs.
fn failure_reason(outcome: &Result<reqwest::Response, UpstreamError>) -> Option<String> {
    match outcome {
        Ok(r) if r.status().is_server_error() => Some(format!("status {}", r.status().as_u16())),
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

impl Origin {
    fn new(
        i: usize,
        entry: &OriginEntry,
        timeouts: &TimeoutConfig,
        shared: &reqwest::Client,
    ) -> Result<Self, EdgeError> {
        let bad = |why: String| EdgeError::Config(format!("edge.origins[{i}]: {why}"));
        let (target, label) = match (&entry.url, &entry.s3) {
            (Some(url), None) => {
                let label = match reqwest::Url::parse(url) {
                    Ok(mut u) => {
                        let _ = u.set_password(None);
                        let _ = u.set_username("");
                        u.to_string().trim_end_matches('/').to_owned()
                    }
                    Err(e) => return Err(bad(format!("url: {e}"))),
                };
                let base = url.trim_end_matches('/').to_owned();
                (Target::Http { base }, label)
            }
            (None, Some(s3)) => {
                let target = S3Target::new(s3, |name| std::env::var(name).ok()).map_err(bad)?;
                let label = target.label().to_owned();
                (Target::S3(target), label)
            }
            _ => return Err(bad("set exactly one of url and s3".into())),
        };
        let client = match &entry.ca {
            None => shared.clone(),
            Some(path) => {
                let pem =
                    edgecache_tls::cert::load_ca_pem(path).map_err(|e| bad(format!("ca: {e}")))?;
                let roots = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| bad(format!("ca: {}: {e}", path.display())))?;
                client_builder(timeouts)
                    .tls_certs_only(roots)
                    .build()
                    .map_err(|e| bad(format!("ca: cannot build a client: {e}")))?
            }
        };
        Ok(Self {
            target,
            health: OriginHealth::new(entry.retry_after()),
            label,
            client,
        })
    }
}

/// The origin client's settings: timeouts, no redirects or proxies, a large idle pool.
fn client_builder(t: &TimeoutConfig) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(t.connect.0)
        .read_timeout(t.idle.0)
        .timeout(t.total.0)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(t.pool_idle.0)
        .tcp_nodelay(true)
}

impl Origins {
    fn new(config: &EdgeConfig) -> Result<Self, EdgeError> {
        if config.origins.is_empty() {
            return Err(EdgeError::Config(
                "edge.origins: at least one origin is required".into(),
            ));
        }
        let t = &config.timeouts;
        let shared = client_builder(t)
            .build()
            .map_err(|e| EdgeError::Config(format!("edge.origins: cannot build client: {e}")))?;
        let mut origins = config
            .origins
            .iter()
            .enumerate()
            .map(|(i, o)| Origin::new(i, o, t, &shared))
            .collect::<Result<Vec<_>, _>>()?;
        // A parent PoP comes first; failing, the origins take over like any failover.
        if let Some(parent) = &config.parent {
            let entry = OriginEntry::http(parent.clone());
            origins.insert(0, Origin::new(0, &entry, t, &shared)?);
        }
        Ok(Self {
            origins: origins.into(),
            timeouts: t.clone(),
        })
    }
}

impl Upstream {
    pub fn new(config: &EdgeConfig) -> Result<Self, EdgeError> {
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(Origins::new(config)?)),
        })
    }

    /// Builds the origins of `config` and, only if that works, puts them in place of the
    /// current ones. Their health starts afresh.
    pub fn replace(&self, config: &EdgeConfig) -> Result<(), EdgeError> {
        let origins = Origins::new(config)?;
        let labels: Vec<&str> = origins.origins.iter().map(|o| o.label.as_str()).collect();
        info!(origins = ?labels, "origins replaced");
        self.current.store(Arc::new(origins));
        Ok(())
    }

    /// Sends a request; see [`Origins::send`]. A client body whose reading fails makes
    /// the error [`UpstreamError::ClientBody`], which does not count against the origin.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Option<ClientBody>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let origins = self.current.load_full();
        let (body, failed) = match body {
            Some(b) => (b.body, Some(b.failed)),
            None => (None, None),
        };
        origins
            .send(method, path_and_query, headers, body, failed.as_deref())
            .await
    }

    /// The longest an origin exchange may take, body included: no fetch outlives it.
    pub fn total_timeout(&self) -> Duration {
        self.current.load().timeouts.total.0
    }
}

impl Origins {
    /// Sends a request for `path_and_query` and waits for the response head.
    ///
    /// A GET or HEAD without a body goes to the origins in order, skipping those being
    /// rested after repeated failures, and moves on after a connect error, timeout, broken
    /// response or 5xx. Nothing has reached the client yet, so this is safe; once the head
    /// is returned there is no retry. If every origin fails, the last outcome is returned
    /// (a 5xx response stays a response, for `stale-if-error`). Other methods go to the first
    /// origin not being skipped, once. When every origin is being skipped, they are tried
    /// anyway: a request refused without trying helps nobody.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Option<reqwest::Body>,
        client_failed: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let retryable = matches!(method, Method::GET | Method::HEAD) && body.is_none();
        let mut request = Some((headers, body));
        let mut last = None;
        for pass in [true, false] {
            // The second pass, ignoring health, runs only when the first tried nothing.
            for (i, origin) in self.origins.iter().enumerate() {
                if pass && !origin.health.admit(Instant::now()) {
                    continue;
                }
                let more = retryable && i + 1 < self.origins.len();
                let Some((headers, body)) = (if more {
                    request.as_ref().map(|(h, _)| (h.clone(), None))
                } else {
                    request.take()
                }) else {
                    break;
                };
                let outcome = self
                    .send_to(origin, method.clone(), path_and_query, headers, body)
                    .await;
                if outcome.is_err() && client_failed.is_some_and(|f| f.load(Ordering::Acquire)) {
                    return Err(UpstreamError::ClientBody(
                        "the request body could not be read".into(),
                    ));
                }
                let Some(reason) = failure_reason(&outcome) else {
                    if origin.health.record_success() {
                        info!(origin = %origin.label, "origin recovered");
                    }
                    return outcome;
                };
                if origin.health.record_failure(Instant::now()) {
                    warn!(
                        origin = %origin.label,
                        failures = failover::FAILURE_THRESHOLD,
                        retry_after_ms = origin.health.retry_after().as_millis() as u64,
                        "origin failing; skipping it until the retry time"
                    );
                }
                if !more {
                    return outcome;
                }
                warn!(
                    origin = %origin.label,
                    next = %self.origins[i + 1].label,
                    method = %method,
                    path = %path_and_query,
                    reason = %reason,
                    "origin failed before any response byte; failing over"
                );
                last = Some(outcome);
            }
            if last.is_some() || request.is_none() {
                break;
            }
        }
        last.unwrap_or_else(|| Err(UpstreamError::Connect("no origin could be tried".into())))
    }

    /// One attempt at one origin, bounded by the first-byte timeout.
    async fn send_to(
        &self,
        origin: &Origin,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Option<reqwest::Body>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let limit = self.timeouts.first_byte.0;
        let attempt = async {
            match &origin.target {
                Target::Http { base } => {
                    let url = format!("{base}{path_and_query}");
                    let mut req = origin.client.request(method, url).headers(headers);
                    if let Some(body) = body {
                        req = req.body(body);
                    }
                    req.send()
                        .await
                        .map_err(|e| UpstreamError::from_reqwest(&e))
                }
                Target::S3(s3) => {
                    s3.send(&origin.client, method, path_and_query, &headers)
                        .await
                }
            }
        };
        match tokio::time::timeout(limit, attempt).await {
            Err(_) => Err(UpstreamError::FirstByteTimeout(limit)),
            Ok(result) => result.and_then(framed_once),
        }
    }
}

/// An origin response as it may travel on: one framing, and a final status.
///
/// - `Transfer-Encoding` and `Content-Length` together: the body was read as chunked
///   (RFC 9112 §6.3), so the `Content-Length`, which may disagree with it, goes; it must
///   never be relayed next to the chunked body's own length.
/// - A 1xx as the final response (`101 Switching Protocols` above all: the edge asked for
///   no upgrade, and relaying one would hand the client's connection to the origin) is a
///   broken response.
fn framed_once(mut resp: reqwest::Response) -> Result<reqwest::Response, UpstreamError> {
    if resp.status().is_informational() {
        return Err(UpstreamError::Protocol(format!(
            "informational status {} as the final response",
            resp.status().as_u16()
        )));
    }
    if resp.headers().contains_key(TRANSFER_ENCODING) {
        resp.headers_mut().remove(CONTENT_LENGTH);
    }
    Ok(resp)
}
