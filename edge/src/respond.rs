//! Responses built from the cache: client conditionals (304, 412), ranges (206, 416) and
//! full bodies, each with `Age` and `Cache-Status`.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{
    AGE, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_RANGE, CONTENT_TYPE, DATE, ETAG,
    EXPIRES, HeaderValue, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE,
    IF_UNMODIFIED_SINCE, LAST_MODIFIED, RANGE, VARY,
};
use http::{HeaderMap, Method, Response, StatusCode};

use crate::cache_status::CACHE_STATUS;
use crate::disk::DiskTier;
use crate::entry::CachedResponse;
use crate::policy::header_date;
use edgecache_tls::zero_copy::FileSender;

/// What a client's preconditions say about a stored representation (RFC 9110 §13.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Serve it.
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and `If-Modified-Since`
/// of a GET or HEAD against a stored 2xx response's headers.
pub fn evaluate_preconditions(
    req: &HeaderMap,
    stored: &HeaderMap,
    received_at: SystemTime,
) -> Precondition {
    // Entity tags may carry obs-text: compare them as bytes, never drop them as non-ASCII.
    // Read only when the request has a tag condition (most have none).
    let etag = || {
        stored
            .get(ETAG)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
    };
    if let Some(if_match) = req
        .get(IF_MATCH)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
    {
        let if_match = if_match.as_ref();
        let ok =
            if_match.trim() == "*" || etag().is_some_and(|e| list_contains(if_match, &e, true));
        if !ok {
            return Precondition::Failed;
        }
    } else if let Some(ius) = header_date(req, IF_UNMODIFIED_SINCE)
        && let Some(lm) = header_date(stored, LAST_MODIFIED)
        && lm > ius
    {
        return Precondition::Failed;
    }
    if let Some(inm) = req
        .get(IF_NONE_MATCH)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
    {
        let inm = inm.as_ref();
        let matched = inm.trim() == "*" || etag().is_some_and(|e| list_contains(inm, &e, false));
        return if matched {
            Precondition::NotModified
        } else {
            Precondition::Proceed
        };
    }
    if let Some(ims) = header_date(req, IF_MODIFIED_SINCE) {
        // RFC 9111 §4.3.2: Last-Modified, else Date, else when it was received.
        let modified = header_date(stored, LAST_MODIFIED)
            .or_else(|| header_date(stored, DATE))
            .unwrap_or(received_at);
        if modified <= ims {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// True when the comma-separated entity-tag `list` contains `etag`; weak comparison
/// ignores `W/` prefixes, strong comparison refuses weak tags.
fn list_contains(list: &str, etag: &str, strong: bool) -> bool {
    let etag = etag.trim();
    if strong && etag.starts_with("W/") {
        return false;
    }
    let opaque = etag.trim_start_matches("W/");
    split_etags(list).any(|candidate| {
        if strong && candidate.starts_with("W/") {
            return false;
        }
        candidate.trim_start_matches("W/") == opaque
    })
}

/// Splits an entity-tag list on the commas outside quoted tags.
fn split_etags(list: &str) -> impl Iterator<Item = &str> {
    let mut rest = list;
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return None;
        }
        let quote = rest.find('"');
        let end = match quote {
            Some(q) => rest[q + 1..]
                .find('"')
                .map_or(rest.len(), |close| q + 1 + close + 1),
            None => rest.find(',').unwrap_or(rest.len()),
        };
        let tag = rest[..end].trim();
        rest = &rest[end..];
        Some(tag)
    })
}

/// Bodies this large and up are sent straight from their disk-tier file when the connection
/// can (`sendfile` on plain HTTP/1). Below it, one `writev` of head and body from memory
/// costs less than `sendmsg` and `sendfile` (on loopback, 16 and 32 KiB hits went faster
/// with `writev`, 64 KiB ones with `sendfile`).
pub const FILE_BODY_MIN: u64 = 64 * 1024;

/// A disk tier and a connection that can send from its files.
pub type FileSend<'a> = (&'a DiskTier, &'a FileSender);

/// Answers a GET or HEAD from a stored response whose body is in memory. With `files`, a
/// large body (or single range of one) that also has a trusted disk-tier file is sent from
/// that file.
pub fn from_entry(
    entry: &Arc<CachedResponse>,
    method: &Method,
    req: &HeaderMap,
    age: u64,
    cache_status: HeaderValue,
    files: Option<FileSend<'_>>,
) -> Response<Body> {
    answer(entry, method, req, age, cache_status, None, files)
}

/// Answers a GET or HEAD from a stored response whose body is on the disk tier: only the
/// bytes asked for are read, streamed and verified block by block.
pub fn from_disk(
    entry: &Arc<CachedResponse>,
    disk: &DiskTier,
    method: &Method,
    req: &HeaderMap,
    age: u64,
    cache_status: HeaderValue,
    files: Option<&FileSender>,
) -> Response<Body> {
    let files = files.map(|sender| (disk, sender));
    answer(entry, method, req, age, cache_status, Some(disk), files)
}

fn answer(
    entry: &Arc<CachedResponse>,
    method: &Method,
    req: &HeaderMap,
    age: u64,
    cache_status: HeaderValue,
    disk: Option<&DiskTier>,
    files: Option<FileSend<'_>>,
) -> Response<Body> {
    // Built once per response: it answers the conditionals and then becomes the response's.
    let mut headers = entry.headers.to_map(3);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(entry.body_len()));
    if entry.status().is_success() {
        match evaluate_preconditions(req, &headers, entry.stored_at.into()) {
            Precondition::NotModified => {
                return not_modified(&headers, age, cache_status);
            }
            Precondition::Failed => {
                return plain(StatusCode::PRECONDITION_FAILED, age, cache_status);
            }
            Precondition::Proceed => {}
        }
    }
    if entry.status() == StatusCode::OK
        && method == Method::GET
        && let Some(range) = req.get(RANGE).and_then(|v| v.to_str().ok())
        && if_range_allows(req, &headers)
        && let Some(resp) = ranged(entry, &headers, range, age, &cache_status, disk, files)
    {
        return resp;
    }
    let len = entry.body_len();
    let body = match disk {
        _ if method == Method::HEAD || len == 0 => Body::empty(),
        _ if let Some(body) = file_body(entry, files, 0, len) => body,
        Some(d) => Body::from_stream(d.stream(entry, 0, len - 1)),
        None => Body::from(body_of(entry)),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = entry.status();
    *resp.headers_mut() = headers;
    stamp(resp.headers_mut(), age, cache_status);
    resp
}

/// The stored body, for a response: it keeps the entry alive instead of cloning the
/// entry's `Bytes`. The first clone of a `Bytes` made from a `Vec` allocates a shared
/// count (24 bytes) that then stays with the entry for as long as it is cached; this
/// allocates a small owner per response instead, freed with it.
fn body_of(entry: &Arc<CachedResponse>) -> Bytes {
    struct EntryBody(Arc<CachedResponse>);
    impl AsRef<[u8]> for EntryBody {
        fn as_ref(&self) -> &[u8] {
            &self.0.body
        }
    }
    Bytes::from_owner(EntryBody(entry.clone()))
}

/// Adds `Age` and `Cache-Status`.
pub fn stamp(headers: &mut HeaderMap, age: u64, cache_status: HeaderValue) {
    headers.insert(AGE, HeaderValue::from(age));
    headers.insert(CACHE_STATUS, cache_status);
}

/// A 304 carrying the fields RFC 9110 §15.4.5 asks for.
pub fn not_modified(stored: &HeaderMap, age: u64, cache_status: HeaderValue) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let h = resp.headers_mut();
    for name in [
        CACHE_CONTROL,
        CONTENT_LOCATION,
        DATE,
        ETAG,
        EXPIRES,
        VARY,
        LAST_MODIFIED,
    ] {
        for v in stored.get_all(&name) {
            h.append(name.clone(), v.clone());
        }
    }
    stamp(h, age, cache_status);
    resp
}

fn plain(status: StatusCode, age: u64, cache_status: HeaderValue) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = status;
    stamp(resp.headers_mut(), age, cache_status);
    resp
}

/// `If-Range` lets the range through only when it names the stored representation: a
/// strong ETag match, or the exact `Last-Modified` date (RFC 9110 §13.1.5).
fn if_range_allows(req: &HeaderMap, stored: &HeaderMap) -> bool {
    let Some(if_range) = req.get(IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let if_range = if_range.trim();
    if if_range.starts_with('"') || if_range.starts_with("W/") {
        return stored
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|e| !e.starts_with("W/") && !if_range.starts_with("W/") && e == if_range);
    }
    match (
        httpdate::parse_http_date(if_range).ok(),
        header_date(stored, LAST_MODIFIED),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// `len` bytes of the body of `entry` from `offset`, sent from its disk-tier file, when
/// there are at least [`FILE_BODY_MIN`] of them and the connection and the file allow it.
fn file_body(
    entry: &CachedResponse,
    files: Option<FileSend<'_>>,
    offset: u64,
    len: u64,
) -> Option<Body> {
    let (tier, sender) = files?;
    (len >= FILE_BODY_MIN).then(|| tier.file_body(entry, sender, offset, len))?
}

/// A 206 or 416 for `range`, or `None` when the header is not a valid byte range (it is
/// then ignored and the whole body served).
fn ranged(
    entry: &Arc<CachedResponse>,
    stored: &HeaderMap,
    range: &str,
    age: u64,
    cache_status: &HeaderValue,
    disk: Option<&DiskTier>,
    files: Option<FileSend<'_>>,
) -> Option<Response<Body>> {
    let len = entry.body_len();
    let parsed = http_range_header::parse_range_header(range).ok()?;
    let ranges = match parsed.validate(len) {
        Ok(r) if !r.is_empty() => r,
        Ok(_) | Err(http_range_header::RangeUnsatisfiableError::Unsatisfiable) => {
            let mut resp = plain(StatusCode::RANGE_NOT_SATISFIABLE, age, cache_status.clone());
            let h = resp.headers_mut();
            h.insert(CONTENT_RANGE, header_value(format!("bytes */{len}")));
            copy_validators(stored, h);
            return Some(resp);
        }
        // Overlapping or otherwise rejected ranges: serve the whole representation.
        Err(_) => return None,
    };
    let mut headers = stored.clone();
    // One range sent from the file, or read from the disk tier: streamed either way.
    let streamed = match ranges.as_slice() {
        [r] => file_body(entry, files, *r.start(), r.end() - r.start() + 1)
            .or_else(|| disk.map(|d| Body::from_stream(d.stream(entry, *r.start(), *r.end()))))
            .map(|body| (body, r)),
        _ => None,
    };
    if let Some((body, r)) = streamed {
        headers.insert(
            CONTENT_RANGE,
            header_value(format!("bytes {}-{}/{len}", r.start(), r.end())),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(r.end() - r.start() + 1));
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        *resp.headers_mut() = headers;
        stamp(resp.headers_mut(), age, cache_status.clone());
        return Some(resp);
    }
    if disk.is_some() {
        // Several ranges of a body on disk: the whole representation is a valid answer.
        return None;
    }
    let body = if let [r] = ranges.as_slice() {
        headers.insert(
            CONTENT_RANGE,
            header_value(format!("bytes {}-{}/{len}", r.start(), r.end())),
        );
        body_of(entry).slice(*r.start() as usize..=*r.end() as usize)
    } else {
        let boundary = boundary();
        let content_type = stored.get(CONTENT_TYPE).cloned();
        headers.insert(
            CONTENT_TYPE,
            header_value(format!("multipart/byteranges; boundary={boundary}")),
        );
        multipart(&entry.body, &ranges, content_type.as_ref(), &boundary)
    };
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    *resp.headers_mut() = headers;
    stamp(resp.headers_mut(), age, cache_status.clone());
    Some(resp)
}

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangePlan {
    /// One satisfiable range, inclusive.
    Single(u64, u64),
    /// Nothing satisfiable: 416.
    Unsatisfiable,
    /// Several ranges, or a header to ignore.
    Other,
}

pub fn plan_range(range: &str, len: u64) -> RangePlan {
    let Ok(parsed) = http_range_header::parse_range_header(range) else {
        return RangePlan::Other;
    };
    match parsed.validate(len) {
        Ok(r) => match r.as_slice() {
            [one] => RangePlan::Single(*one.start(), *one.end()),
            [] => RangePlan::Unsatisfiable,
            _ => RangePlan::Other,
        },
        Err(http_range_header::RangeUnsatisfiableError::Unsatisfiable) => RangePlan::Unsatisfiable,
        Err(_) => RangePlan::Other,
    }
}

/// A 206 for bytes `start..=end` of a `len`-byte representation, body supplied.
pub fn partial(
    headers: &HeaderMap,
    body: Body,
    start: u64,
    end: u64,
    len: u64,
    age: u64,
    cache_status: HeaderValue,
) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
    let h = resp.headers_mut();
    *h = headers.clone();
    h.insert(
        CONTENT_RANGE,
        header_value(format!("bytes {start}-{end}/{len}")),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(end - start + 1));
    stamp(h, age, cache_status);
    resp
}

fn copy_validators(from: &HeaderMap, to: &mut HeaderMap) {
    for name in [ETAG, LAST_MODIFIED, DATE, CACHE_CONTROL, VARY] {
        if let Some(v) = from.get(&name) {
            to.insert(name, v.clone());
        }
    }
}

/// Assembles a `multipart/byteranges` body (RFC 9110 §14.6).
fn multipart(
    body: &Bytes,
    ranges: &[std::ops::RangeInclusive<u64>],
    content_type: Option<&HeaderValue>,
    boundary: &str,
) -> Bytes {
    let len = body.len();
    let mut out = BytesMut::new();
    for r in ranges {
        out.put_slice(b"\r\n--");
        out.put_slice(boundary.as_bytes());
        out.put_slice(b"\r\n");
        if let Some(ct) = content_type {
            out.put_slice(b"Content-Type: ");
            out.put_slice(ct.as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(
            format!(
                "Content-Range: bytes {}-{}/{len}\r\n\r\n",
                r.start(),
                r.end()
            )
            .as_bytes(),
        );
        out.put_slice(&body[*r.start() as usize..=*r.end() as usize]);
    }
    out.put_slice(b"\r\n--");
    out.put_slice(boundary.as_bytes());
    out.put_slice(b"--\r\n");
    out.freeze()
}

fn boundary() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "edgecache-{:08x}{:08x}",
        nanos,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn header_value(s: String) -> HeaderValue {
    // Every caller formats digits and ASCII tokens only.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let stored = h(&[("etag", "W/\"abc\"")]);
        let now = SystemTime::now();
        assert_eq!(
            evaluate_preconditions(&h(&[("if-none-match", "\"x\", \"abc\"")]), &stored, now),
            Precondition::NotModified
        );
        assert_eq!(
            evaluate_preconditions(&h(&[("if-none-match", "\"x\"")]), &stored, now),
            Precondition::Proceed
        );
        assert_eq!(
            evaluate_preconditions(&h(&[("if-none-match", "*")]), &stored, now),
            Precondition::NotModified
        );
    }

    #[test]
    fn entity_tags_with_obs_text_compare_as_bytes() {
        let mut stored = HeaderMap::new();
        stored.insert("etag", HeaderValue::from_bytes(b"\"abc\xfc\"").unwrap());
        let mut req = HeaderMap::new();
        req.insert(
            "if-none-match",
            HeaderValue::from_bytes(b"\"abc\xfc\"").unwrap(),
        );
        let now = SystemTime::now();
        assert_eq!(
            evaluate_preconditions(&req, &stored, now),
            Precondition::NotModified
        );
        req.insert(
            "if-none-match",
            HeaderValue::from_bytes(b"\"abd\xfc\"").unwrap(),
        );
        assert_eq!(
            evaluate_preconditions(&req, &stored, now),
            Precondition::Proceed
        );
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        let now = SystemTime::now();
        let weak = h(&[("etag", "W/\"abc\"")]);
        assert_eq!(
            evaluate_preconditions(&h(&[("if-match", "W/\"abc\"")]), &weak, now),
            Precondition::Failed
        );
        let strong = h(&[("etag", "\"abc\"")]);
        assert_eq!(
            evaluate_preconditions(&h(&[("if-match", "\"abc\"")]), &strong, now),
            Precondition::Proceed
        );
    }

    #[test]
    fn if_modified_since_is_ignored_with_if_none_match() {
        let now = SystemTime::now();
        let stored = h(&[
            ("etag", "\"a\""),
            ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ]);
        let req = h(&[
            ("if-none-match", "\"b\""),
            ("if-modified-since", "Tue, 02 Jan 2024 00:00:00 GMT"),
        ]);
        assert_eq!(
            evaluate_preconditions(&req, &stored, now),
            Precondition::Proceed
        );
        let req = h(&[("if-modified-since", "Tue, 02 Jan 2024 00:00:00 GMT")]);
        assert_eq!(
            evaluate_preconditions(&req, &stored, now),
            Precondition::NotModified
        );
    }

    #[test]
    fn etag_lists_with_commas_inside_quotes() {
        let tags: Vec<_> = split_etags("\"a,b\", W/\"c\"").collect();
        assert_eq!(tags, vec!["\"a,b\"", "W/\"c\""]);
    }

    #[test]
    fn multipart_body_has_each_part() {
        let body = Bytes::from_static(b"0123456789");
        let out = multipart(&body, &[0..=1, 8..=9], None, "B");
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.contains("Content-Range: bytes 0-1/10\r\n\r\n01"));
        assert!(text.contains("Content-Range: bytes 8-9/10\r\n\r\n89"));
        assert!(text.ends_with("\r\n--B--\r\n"));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// A client's `Range` never makes the edge plan bytes outside the object.
            #[test]
            fn any_range_header_plans_within_the_object(
                range in "(bytes|BYTES|items)?=?[-0-9, ]{0,40}",
                len in 0u64..1_000_000,
            ) {
                if let RangePlan::Single(start, end) = plan_range(&range, len) {
                    prop_assert!(start <= end && end < len, "{range} on {len}: {start}-{end}");
                }
            }
        }
    }
}
