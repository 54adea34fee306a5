//! A stored response: status, headers, body, freshness and the request headers it varies on.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{
    AGE, CONNECTION, CONTENT_LENGTH, ETAG, HeaderName, HeaderValue, LAST_MODIFIED, SET_COOKIE, VARY,
};
use http::{HeaderMap, StatusCode};

use crate::cache_control::{CacheControl, EDGECACHE_CACHE_CONTROL};
use crate::policy::{Freshness, PolicyConfig, UnixMs};
use crate::stored_head::StoredHead;

/// Cache tags set by the origin, for purge by tag.
pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
pub const CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");
/// The same names with a `'static` address, for iterators that outlive a call.
static TAG_NAMES: [HeaderName; 2] = [SURROGATE_KEY, CACHE_TAG];

/// A response held by the cache.
///
/// Every cached object pays for this struct, so it is kept small: the status code in the
/// stored head, times in milliseconds, seconds as `u32`, `Edgecache-Cache-Control` and
/// surrogate keys read from the stored fields, `Vary` values behind a thin optional box.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    /// The status code and the header fields: those sent to clients (no hop-by-hop
    /// fields, no `Age`, no `Content-Length`: it is the body's length), and the
    /// `Edgecache-Cache-Control` lines, kept to recompute freshness when a 304 updates the
    /// entry but never sent to clients (`CDN-Cache-Control` travels on, for CDNs
    /// downstream).
    pub headers: StoredHead,
    pub body: Bytes,
    pub freshness: Freshness,
    /// The request header values the response varies on, as the request sent them (a
    /// thin box: most responses do not vary, and pay 8 bytes for it).
    vary: Option<Box<VaryValues>>,
    /// When the origin exchange that stored or last refreshed this entry began: a purge
    /// at or after that instant covers it, however late the response arrived.
    pub stored_at: UnixMs,
    /// Where the body lives on the disk tier, if it was written there (boxed: most
    /// entries of a memory-only edge have none, and the reference is 48 bytes).
    pub disk: Option<Box<DiskRef>>,
}

/// Request header names and the values a variant was stored for.
pub type VaryValues = Box<[(HeaderName, Option<String>)]>;

fn boxed_vary(vary: Vec<(HeaderName, Option<String>)>) -> Option<Box<VaryValues>> {
    (!vary.is_empty()).then(|| Box::new(vary.into_boxed_slice()))
}

/// A body on the disk tier: its file, length and per-block checksums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRef {
    /// The index record's key.
    pub record: Arc<[u8]>,
    pub file: u64,
    pub len: u64,
    pub crcs: Arc<[u32]>,
}

impl CachedResponse {
    /// Builds an entry from an origin response. `headers` are the origin's headers.
    pub fn new(
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        request_headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        policy: &PolicyConfig,
    ) -> Self {
        let mut entry = Self::describe(
            status,
            headers,
            request_headers,
            request_time,
            response_time,
            policy,
        );
        entry.body = body;
        entry
    }

    /// An entry whose body is set afterwards, or held elsewhere (on the disk tier): same
    /// metadata as [`CachedResponse::new`], empty `body`.
    pub fn describe(
        status: StatusCode,
        headers: &HeaderMap,
        request_headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        policy: &PolicyConfig,
    ) -> Self {
        let fields = stored_fields(headers, policy);
        Self {
            headers: StoredHead::new(status, &fields),
            body: Bytes::new(),
            freshness: freshness_of(status, headers, request_time, response_time, policy),
            vary: boxed_vary(capture_vary(headers, request_headers)),
            stored_at: request_time.into(),
            disk: None,
        }
    }

    /// An entry from its parts, as the disk tier's index records them.
    pub(crate) fn from_parts(
        headers: StoredHead,
        freshness: Freshness,
        vary: Vec<(HeaderName, Option<String>)>,
        stored_at: UnixMs,
        disk: Option<Box<DiskRef>>,
    ) -> Self {
        Self {
            headers,
            body: Bytes::new(),
            freshness,
            vary: boxed_vary(vary),
            stored_at,
            disk,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.headers.status()
    }

    /// The request header values the response varies on, as the request sent them.
    pub fn vary(&self) -> &[(HeaderName, Option<String>)] {
        self.vary.as_deref().map_or(&[], |v| v)
    }

    /// Surrogate keys (`Surrogate-Key` / `Cache-Tag`, space- or comma-separated), for
    /// purge by tag. Read from the stored fields, so they cost no memory of their own.
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        let [surrogate_key, cache_tag] = &TAG_NAMES;
        self.headers
            .texts(surrogate_key)
            .chain(self.headers.texts(cache_tag))
            .flat_map(|v| v.split([' ', ',']))
            .filter(|t| !t.is_empty())
    }

    /// Length of the body, wherever it is held.
    pub fn body_len(&self) -> u64 {
        self.disk.as_ref().map_or(self.body.len() as u64, |d| d.len)
    }

    /// True when the body is in memory (`body`), false when only the disk tier has it.
    pub fn body_in_memory(&self) -> bool {
        self.disk
            .as_ref()
            .is_none_or(|d| d.len == self.body.len() as u64)
    }

    /// A copy refreshed by a 304 (RFC 9111 §3.2, §4.3.4): the 304's headers replace the
    /// stored ones, except `Content-Length`, which describes the stored body.
    pub fn refreshed(
        &self,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        policy: &PolicyConfig,
    ) -> Self {
        let mut merged = self.headers.to_map_with_hidden(0);
        let update = stored_fields(not_modified, policy);
        let mut replaced: Vec<HeaderName> = Vec::new();
        for (name, value) in &update {
            // The 304's own Edgecache-Cache-Control lines replace the stored ones below.
            if name == CONTENT_LENGTH || name == EDGECACHE_CACHE_CONTROL {
                continue;
            }
            if !replaced.contains(name) {
                merged.remove(name);
                replaced.push(name.clone());
            }
            merged.append(name.clone(), value.clone());
        }
        if not_modified.contains_key(EDGECACHE_CACHE_CONTROL) {
            merged.remove(EDGECACHE_CACHE_CONTROL);
            for v in not_modified.get_all(EDGECACHE_CACHE_CONTROL) {
                merged.append(EDGECACHE_CACHE_CONTROL, v.clone());
            }
        }
        // Age in a 304 is the validator's view of this response's age.
        if let Some(age) = not_modified.get(AGE) {
            merged.insert(AGE, age.clone());
        }
        let status = self.status();
        Self {
            freshness: freshness_of(status, &merged, request_time, response_time, policy),
            headers: StoredHead::new(status, &stored_fields(&merged, policy)),
            body: self.body.clone(),
            vary: self.vary.clone(),
            stored_at: request_time.into(),
            disk: self.disk.clone(),
        }
    }

    pub fn etag(&self) -> Option<HeaderValue> {
        self.headers.get(&ETAG)
    }

    pub fn last_modified(&self) -> Option<HeaderValue> {
        self.headers.get(&LAST_MODIFIED)
    }

    /// True when this entry was stored for a request with the same values of every header
    /// it varies on (RFC 9111 §4.1).
    pub fn matches(&self, request_headers: &HeaderMap) -> bool {
        self.vary()
            .iter()
            .all(|(name, stored)| vary_value_matches(request_headers, name, stored.as_deref()))
    }

    /// Approximate memory footprint, for the memory tier's weigher.
    pub fn weight(&self) -> usize {
        let headers = self.headers.heap_size();
        let vary: usize = self
            .vary()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.as_ref().map_or(0, String::len) + 48)
            .sum();
        self.body.len() + headers + vary + std::mem::size_of::<Self>()
    }
}

fn freshness_of(
    status: StatusCode,
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
    policy: &PolicyConfig,
) -> Freshness {
    let (cc, targeted) = CacheControl::for_response(headers);
    Freshness::compute(
        status,
        headers,
        &cc,
        targeted,
        request_time,
        response_time,
        policy,
    )
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) never stored nor forwarded.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authentication-info",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// The fields a message's `Connection` header names: hop-by-hop for that message.
pub fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// Removes hop-by-hop fields, including those named by `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in connection_listed(headers) {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The fields of a response the cache stores: no hop-by-hop fields, no `Age` (the cache
/// computes its own), none a qualified `no-cache="…"` or `private="…"` names (RFC 9111
/// §5.2.2.4, §5.2.2.7), and no `Content-Length`: the stored body's length is the truth
/// (the origin may have sent it chunked), and responses are given it when they are sent.
/// `Set-Cookie` is one visitor's: it is kept only when the policy says `store`.
pub(crate) fn stored_fields(headers: &HeaderMap, policy: &PolicyConfig) -> HeaderMap {
    let mut fields = headers.clone();
    strip_hop_by_hop(&mut fields);
    fields.remove(AGE);
    fields.remove(CONTENT_LENGTH);
    if !policy.keeps_set_cookie() {
        fields.remove(SET_COOKIE);
    }
    let (cc, _) = CacheControl::for_response(headers);
    for field in cc.no_cache_fields.iter().chain(&cc.private_fields) {
        fields.remove(field.as_str());
    }
    fields
}

/// The request's values for the response's `Vary` fields.
pub(crate) fn capture_vary(
    response_headers: &HeaderMap,
    request_headers: &HeaderMap,
) -> Vec<(HeaderName, Option<String>)> {
    let mut vary: Vec<(HeaderName, Option<String>)> = Vec::new();
    for value in response_headers.get_all(VARY) {
        let Ok(text) = value.to_str() else { continue };
        for field in text.split(',') {
            let Ok(name) = HeaderName::from_bytes(field.trim().as_bytes()) else {
                continue;
            };
            if !vary.iter().any(|(n, _)| *n == name) {
                let v = normalised_values(request_headers, &name);
                vary.push((name, v));
            }
        }
    }
    vary
}

/// All values of `name` joined, with whitespace around list commas removed, so that
/// `gzip, br` and `gzip,br` select the same variant.
pub(crate) fn normalised_values(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for value in headers.get_all(name) {
        let s = out.get_or_insert_with(String::new);
        for (i, part) in String::from_utf8_lossy(value.as_bytes())
            .split(',')
            .enumerate()
        {
            if !s.is_empty() || i > 0 {
                s.push(',');
            }
            s.push_str(part.trim());
        }
    }
    out
}

/// Compares the request's values of `name` with a stored [`normalised_values`] result
/// without building the normalised string: this runs on every hit of a varying response.
pub(crate) fn vary_value_matches(
    headers: &HeaderMap,
    name: &HeaderName,
    stored: Option<&str>,
) -> bool {
    let mut values = headers.get_all(name).iter().peekable();
    let Some(stored) = stored else {
        return values.peek().is_none();
    };
    if values.peek().is_none() {
        return false;
    }
    let mut expected = stored.split(',');
    for value in values {
        let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
            // Not UTF-8: fall back to the allocating comparison.
            return normalised_values(headers, name).as_deref() == Some(stored);
        };
        for part in text.split(',') {
            if expected.next() != Some(part.trim()) {
                return false;
            }
        }
    }
    expected.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{ACCEPT_ENCODING, CACHE_CONTROL};

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    fn entry(resp: &HeaderMap, req: &HeaderMap) -> CachedResponse {
        let t = SystemTime::now();
        CachedResponse::new(
            StatusCode::OK,
            resp,
            Bytes::from_static(b"body"),
            req,
            t,
            t,
            &PolicyConfig::default(),
        )
    }

    #[test]
    fn vary_matching_normalises_whitespace() {
        let e = entry(
            &h(&[("vary", "Accept-Encoding"), ("cache-control", "max-age=9")]),
            &h(&[("accept-encoding", "gzip, br")]),
        );
        assert!(e.matches(&h(&[("accept-encoding", "gzip,br")])));
        assert!(!e.matches(&h(&[("accept-encoding", "br")])));
        assert!(!e.matches(&HeaderMap::new()));
    }

    #[test]
    fn absent_vary_header_matches_absent() {
        let e = entry(&h(&[("vary", "x-foo")]), &HeaderMap::new());
        assert!(e.matches(&h(&[(ACCEPT_ENCODING.as_str(), "gzip")])));
        assert!(!e.matches(&h(&[("x-foo", "1")])));
    }

    #[test]
    fn stored_head_drop_hop_by_hop_age_and_targeted() {
        let e = entry(
            &h(&[
                ("connection", "x-secret"),
                ("x-secret", "1"),
                ("age", "5"),
                ("cdn-cache-control", "max-age=50"),
                ("edgecache-cache-control", "max-age=500"),
                ("cache-control", "max-age=5"),
            ]),
            &HeaderMap::new(),
        );
        assert!(!e.headers.contains_key("x-secret"));
        assert!(!e.headers.contains_key("age"));
        assert!(e.headers.contains_key("cdn-cache-control"));
        // Kept (a 304 recomputes freshness from it) but never sent to clients.
        assert_eq!(e.headers.hidden().count(), 1);
        assert!(!e.headers.to_map(0).contains_key("edgecache-cache-control"));
        assert_eq!(e.freshness.lifetime, 500);
        assert!(!e.headers.contains_key(CONTENT_LENGTH));
        assert_eq!(e.body_len(), 4);
    }

    #[test]
    fn qualified_no_cache_fields_are_not_stored() {
        let e = entry(
            &h(&[
                ("cache-control", "max-age=5, no-cache=\"x-drop\""),
                ("x-drop", "1"),
                ("x-keep", "2"),
            ]),
            &HeaderMap::new(),
        );
        assert!(!e.headers.contains_key("x-drop"));
        assert!(e.headers.contains_key("x-keep"));
        assert!(!e.freshness.no_cache);
    }

    #[test]
    fn refresh_replaces_headers_but_not_length() {
        let e = entry(
            &h(&[
                ("cache-control", "max-age=5"),
                ("x-a", "old"),
                ("etag", "\"1\""),
            ]),
            &HeaderMap::new(),
        );
        let t = SystemTime::now();
        let r = e.refreshed(
            &h(&[
                ("cache-control", "max-age=100"),
                ("x-a", "new"),
                ("content-length", "0"),
            ]),
            t,
            t,
            &PolicyConfig::default(),
        );
        assert_eq!(r.headers.get("x-a").unwrap(), "new");
        assert_eq!(r.headers.get(CACHE_CONTROL).unwrap(), "max-age=100");
        assert!(!r.headers.contains_key(CONTENT_LENGTH));
        assert_eq!(r.body_len(), 4);
        assert_eq!(r.freshness.lifetime, 100);
        assert_eq!(r.body, e.body);
    }

    #[test]
    fn tags_from_both_headers() {
        let e = entry(
            &h(&[("surrogate-key", "a b"), ("cache-tag", "b,c")]),
            &HeaderMap::new(),
        );
        assert_eq!(e.tags().collect::<Vec<_>>(), ["a", "b", "b", "c"]);
    }
}
