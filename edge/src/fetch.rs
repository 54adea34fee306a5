//! The origin fetch behind a miss or a revalidation: one per key at a time, run as its own
//! task so a client that goes away does not cancel it for the others or for the cache.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures_util::StreamExt;
use http::header::{AGE, CONTENT_LENGTH, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, SET_COOKIE};
use http::{HeaderMap, Method, StatusCode};
use tracing::{debug, warn};

use crate::cache_control::CacheControl;
use crate::cache_control::EDGECACHE_CACHE_CONTROL;
use crate::coalesce::{FetchedHead, Inflight, Outcome};
use crate::entry::{CachedResponse, capture_vary, strip_hop_by_hop};
use crate::error::UpstreamError;
use crate::key::CacheKey;
use crate::metrics::FetchOutcome;
use crate::node::Edge;
use crate::policy::{Freshness, set_cookie_allows, storable};

/// What the fetch task needs from the request that started it.
pub struct FetchRequest {
    pub path_and_query: String,
    /// The client's headers, for storability (`Authorization`, `no-store`) and `Vary`.
    pub client_headers: HeaderMap,
    /// The headers sent to the origin.
    pub headers: HeaderMap,
    /// The stale entry being revalidated, if any.
    pub stale: Option<Arc<CachedResponse>>,
}

/// Makes sure waiters are released however the fetch ends, even by a panic.
struct Completion {
    edge: Arc<Edge>,
    key: CacheKey,
    inflight: Arc<Inflight>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.inflight
            .set_outcome_if_unset(Outcome::Failed(UpstreamError::Protocol(
                "fetch ended early".into(),
            )));
        self.inflight
            .finish_if_open(Err("fetch ended early".into()));
        self.edge.coalescer.release(&self.key, &self.inflight);
    }
}

impl Edge {
    /// Fetches `key` from the origin, publishes the outcome to everyone waiting on
    /// `inflight`, and stores what may be stored.
    pub(crate) async fn run_fetch(
        self: Arc<Self>,
        key: CacheKey,
        inflight: Arc<Inflight>,
        request: FetchRequest,
    ) {
        let done = Completion {
            edge: self.clone(),
            key,
            inflight,
        };
        let mut headers = request.headers.clone();
        if let Some(stale) = &request.stale {
            if let Some(etag) = stale.etag() {
                headers.insert(IF_NONE_MATCH, etag.clone());
            }
            if let Some(lm) = stale.last_modified() {
                headers.insert(IF_MODIFIED_SINCE, lm.clone());
            }
        }
        let request_time = SystemTime::now();
        let started = Instant::now();
        let mut result = self
            .upstream
            .send(Method::GET, &request.path_and_query, headers, None)
            .await;
        if let (Ok(resp), Some(stale)) = (&result, &request.stale)
            && resp.status() == StatusCode::NOT_MODIFIED
            && !validator_matches(resp.headers(), stale)
        {
            // A 304 for a different representation cannot refresh ours: fetch it whole.
            debug!(key = %done.key, "304 names another representation; refetching");
            result = self
                .upstream
                .send(
                    Method::GET,
                    &request.path_and_query,
                    request.headers.clone(),
                    None,
                )
                .await;
        }
        let resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                self.record_failure(&err, &request.path_and_query);
                done.inflight.set_outcome(Outcome::Failed(err));
                return;
            }
        };
        self.record_fetch(resp.status(), started);
        let response_time = SystemTime::now();
        let status = resp.status();

        if status == StatusCode::NOT_MODIFIED
            && let Some(stale) = &request.stale
        {
            let refreshed = Arc::new(stale.refreshed(
                resp.headers(),
                request_time,
                response_time,
                &self.policy(),
            ));
            self.memory.store(&done.key, refreshed.clone());
            if let Some(disk) = &self.disk
                && refreshed.disk.is_some()
            {
                // Written before anyone is answered: a request after that answer must find
                // the refreshed record, not revalidate the old one again.
                let (disk, entry) = (disk.clone(), refreshed.clone());
                let written = tokio::task::spawn_blocking(move || disk.update(&entry)).await;
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "disk metadata update failed"),
                    Err(e) => warn!(error = %e, "disk metadata update did not run"),
                }
            }
            done.inflight.set_outcome(Outcome::Refreshed(refreshed));
            return;
        }

        let origin_headers = resp.headers().clone();
        let (cc, targeted) = CacheControl::for_response(&origin_headers);
        let req_cc = CacheControl::for_request(&request.client_headers);
        let not_storable = storable(
            &Method::GET,
            &request.client_headers,
            &req_cc,
            status,
            &origin_headers,
            &cc,
            targeted,
        )
        .err();
        // A 5xx while revalidating must not push out the entry that stale-if-error may need,
        // nor may an unstorable answer (RFC 9111 leaves the stored response in place).
        let replaces_stale = request.stale.is_some();
        let freshness = Freshness::compute(
            status,
            &origin_headers,
            &cc,
            targeted,
            request_time,
            response_time,
            &self.policy(),
        );
        let policy = self.policy();
        let not_storable =
            not_storable.or_else(|| set_cookie_allows(&policy, &origin_headers, &freshness).err());
        let keep = not_storable.is_none()
            && !(replaces_stale && status.is_server_error())
            && worth_storing(&freshness, &origin_headers, response_time);
        let max = self.memory.max_object_size() as u64;
        let length = content_length(&origin_headers);
        let fits_memory = length.is_some_and(|n| n <= max);
        // Bodies that may outgrow the memory tier go straight to a disk-tier file, which
        // every waiter follows: memory use stays flat whatever the object's size.
        let mut writer = match &self.disk {
            Some(disk) if keep && !fits_memory && disk.fits(length.unwrap_or(0)) => {
                match disk.writer() {
                    Ok(w) => Some(w),
                    Err(e) => {
                        warn!(key = %done.key, error = %e, "cannot write to the disk tier");
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(w) = &writer {
            done.inflight.set_file(w.reader());
        }
        let mut client_headers = origin_headers.clone();
        strip_hop_by_hop(&mut client_headers);
        client_headers.remove(AGE);
        client_headers.remove(EDGECACHE_CACHE_CONTROL);
        let head = FetchedHead {
            status,
            headers: client_headers,
            // One visitor's cookie reaches the client whose request fetched it, never
            // the clients that joined the fetch.
            unshared_fields: cc
                .no_cache_fields
                .iter()
                .chain(&cc.private_fields)
                .cloned()
                .chain(
                    (!policy.keeps_set_cookie() && origin_headers.contains_key(SET_COOKIE))
                        .then(|| "set-cookie".to_owned()),
                )
                .collect(),
            stored: keep
                && (fits_memory || writer.is_some() || (length.is_none() && self.disk.is_none())),
            freshness,
            not_storable,
            vary: capture_vary(&origin_headers, &request.client_headers),
            replaced_stale: replaces_stale,
        };
        let shareable = head.shareable();
        done.inflight.set_outcome(Outcome::Response(Arc::new(head)));
        if !shareable {
            self.coalescer.release(&done.key, &done.inflight);
        }

        let describe = || {
            CachedResponse::describe(
                status,
                &origin_headers,
                &request.client_headers,
                request_time,
                response_time,
                &self.policy(),
            )
        };
        let mut stored = false;
        let mut received: u64 = 0;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    let err = UpstreamError::from_reqwest(&e);
                    warn!(key = %done.key, error = %err, received, "origin body cut short");
                    if let Some(w) = writer.take() {
                        w.abandon();
                    }
                    done.inflight.finish(Err(err.to_string()));
                    return;
                }
            };
            received += chunk.len() as u64;
            match writer.as_mut() {
                Some(w) => {
                    // Page-cache writes of one chunk: short enough to do in place.
                    if let Err(e) = w.write(&chunk) {
                        warn!(key = %done.key, error = %e, "disk tier write failed");
                        if let Some(w) = writer.take() {
                            w.abandon();
                        }
                        done.inflight
                            .finish(Err(format!("disk tier write failed: {e}")));
                        return;
                    }
                    done.inflight.file_written(w.len());
                }
                None => {
                    // The origin's last declared byte: the entry is stored before any client
                    // can have the whole body, so a request right after one finds it.
                    if keep && length == Some(received) && received <= max {
                        let mut entry = describe();
                        entry.body = done.inflight.body_with(&chunk);
                        self.keep_in_memory(&done.key, entry);
                        stored = true;
                    }
                    done.inflight.push_chunk(chunk);
                }
            }
        }
        if let Some(w) = writer {
            // Clients have every byte already; making the file durable can follow.
            done.inflight.finish(Ok(()));
            let entry = describe();
            let (disk, key) = (self.disk.clone(), done.key.clone());
            let committed =
                tokio::task::spawn_blocking(move || disk.map(|d| d.commit(&key, &entry, w))).await;
            if let Ok(Some(Err(e))) = committed {
                warn!(key = %done.key, error = %e, "disk tier commit failed");
            }
            return;
        }
        // Stored before the end is announced: a waiter cutting a range from the stored copy
        // must find it there.
        if keep && !stored && received <= max {
            let mut entry = describe();
            entry.body = done.inflight.body_so_far();
            self.keep_in_memory(&done.key, entry);
        }
        done.inflight.finish(Ok(()));
    }

    /// Stores a fetched entry in the memory tier, and copies it to the disk tier behind.
    fn keep_in_memory(self: &Arc<Self>, key: &CacheKey, entry: CachedResponse) {
        let entry = Arc::new(entry);
        self.memory.store(key, entry.clone());
        if let Some(disk) = self.disk.clone() {
            self.write_behind(disk, key.clone(), entry);
        }
    }

    /// Copies an entry held in memory to the disk tier, then gives the memory copy its
    /// disk reference (so a 304 can update both).
    fn write_behind(
        self: &Arc<Self>,
        disk: crate::disk::DiskTier,
        key: CacheKey,
        entry: Arc<CachedResponse>,
    ) {
        let edge = self.clone();
        tokio::task::spawn_blocking(move || match disk.store_whole(&key, &entry) {
            Ok(stored) => {
                if let crate::memory::Lookup::Found(current) =
                    edge.memory.lookup_exact(&key, &entry)
                {
                    edge.memory.store(&key, Arc::new(stored));
                    drop(current);
                }
            }
            Err(e) => warn!(key = %key, error = %e, "disk tier write failed"),
        });
    }

    pub(crate) fn record_fetch(&self, status: StatusCode, started: Instant) {
        let outcome = if status == StatusCode::NOT_MODIFIED {
            FetchOutcome::NotModified
        } else if status.is_server_error() {
            FetchOutcome::ServerError
        } else {
            FetchOutcome::Ok
        };
        self.metrics.fetch(outcome, started.elapsed().as_secs_f64());
    }
}

/// A 304 may refresh the stored response only if its strong validator, when it has one,
/// is the stored one (RFC 9111 §4.3.4).
fn validator_matches(not_modified: &HeaderMap, stored: &CachedResponse) -> bool {
    match (not_modified.get(ETAG), stored.etag()) {
        (Some(new), Some(old)) => {
            new.as_bytes().strip_prefix(b"W/").unwrap_or(new.as_bytes())
                == old.as_bytes().strip_prefix(b"W/").unwrap_or(old.as_bytes())
        }
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// A response that is stale on arrival, cannot be revalidated and names no stale window
/// would only ever be refetched: it is not worth the memory.
fn worth_storing(freshness: &Freshness, headers: &HeaderMap, arrived: SystemTime) -> bool {
    freshness.is_fresh(arrived)
        || headers.contains_key(ETAG)
        || headers.contains_key(http::header::LAST_MODIFIED)
        || freshness.stale_while_revalidate > 0
        || freshness.stale_if_error > 0
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
