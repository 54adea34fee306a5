//! The request path through the edge: lookup, freshness decision, coalesced fetch,
//! stale fallbacks, and pass-through of other methods with invalidation (RFC 9111 §4).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::{Body, HttpBody as _};
use axum::extract::{ConnectInfo, Request, State};
use futures_util::TryStreamExt as _;
use http::header::{AGE, CONTENT_LOCATION, HeaderValue, LOCATION, RANGE};
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};
use tracing::{debug, warn};

use crate::access_log::{self, OriginWait};
use crate::cache_control::CacheControl;
use crate::cache_status::{CACHE_STATUS, CacheState, CacheStatus, Fwd};
use crate::coalesce::{FetchedHead, Outcome};
use crate::disk::DiskLookup;
use crate::entry::{CachedResponse, strip_hop_by_hop};
use crate::error::UpstreamError;
use crate::fetch::FetchRequest;
use crate::forward::{self, BadRequest, ClientBody, Purpose, check_request};
use crate::key::CacheKey;
use crate::memory::Lookup;
use crate::node::Edge;
use crate::policy::Usability;
use crate::purge::Verdict;
use crate::respond::{self, Precondition, evaluate_preconditions};
use edgecache_tls::zero_copy::FileSender;

/// The axum handler for every request on the public listener.
pub async fn handle(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response<Body> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let (resp, state) = match check_request(&parts, &body, &edge.key_rules) {
        Err(bad) => (edge.bad_request(&parts, bad), CacheState::Error),
        Ok(key) => edge.dispatch(&parts, key, body, peer).await,
    };
    let elapsed = started.elapsed();
    edge.metrics.request(state, elapsed);
    let resp = count_body_bytes(&edge, resp);
    if let Some(suppressed) = edge.access_log.admit() {
        let origin = resp.extensions().get::<OriginWait>().map(|w| w.0);
        let tier = resp
            .headers()
            .get(CACHE_STATUS)
            .and_then(|v| access_log::tier_of(v.as_bytes()))
            .unwrap_or(if origin.is_some() { "origin" } else { "-" });
        let line = access_log::Line {
            pop: &edge.pop,
            client: peer,
            method: &parts.method,
            uri: &parts.uri,
            status: resp.status(),
            bytes: resp.body().size_hint().exact(),
            cache: state.as_str(),
            tier,
            origin,
            total: elapsed,
        };
        edge.access_log.write(&line, suppressed);
    }
    debug!(
        method = %parts.method,
        uri = %parts.uri,
        status = resp.status().as_u16(),
        cache = state.as_str(),
        elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    resp
}

impl Edge {
    /// Answers a request that passed [`check_request`], keyed `key`.
    async fn dispatch(
        self: &Arc<Self>,
        parts: &Parts,
        key: CacheKey,
        body: Body,
        peer: SocketAddr,
    ) -> (Response<Body>, CacheState) {
        if self.is_loop(&parts.headers) {
            let status = CacheStatus {
                detail: Some("loop"),
                ..CacheStatus::forward(Fwd::Bypass)
            };
            warn!(uri = %parts.uri, "request came back through this edge: loop");
            let resp = self.error_response(
                StatusCode::LOOP_DETECTED,
                "forwarding loop: this edge already forwarded this request",
                status,
            );
            (resp, CacheState::Error)
        } else if parts.uri.path() == FALLBACK_JS_PATH && parts.method == Method::GET {
            let mut resp = fallback_js();
            let status = CacheStatus {
                hit: true,
                detail: Some("built-in"),
                ..CacheStatus::default()
            };
            respond::stamp(
                resp.headers_mut(),
                0,
                status.render(&self.status_name, None),
            );
            (resp, CacheState::Hit)
        } else if parts.method == Method::GET || parts.method == Method::HEAD {
            self.serve(parts, key, peer).await
        } else if parts.method.as_str() == "PURGE" {
            (self.purge_method(parts, key), CacheState::Pass)
        } else {
            let asked = Instant::now();
            // Boxed, as the fetches in `serve` are: the handler's future is moved into a box
            // on every request, and should be sized for the hit path, not for these.
            let (mut resp, state) = Box::pin(self.pass(parts.clone(), key, body, peer)).await;
            resp.extensions_mut().insert(OriginWait(asked.elapsed()));
            (resp, state)
        }
    }

    /// Serves a GET or HEAD from the cache or through a coalesced origin fetch.
    async fn serve(
        self: &Arc<Self>,
        parts: &Parts,
        key: CacheKey,
        peer: SocketAddr,
    ) -> (Response<Body>, CacheState) {
        let now = SystemTime::now();
        let req_cc = CacheControl::for_request(&parts.headers);
        let (found, tier) = self.lookup(&key, &parts.headers).await;
        let (stale, fwd) = match found {
            Lookup::Found(entry) => match entry.freshness.usability(&req_cc, now) {
                Usability::Fresh => {
                    let mut status = CacheStatus::hit(entry.freshness.ttl(now));
                    status.detail = Some(tier);
                    return (
                        self.answer_from(&entry, parts, status, now),
                        CacheState::Hit,
                    );
                }
                Usability::ServeStale => {
                    if entry.freshness.staleness(now)
                        < u64::from(entry.freshness.stale_while_revalidate)
                    {
                        self.revalidate_in_background(&key, parts, &entry, peer);
                    }
                    let mut status = CacheStatus::hit(entry.freshness.ttl(now));
                    status.detail = Some(tier);
                    return (
                        self.answer_from(&entry, parts, status, now),
                        CacheState::StaleHit,
                    );
                }
                Usability::Revalidate => {
                    let fwd = if req_cc.no_cache
                        || req_cc.max_age.is_some()
                        || req_cc.min_fresh.is_some()
                    {
                        Fwd::Request
                    } else {
                        Fwd::Stale
                    };
                    (Some(entry), fwd)
                }
            },
            Lookup::VaryMiss => (None, Fwd::VaryMiss),
            Lookup::Miss => (None, Fwd::UriMiss),
        };
        if req_cc.only_if_cached {
            let mut status = CacheStatus::forward(fwd);
            status.detail = Some("only-if-cached");
            return (
                self.error_response(StatusCode::GATEWAY_TIMEOUT, "not in cache", status),
                CacheState::Error,
            );
        }
        let asked = Instant::now();
        // The origin paths are boxed: their futures are large (the HTTP client's), and
        // unboxed they would size the future of every request, hits included, which is
        // moved into a box per request.
        let (mut resp, state) = if parts.method == Method::HEAD {
            Box::pin(self.forward_head(parts, &key, stale, fwd, &req_cc, peer)).await
        } else {
            Box::pin(self.fetch(parts, key, stale, fwd, &req_cc, peer)).await
        };
        resp.extensions_mut().insert(OriginWait(asked.elapsed()));
        (resp, state)
    }

    /// A HEAD the cache cannot answer goes to the origin as a HEAD; its answer freshens a
    /// stored response it matches (RFC 9111 §4.3.5) and is otherwise just relayed.
    async fn forward_head(
        self: &Arc<Self>,
        parts: &Parts,
        key: &CacheKey,
        stale: Option<Arc<CachedResponse>>,
        fwd: Fwd,
        req_cc: &CacheControl,
        peer: SocketAddr,
    ) -> (Response<Body>, CacheState) {
        let headers = self.upstream_headers(parts, key, peer, Purpose::Fetch);
        let path = key.path_and_query();
        let request_time = SystemTime::now();
        let started = Instant::now();
        let resp = match self.upstream.send(Method::HEAD, path, headers, None).await {
            Ok(resp) => resp,
            Err(err) => {
                self.record_failure(&err, path);
                let now = SystemTime::now();
                if let Some(entry) = stale.filter(|e| {
                    e.freshness
                        .usable_on_error(req_cc, now, self.policy().stale_if_error_default)
                }) {
                    return self.stale_on_error(&entry, parts, fwd, None, err.detail(), now);
                }
                let mut status = CacheStatus::forward(fwd);
                status.detail = Some(err.detail());
                return (
                    self.error_response(err.status(), err.detail(), status),
                    CacheState::Error,
                );
            }
        };
        self.record_fetch(resp.status(), started);
        let now = SystemTime::now();
        if let Some(entry) = &stale
            && resp.status() == entry.status()
            && head_matches(resp.headers(), entry)
        {
            let refreshed =
                Arc::new(entry.refreshed(resp.headers(), request_time, now, &self.policy()));
            self.memory.store(key, refreshed.clone());
            let status = CacheStatus {
                fwd: Some(fwd),
                fwd_status: Some(resp.status().as_u16()),
                ttl: Some(refreshed.freshness.ttl(now)),
                stored: true,
                ..CacheStatus::default()
            };
            return (
                self.answer_from(&refreshed, parts, status, now),
                CacheState::Revalidated,
            );
        }
        let status = CacheStatus {
            fwd: Some(fwd),
            fwd_status: Some(resp.status().as_u16()),
            ..CacheStatus::default()
        };
        (
            self.stream_back(resp, &parts.method, status),
            CacheState::Miss,
        )
    }

    /// Joins or starts the origin fetch for `key` and answers from its outcome.
    async fn fetch(
        self: &Arc<Self>,
        parts: &Parts,
        key: CacheKey,
        stale: Option<Arc<CachedResponse>>,
        fwd: Fwd,
        req_cc: &CacheControl,
        peer: SocketAddr,
    ) -> (Response<Body>, CacheState) {
        let (inflight, leader) = self.coalescer.join(&key);
        if leader {
            let request = self.fetch_request(parts, &key, stale.clone(), peer);
            tokio::spawn(
                self.clone()
                    .run_fetch(key.clone(), inflight.clone(), request),
            );
        } else {
            self.metrics.collapsed();
        }
        let outcome = inflight.outcome().await;
        let now = SystemTime::now();
        match outcome {
            Outcome::Refreshed(entry) => {
                let status = CacheStatus {
                    fwd: Some(fwd),
                    fwd_status: Some(304),
                    ttl: Some(entry.freshness.ttl(now)),
                    stored: true,
                    collapsed: !leader,
                    ..CacheStatus::default()
                };
                (
                    self.answer_from(&entry, parts, status, now),
                    CacheState::Revalidated,
                )
            }
            Outcome::Failed(err) => {
                if let Some(entry) = stale.filter(|e| {
                    e.freshness
                        .usable_on_error(req_cc, now, self.policy().stale_if_error_default)
                }) {
                    return self.stale_on_error(&entry, parts, fwd, None, err.detail(), now);
                }
                let mut status = CacheStatus::forward(fwd);
                status.collapsed = !leader;
                status.detail = Some(err.detail());
                (
                    self.error_response(err.status(), err.detail(), status),
                    CacheState::Error,
                )
            }
            Outcome::Response(head) => {
                if head.status.is_server_error()
                    && let Some(entry) = stale.filter(|e| {
                        e.freshness.usable_on_error(
                            req_cc,
                            now,
                            self.policy().stale_if_error_default,
                        )
                    })
                {
                    let code = Some(head.status.as_u16());
                    return self.stale_on_error(&entry, parts, fwd, code, "origin-error", now);
                }
                if !leader && (!head.shareable() || !vary_matches(&head, &parts.headers)) {
                    // Not ours to share: this request gets its own origin exchange.
                    return self.fetch_alone(parts, &key, fwd, peer).await;
                }
                let state = match (fwd, head.replaced_stale) {
                    (_, true) => CacheState::Refetched,
                    (Fwd::VaryMiss, _) => CacheState::VaryMiss,
                    _ => CacheState::Miss,
                };
                let mut status = CacheStatus {
                    fwd: Some(fwd),
                    fwd_status: Some(head.status.as_u16()),
                    stored: head.stored,
                    collapsed: !leader,
                    detail: head.not_storable.map(|n| n.as_str()),
                    ..CacheStatus::default()
                };
                // A single range of a response of known length streams as the body arrives;
                // several ranges are cut from the stored copy once it is complete.
                if head.shareable()
                    && head.status == StatusCode::OK
                    && parts.method == Method::GET
                    && let Some(range) = parts.headers.get(RANGE).and_then(|v| v.to_str().ok())
                {
                    let length = head
                        .headers
                        .get(http::header::CONTENT_LENGTH)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    match length.map(|len| respond::plan_range(range, len)) {
                        Some(respond::RangePlan::Single(start, end)) => {
                            let len = length.unwrap_or(0);
                            let age = head.freshness.age(now);
                            let value =
                                status.render(&self.status_name, head.headers.get(CACHE_STATUS));
                            let body = Body::from_stream(inflight.clone().body_range(start, end));
                            let resp =
                                respond::partial(&head.headers, body, start, end, len, age, value);
                            return (resp, state);
                        }
                        _ => {
                            inflight.wait_end().await;
                            if let (Lookup::Found(entry), _) =
                                self.lookup(&key, &parts.headers).await
                            {
                                status.ttl = Some(entry.freshness.ttl(now));
                                return (self.answer_from(&entry, parts, status, now), state);
                            }
                        }
                    }
                }
                let age = head.freshness.age(now);
                let upstream_status = head.headers.get(CACHE_STATUS);
                let status_value = status.render(&self.status_name, upstream_status);
                if head.status.is_success() {
                    match evaluate_preconditions(&parts.headers, &head.headers, now) {
                        Precondition::NotModified => {
                            return (
                                respond::not_modified(&head.headers, age, status_value),
                                state,
                            );
                        }
                        Precondition::Failed => {
                            return (
                                self.error_response(
                                    StatusCode::PRECONDITION_FAILED,
                                    "precondition failed",
                                    status,
                                ),
                                state,
                            );
                        }
                        Precondition::Proceed => {}
                    }
                }
                let body = if parts.method == Method::HEAD {
                    Body::empty()
                } else {
                    Body::from_stream(inflight.clone().body())
                };
                let mut resp = Response::new(body);
                *resp.status_mut() = head.status;
                *resp.headers_mut() = head.headers.clone();
                if !leader {
                    for field in &head.unshared_fields {
                        resp.headers_mut().remove(field.as_str());
                    }
                }
                respond::stamp(resp.headers_mut(), age, status_value);
                (resp, state)
            }
        }
    }

    /// A request that could not share another's response: fetched and streamed on its own,
    /// without coalescing.
    async fn fetch_alone(
        self: &Arc<Self>,
        parts: &Parts,
        key: &CacheKey,
        fwd: Fwd,
        peer: SocketAddr,
    ) -> (Response<Body>, CacheState) {
        let headers = self.upstream_headers(parts, key, peer, Purpose::Fetch);
        let path = key.path_and_query();
        let started = Instant::now();
        match self.upstream.send(Method::GET, path, headers, None).await {
            Ok(resp) => {
                self.record_fetch(resp.status(), started);
                let status = CacheStatus {
                    fwd: Some(fwd),
                    fwd_status: Some(resp.status().as_u16()),
                    ..CacheStatus::default()
                };
                (
                    self.stream_back(resp, &parts.method, status),
                    CacheState::Miss,
                )
            }
            Err(err) => {
                self.record_failure(&err, path);
                let mut status = CacheStatus::forward(fwd);
                status.detail = Some(err.detail());
                (
                    self.error_response(err.status(), err.detail(), status),
                    CacheState::Error,
                )
            }
        }
    }

    /// Starts a background revalidation of a stale entry, unless one is already running.
    fn revalidate_in_background(
        self: &Arc<Self>,
        key: &CacheKey,
        parts: &Parts,
        entry: &Arc<CachedResponse>,
        peer: SocketAddr,
    ) {
        let (inflight, leader) = self.coalescer.join(key);
        if leader {
            let request = self.fetch_request(parts, key, Some(entry.clone()), peer);
            tokio::spawn(self.clone().run_fetch(key.clone(), inflight, request));
        }
    }

    fn fetch_request(
        &self,
        parts: &Parts,
        key: &CacheKey,
        stale: Option<Arc<CachedResponse>>,
        peer: SocketAddr,
    ) -> FetchRequest {
        let headers = self.upstream_headers(parts, key, peer, Purpose::Fetch);
        FetchRequest {
            path_and_query: key.path_and_query().to_owned(),
            client_headers: parts.headers.clone(),
            headers,
            stale,
        }
    }

    /// Serves a stale entry because the origin failed (RFC 5861 §4).
    fn stale_on_error(
        &self,
        entry: &Arc<CachedResponse>,
        parts: &Parts,
        fwd: Fwd,
        fwd_status: Option<u16>,
        detail: &'static str,
        now: SystemTime,
    ) -> (Response<Body>, CacheState) {
        let status = CacheStatus {
            hit: true,
            fwd: Some(fwd),
            fwd_status,
            ttl: Some(entry.freshness.ttl(now)),
            detail: Some(detail),
            ..CacheStatus::default()
        };
        (
            self.answer_from(entry, parts, status, now),
            CacheState::StaleOnError,
        )
    }

    fn answer_from(
        &self,
        entry: &Arc<CachedResponse>,
        parts: &Parts,
        status: CacheStatus,
        now: SystemTime,
    ) -> Response<Body> {
        let value = status.render(&self.status_name, entry.headers.get(&CACHE_STATUS).as_ref());
        let age = entry.freshness.age(now);
        // Present on plain HTTP/1 connections, which can send bodies from files.
        let sender = parts.extensions.get::<FileSender>();
        match &self.disk {
            Some(disk) if !entry.body_in_memory() => respond::from_disk(
                entry,
                disk,
                &parts.method,
                &parts.headers,
                age,
                value,
                sender,
            ),
            disk => {
                let files = disk.as_ref().zip(sender);
                respond::from_entry(entry, &parts.method, &parts.headers, age, value, files)
            }
        }
    }

    /// Looks `key` up in memory, then on disk. A disk entry small enough for memory is read,
    /// verified and promoted (the memory tier's admission policy has the last word); a
    /// larger one stays on disk and is streamed from there. Returns the tier that answered.
    async fn lookup(&self, key: &CacheKey, headers: &HeaderMap) -> (Lookup, &'static str) {
        let (found, tier) = self.find(key, headers).await;
        let Lookup::Found(entry) = found else {
            return (found, tier);
        };
        // Purge rules are checked here, so applying one never has to visit entries.
        match self.purges.verdict(key, &entry) {
            Verdict::Keep => (Lookup::Found(entry), tier),
            Verdict::Stale => {
                let stale = Arc::new(crate::purge::mark_stale(&entry, SystemTime::now()));
                self.memory.store(key, stale.clone());
                if let Some(disk) = self.disk.clone()
                    && stale.disk.is_some()
                {
                    let entry = stale.clone();
                    tokio::task::spawn_blocking(move || disk.update(&entry));
                }
                (Lookup::Found(stale), tier)
            }
            Verdict::Gone => {
                self.invalidate(key);
                (Lookup::Miss, tier)
            }
        }
    }

    async fn find(&self, key: &CacheKey, headers: &HeaderMap) -> (Lookup, &'static str) {
        let in_memory = self.memory.lookup(key, headers);
        // Until every missed purge is applied, the disk tier may hold purged content.
        let disk = self.disk.as_ref().filter(|_| self.caught_up());
        let Some(disk) = disk else {
            return (in_memory, "memory");
        };
        if matches!(in_memory, Lookup::Found(_)) {
            return (in_memory, "memory");
        }
        match disk.lookup(key, headers) {
            DiskLookup::Found(entry) => {
                if entry.body_len() > self.memory.max_object_size() as u64 {
                    return (Lookup::Found(entry), "disk");
                }
                match disk.read_all(&entry).await {
                    Ok(body) => {
                        let mut promoted = (*entry).clone();
                        promoted.body = body;
                        let promoted = Arc::new(promoted);
                        self.memory.store(key, promoted.clone());
                        (Lookup::Found(promoted), "disk")
                    }
                    // Dropped by the tier (and counted); fetch a fresh copy.
                    Err(_) => (Lookup::Miss, "disk"),
                }
            }
            DiskLookup::VaryMiss => (Lookup::VaryMiss, "disk"),
            DiskLookup::Miss => (in_memory, "memory"),
        }
    }

    /// Forwards a request the cache does not answer (any method but GET and HEAD), and
    /// invalidates what an unsafe one may have changed (RFC 9111 §4.4).
    async fn pass(
        self: &Arc<Self>,
        parts: Parts,
        key: CacheKey,
        body: Body,
        peer: SocketAddr,
    ) -> (Response<Body>, CacheState) {
        let mut headers = self.upstream_headers(&parts, &key, peer, Purpose::Pass);
        let body = ClientBody::new(body);
        body.frame(&parts.method, &mut headers);
        let path = key.path_and_query();
        let started = Instant::now();
        let status = CacheStatus::forward(Fwd::Bypass);
        match self
            .upstream
            .send(parts.method.clone(), path, headers, Some(body))
            .await
        {
            Ok(resp) => {
                self.record_fetch(resp.status(), started);
                let unsafe_method = !matches!(
                    parts.method,
                    Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
                );
                if unsafe_method && (resp.status().is_success() || resp.status().is_redirection()) {
                    self.invalidate_after_write(&key, resp.headers());
                }
                let mut status = status;
                status.fwd_status = Some(resp.status().as_u16());
                (
                    self.stream_back(resp, &parts.method, status),
                    CacheState::Pass,
                )
            }
            Err(err) => {
                if matches!(err, UpstreamError::ClientBody(_)) {
                    warn!(path, error = %err, "client request body malformed");
                } else {
                    self.record_failure(&err, path);
                }
                let mut status = status;
                status.detail = Some(err.detail());
                (
                    self.error_response(err.status(), err.detail(), status),
                    CacheState::Error,
                )
            }
        }
    }

    /// Drops the target URI and the same-origin `Location` / `Content-Location` URIs.
    fn invalidate_after_write(&self, key: &CacheKey, resp_headers: &HeaderMap) {
        self.invalidate(key);
        for name in [LOCATION, CONTENT_LOCATION] {
            let Some(target) = resp_headers.get(&name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let Ok(uri) = target.parse::<http::Uri>() else {
                continue;
            };
            let same_origin = match uri.authority() {
                None => true,
                Some(a) => key
                    .origin()
                    .ends_with(&format!("://{}", a.as_str().to_ascii_lowercase())),
            };
            if same_origin && uri.path().starts_with('/') {
                self.invalidate(&CacheKey::new("http", key.host(), &uri, &self.key_rules));
            }
        }
    }

    /// Streams an origin response to the client as it is.
    fn stream_back(
        &self,
        resp: reqwest::Response,
        method: &Method,
        status: CacheStatus,
    ) -> Response<Body> {
        let code = resp.status();
        let mut headers = resp.headers().clone();
        strip_hop_by_hop(&mut headers);
        let value = status.render(&self.status_name, headers.get(CACHE_STATUS));
        if !headers.contains_key(AGE) {
            headers.insert(AGE, HeaderValue::from_static("0"));
        }
        headers.insert(CACHE_STATUS, value);
        let body = if *method == Method::HEAD {
            Body::empty()
        } else {
            Body::from_stream(resp.bytes_stream())
        };
        let mut out = Response::new(body);
        *out.status_mut() = code;
        *out.headers_mut() = headers;
        out
    }

    pub(crate) fn error_response(
        &self,
        code: StatusCode,
        reason: &str,
        status: CacheStatus,
    ) -> Response<Body> {
        let mut resp = Response::new(Body::from(format!(
            "{} {}: {reason}\n",
            code.as_u16(),
            code.canonical_reason().unwrap_or("")
        )));
        *resp.status_mut() = code;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        respond::stamp(h, 0, status.render(&self.status_name, None));
        resp
    }

    pub(crate) fn record_failure(&self, err: &UpstreamError, path: &str) {
        self.metrics
            .fetch(crate::metrics::FetchOutcome::Failed, 0.0);
        warn!(path, error = %err, "origin fetch failed");
    }

    /// The `PURGE` method: refused unless configured, since on a public port it lets anyone
    /// empty the cache; when allowed, a hard purge of the request's URL on this node.
    fn purge_method(self: &Arc<Self>, parts: &Parts, key: CacheKey) -> Response<Body> {
        let mut status = CacheStatus::forward(Fwd::Bypass);
        if !self.allows_purge_method() {
            status.detail = Some("purge-method-disabled");
            let mut resp = self.error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "PURGE is disabled here; use the admin listener's POST /purge",
                status,
            );
            resp.headers_mut().insert(
                http::header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"),
            );
            warn!(uri = %parts.uri, "PURGE refused");
            return resp;
        }
        let request = edgecache_purge_api::PurgeRequest {
            urls: vec![key.as_str().to_owned()],
            ..Default::default()
        };
        self.apply_purge(&request, None, None);
        self.invalidate(&key);
        let mut resp = Response::new(Body::from("{\"purged\":true}\n"));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        respond::stamp(
            resp.headers_mut(),
            0,
            status.render(&self.status_name, None),
        );
        resp
    }

    /// True when this edge's own `Via` token is already on the request: it went round a
    /// loop of parents.
    fn is_loop(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(http::header::VIA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|hop| hop.split_whitespace().nth(1) == Some(self.status_name.as_str()))
    }

    /// Drops every variant of `key` from both tiers.
    pub(crate) fn invalidate(&self, key: &CacheKey) {
        self.memory.invalidate(key);
        if let Some(disk) = &self.disk {
            disk.invalidate(key);
        }
    }

    /// The headers of the request sent upstream for `parts`, keyed `key`.
    fn upstream_headers(
        &self,
        parts: &Parts,
        key: &CacheKey,
        peer: SocketAddr,
        purpose: Purpose,
    ) -> HeaderMap {
        let client = forward::Client {
            peer,
            proto: self.client_scheme(),
            via_name: &self.status_name,
        };
        forward::upstream_headers(&parts.headers, key, client, &self.forward.load(), purpose)
    }

    /// A request refused before anything was looked up or forwarded. An HTTP/1 connection
    /// is closed after it: its next bytes may be the refused request's content.
    fn bad_request(&self, parts: &Parts, bad: BadRequest) -> Response<Body> {
        let mut status = CacheStatus::forward(Fwd::Bypass);
        status.detail = Some(bad.detail());
        warn!(method = %parts.method, uri = %parts.uri, reason = %bad, "request refused");
        let code = if bad == BadRequest::Connect {
            StatusCode::METHOD_NOT_ALLOWED
        } else {
            StatusCode::BAD_REQUEST
        };
        let mut resp = self.error_response(code, &bad.to_string(), status);
        if parts.version < http::Version::HTTP_2 {
            resp.headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Where every edge serves the browser fallback script itself, so a page can load it even
/// when the origin is slow.
const FALLBACK_JS_PATH: &str = "/.edgecache/fallback.js";

/// Counts the body bytes of `resp` as served: at once when its length is known (every
/// response from the cache), else as its frames go out.
fn count_body_bytes(edge: &Edge, resp: Response<Body>) -> Response<Body> {
    if let Some(len) = resp.body().size_hint().exact() {
        edge.metrics.served_bytes(len);
        return resp;
    }
    let counter = edge.metrics.served_bytes_counter();
    resp.map(|body| {
        Body::from_stream(body.into_data_stream().inspect_ok(move |chunk| {
            counter.inc_by(chunk.len() as u64);
        }))
    })
}

fn fallback_js() -> Response<Body> {
    let mut resp = Response::new(Body::from(include_str!("../../assets/fallback.js")));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/javascript; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

/// A HEAD response describes the stored response when their validators and length agree
/// (RFC 9111 §4.3.5).
fn head_matches(head: &HeaderMap, stored: &CachedResponse) -> bool {
    use http::header::{CONTENT_LENGTH, ETAG, LAST_MODIFIED};
    let length = head
        .get(CONTENT_LENGTH)
        .is_none_or(|v| v.as_bytes() == stored.body_len().to_string().as_bytes());
    length
        && [ETAG, LAST_MODIFIED].iter().all(|name| {
            match (head.get(name), stored.headers.get(name)) {
                (Some(a), Some(b)) => a == b,
                (None, _) => true,
                (Some(_), None) => false,
            }
        })
}

/// True when this request has the same values as the fetch's leader for every field the
/// response varies on.
fn vary_matches(head: &FetchedHead, headers: &HeaderMap) -> bool {
    head.vary
        .iter()
        .all(|(name, value)| crate::entry::vary_value_matches(headers, name, value.as_deref()))
}
