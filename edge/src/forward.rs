//! The one place that decides what the origin sees of a client request: the request is
//! checked (RFC 9112 §3.2, RFC 9110 §7.2, §9.3.6), its target normalised into the cache
//! key, and the headers sent upstream built from it: framing written for the bytes actually
//! sent, forwarding headers written by the edge, and headers that would make the origin
//! answer for something other than the key removed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::{Body, HttpBody as _};
use futures_util::TryStreamExt as _;
use http::header::{CONTENT_LENGTH, EXPECT, HOST, HeaderName, HeaderValue, TRANSFER_ENCODING};
use http::request::Parts;
use http::{HeaderMap, Method, Version};

use crate::config::ForwardingConfig;
use crate::entry::{connection_listed, is_hop_by_hop};
use crate::key::{CacheKey, KeyRules, TargetError};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// Why a request is refused before anything is looked up or forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("no Host header")]
    NoHost,
    #[error("more than one Host header")]
    ManyHosts,
    #[error("invalid Host header")]
    InvalidHost,
    #[error("the Host header and :authority disagree")]
    HostMismatch,
    #[error("{0}")]
    Target(#[from] TargetError),
    #[error("a GET or HEAD request must not carry content")]
    ContentOnSafeRead,
    #[error("a request cannot carry both Content-Length and Transfer-Encoding")]
    AmbiguousFraming,
    #[error("CONNECT is not proxied")]
    Connect,
}

impl BadRequest {
    /// A token for `Cache-Status: …; detail=…`.
    pub fn detail(self) -> &'static str {
        match self {
            Self::NoHost | Self::ManyHosts | Self::InvalidHost | Self::HostMismatch => "bad-host",
            Self::Target(_) => "bad-target",
            Self::ContentOnSafeRead => "content-on-get",
            Self::AmbiguousFraming => "bad-framing",
            Self::Connect => "connect",
        }
    }
}

/// Checks a request and builds its cache key. The key's host is the one host the request
/// is for: an absolute-form target's authority (which replaces `Host`, RFC 9112 §3.2.2),
/// HTTP/2's `:authority`, or the one `Host` header.
pub fn check_request(parts: &Parts, body: &Body, rules: &KeyRules) -> Result<CacheKey, BadRequest> {
    if parts.method == Method::CONNECT {
        return Err(BadRequest::Connect);
    }
    let mut hosts = parts.headers.get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(BadRequest::ManyHosts);
    }
    let host = match (parts.uri.authority(), header) {
        (Some(authority), header) => {
            let authority = authority.as_str();
            let http2 = parts.version >= Version::HTTP_2;
            match header {
                // HTTP/1 absolute-form: the Host field must be present and valid, but it is
                // the target's authority that names the resource.
                Some(h) if !http2 => {
                    valid_host(h.as_bytes())?;
                }
                Some(h) if !h.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) => {
                    return Err(BadRequest::HostMismatch);
                }
                None if !http2 => return Err(BadRequest::NoHost),
                _ => {}
            }
            valid_host(authority.as_bytes())?
        }
        (None, Some(h)) => valid_host(h.as_bytes())?,
        (None, None) => return Err(BadRequest::NoHost),
    };
    check_framing(parts, body)?;
    Ok(CacheKey::try_new("http", host, &parts.uri, rules)?)
}

/// A GET or HEAD with content is refused: origins disagree on whether to read it (Node, Go
/// and nginx do), and the edge would either forward a length without its bytes or key a
/// response by something the key does not hold. Both length headers at once is refused on
/// any method (RFC 9112 §6.3: a sign of smuggling).
fn check_framing(parts: &Parts, body: &Body) -> Result<(), BadRequest> {
    let chunked = parts.headers.contains_key(TRANSFER_ENCODING);
    let mut lengths = parts.headers.get_all(CONTENT_LENGTH).iter().peekable();
    if chunked && lengths.peek().is_some() {
        return Err(BadRequest::AmbiguousFraming);
    }
    if parts.method == Method::GET || parts.method == Method::HEAD {
        let declared = chunked || lengths.any(|v| v.as_bytes() != b"0");
        let has_content = !body.is_end_stream() && body.size_hint().upper() != Some(0);
        if declared || has_content {
            return Err(BadRequest::ContentOnSafeRead);
        }
    }
    Ok(())
}

/// A `Host` value as RFC 9110 §7.2 allows it: `uri-host [ ":" port ]`, without userinfo.
fn valid_host(value: &[u8]) -> Result<&str, BadRequest> {
    let text = std::str::from_utf8(value).map_err(|_| BadRequest::InvalidHost)?;
    let allowed = |b: u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
            )
    };
    if text.is_empty() || !text.bytes().all(allowed) {
        return Err(BadRequest::InvalidHost);
    }
    // A port, when there is one, is digits after the last colon outside an IPv6 literal.
    let host_end = text.rfind(']').map_or(0, |i| i + 1);
    if let Some(colon) = text[host_end..].rfind(':') {
        let port = &text[host_end + colon + 1..];
        let name = &text[..host_end + colon];
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
            return Err(BadRequest::InvalidHost);
        }
        if host_end == 0 && name.contains(':') {
            return Err(BadRequest::InvalidHost);
        }
    }
    let brackets = text.bytes().filter(|&b| b == b'[' || b == b']').count();
    if brackets != 0 && !(brackets == 2 && text.starts_with('[') && host_end > 0) {
        return Err(BadRequest::InvalidHost);
    }
    Ok(text)
}

/// What may travel upstream, from `[edge.forwarding]`.
#[derive(Debug, Clone)]
pub struct ForwardRules {
    trusted: Vec<(IpAddr, u8)>,
    strip: Vec<HeaderName>,
}

impl Default for ForwardRules {
    fn default() -> Self {
        Self::new(&ForwardingConfig::default()).unwrap_or(Self {
            trusted: Vec::new(),
            strip: Vec::new(),
        })
    }
}

impl ForwardRules {
    /// The rules of a config, or the message naming the bad entry.
    pub fn new(config: &ForwardingConfig) -> Result<Self, String> {
        let trusted = config
            .trusted_peers
            .iter()
            .enumerate()
            .map(|(i, text)| {
                parse_cidr(text)
                    .ok_or_else(|| format!("edge.forwarding.trusted_peers[{i}]: {text:?} is not an address or CIDR block"))
            })
            .collect::<Result<_, _>>()?;
        let strip = config
            .strip_headers
            .iter()
            .enumerate()
            .map(|(i, name)| {
                HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
                    format!("edge.forwarding.strip_headers[{i}]: {name:?} is not a header name")
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { trusted, strip })
    }

    /// True when `ip` is a configured trusted peer.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted
            .iter()
            .any(|&(net, bits)| in_block(ip, net, bits))
    }
}

/// `10.0.0.0/8`, `::1/128` or a bare address.
fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match text.trim().split_once('/') {
        Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
        None => (text.trim().parse::<IpAddr>().ok()?, None),
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    (bits <= max).then_some((addr, bits))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_block(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// What a request upstream is for: a fetch the cache will answer conditionals and ranges
/// from, or a pass-through that keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Fetch,
    Pass,
}

/// Who sent a request and how, for the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Client<'a> {
    pub peer: SocketAddr,
    /// The scheme the client used to reach the edge.
    pub proto: &'static str,
    /// This edge's name, for `Via`.
    pub via_name: &'a str,
}

/// The headers sent upstream for a client request whose key is `key`:
///
/// - no hop-by-hop fields, no `Host` (the origin's own is used), no `Expect`, and no framing
///   (`Content-Length`, `Transfer-Encoding`): the HTTP client writes it for the body it
///   sends, and a pass-through body's exact length is set by [`ClientBody`];
/// - `X-Forwarded-Host` is the key's host, `X-Forwarded-Proto` the scheme the client used,
///   `X-Forwarded-For` the peer's address, and `Forwarded` (RFC 7239) says all three; a
///   trusted peer's values are kept and extended instead;
/// - the configured strip list is removed, and for a fetch the client's validators and
///   ranges too (the edge answers those itself).
pub fn upstream_headers(
    client_headers: &HeaderMap,
    key: &CacheKey,
    client: Client<'_>,
    rules: &ForwardRules,
    purpose: Purpose,
) -> HeaderMap {
    let trusted = rules.trusts(client.peer.ip());
    let mut out = HeaderMap::with_capacity(client_headers.len() + 4);
    let listed = connection_listed(client_headers);
    for (name, value) in client_headers {
        let forwarding = name == X_FORWARDED_FOR
            || name == X_FORWARDED_HOST
            || name == X_FORWARDED_PROTO
            || name == FORWARDED;
        if is_hop_by_hop(name)
            || name == HOST
            || name == CONTENT_LENGTH
            || name == EXPECT
            || (forwarding && !trusted)
            || listed.contains(name)
            || rules.strip.contains(name)
            || (purpose == Purpose::Fetch && is_conditional(name))
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    // RFC 9110 §7.6.3: every proxy adds itself to Via (and it lets a tier of edgecache
    // nodes see loops).
    let via = match out.get(http::header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, 1.1 {}", client.via_name),
        None => format!("1.1 {}", client.via_name),
    };
    if let Ok(v) = HeaderValue::from_str(&via) {
        out.insert(http::header::VIA, v);
    }
    let host = key.host();
    if !out.contains_key(X_FORWARDED_HOST)
        && let Ok(v) = HeaderValue::from_str(host)
    {
        out.insert(X_FORWARDED_HOST, v);
    }
    if !out.contains_key(X_FORWARDED_PROTO) {
        out.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.proto));
    }
    let ip = canonical(client.peer.ip());
    let chain = match out.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&chain) {
        out.insert(X_FORWARDED_FOR, v);
    }
    let node = match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    };
    let element = format!("for={node};host=\"{host}\";proto={}", client.proto);
    let forwarded = match out.get(FORWARDED).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {element}"),
        None => element,
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded) {
        out.insert(FORWARDED, v);
    }
    out
}

fn is_conditional(name: &HeaderName) -> bool {
    use http::header::{
        IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
    };
    [
        IF_MATCH,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
    ]
    .contains(name)
}

/// A client's request body on its way to the origin, and whether reading it failed: a
/// malformed body (a broken chunk, a short read) is the client's fault, answered 400, and
/// must not count against the origin's health.
pub struct ClientBody {
    pub body: Option<reqwest::Body>,
    /// Its exact length, when the client declared one: sent as `Content-Length` so the
    /// origin sees the framing of the bytes that follow, not chunked.
    pub len: Option<u64>,
    /// Turns true if reading the client's body fails.
    pub(crate) failed: Arc<AtomicBool>,
}

impl ClientBody {
    pub fn new(body: Body) -> Self {
        let len = body.size_hint().exact();
        let failed = Arc::new(AtomicBool::new(false));
        let body = if body.is_end_stream() {
            None
        } else {
            let flag = failed.clone();
            let stream = body
                .into_data_stream()
                .inspect_err(move |_| flag.store(true, Ordering::Release));
            Some(reqwest::Body::wrap_stream(stream))
        };
        Self { body, len, failed }
    }

    /// Writes the body's framing into the upstream headers.
    pub fn frame(&self, method: &Method, headers: &mut HeaderMap) {
        match self.len {
            Some(len) if len > 0 || self.body.is_none() && method_has_content(method) => {
                headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            }
            _ => {}
        }
    }
}

/// Methods whose requests normally carry content: an empty one is sent as
/// `Content-Length: 0` rather than with no framing at all.
fn method_has_content(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::Request<()>) -> Parts {
        req.into_parts().0
    }

    fn check(req: http::Request<()>) -> Result<CacheKey, BadRequest> {
        check_request(&parts(req), &Body::empty(), &KeyRules::default())
    }

    fn get(uri: &str) -> http::request::Builder {
        http::Request::get(uri)
    }

    #[test]
    fn host_rules() {
        let ok = check(get("/a").header("host", "A.test").body(()).unwrap()).unwrap();
        assert_eq!(ok.as_str(), "http://a.test/a");
        assert_eq!(check(get("/a").body(()).unwrap()), Err(BadRequest::NoHost));
        let two = get("/a")
            .header("host", "a.test")
            .header("host", "b.test")
            .body(())
            .unwrap();
        assert_eq!(check(two), Err(BadRequest::ManyHosts));
        for bad in [
            "a b",
            "user@a.test",
            "a.test:",
            "a.test:x",
            ":80",
            "a/b",
            "",
            "[::1",
        ] {
            let r = get("/a").header("host", bad).body(()).unwrap();
            assert_eq!(check(r), Err(BadRequest::InvalidHost), "{bad:?}");
        }
        for good in ["a.test:8080", "[::1]:8080", "[::1]", "127.0.0.1"] {
            let r = get("/a").header("host", good).body(()).unwrap();
            assert!(check(r).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn absolute_form_authority_replaces_host() {
        let r = get("http://victim.test/p")
            .header("host", "evil.attacker")
            .body(())
            .unwrap();
        assert_eq!(check(r).unwrap().as_str(), "http://victim.test/p");
        // HTTP/2: :authority and a differing Host is malformed.
        let r = get("http://victim.test/p")
            .version(Version::HTTP_2)
            .header("host", "evil.attacker")
            .body(())
            .unwrap();
        assert_eq!(check(r), Err(BadRequest::HostMismatch));
        let r = get("http://victim.test/p")
            .version(Version::HTTP_2)
            .body(())
            .unwrap();
        assert_eq!(check(r).unwrap().as_str(), "http://victim.test/p");
    }

    #[test]
    fn content_on_get_and_connect_are_refused() {
        let r = get("/a")
            .header("host", "a")
            .header("content-length", "29")
            .body(())
            .unwrap();
        assert_eq!(check(r), Err(BadRequest::ContentOnSafeRead));
        let r = get("/a")
            .header("host", "a")
            .header("content-length", "0")
            .body(())
            .unwrap();
        assert!(check(r).is_ok());
        let p = parts(get("/a").header("host", "a").body(()).unwrap());
        let with_bytes = Body::from("x".repeat(29));
        assert_eq!(
            check_request(&p, &with_bytes, &KeyRules::default()),
            Err(BadRequest::ContentOnSafeRead)
        );
        let r = http::Request::post("/a")
            .header("host", "a")
            .header("content-length", "3")
            .header("transfer-encoding", "chunked")
            .body(())
            .unwrap();
        assert_eq!(check(r), Err(BadRequest::AmbiguousFraming));
        let r = http::Request::builder()
            .method(Method::CONNECT)
            .uri("victim.test:443")
            .header("host", "victim.test:443")
            .body(())
            .unwrap();
        assert_eq!(check(r), Err(BadRequest::Connect));
    }

    fn forwarded(headers: &[(&str, &str)], rules: &ForwardRules) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let key = CacheKey::new(
            "http",
            "cdn.test",
            &"/a".parse().unwrap(),
            &KeyRules::default(),
        );
        let client = Client {
            peer: "127.0.0.9:1234".parse().unwrap(),
            proto: "http",
            via_name: "edgecache-x",
        };
        upstream_headers(&h, &key, client, rules, Purpose::Fetch)
    }

    #[test]
    fn forwarding_headers_are_written_by_the_edge() {
        let spoofed = [
            ("connection", "x-private"),
            ("x-private", "1"),
            ("host", "cdn.test"),
            ("content-length", "29"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "evil.test"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6"),
            ("x-original-url", "/admin"),
            ("x-http-method-override", "DELETE"),
            ("if-none-match", "\"x\""),
            ("accept", "*/*"),
        ];
        let out = forwarded(&spoofed, &ForwardRules::default());
        for gone in [
            "x-private",
            "host",
            "content-length",
            "x-original-url",
            "x-http-method-override",
            "if-none-match",
        ] {
            assert!(!out.contains_key(gone), "{gone}");
        }
        assert_eq!(out["x-forwarded-for"], "127.0.0.9");
        assert_eq!(out["x-forwarded-host"], "cdn.test");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(
            out["forwarded"],
            "for=127.0.0.9;host=\"cdn.test\";proto=http"
        );
        assert_eq!(out["via"], "1.1 edgecache-x");
        assert_eq!(out["accept"], "*/*");

        let trusting = ForwardRules::new(&ForwardingConfig {
            trusted_peers: vec!["127.0.0.0/8".into()],
            ..ForwardingConfig::default()
        })
        .unwrap();
        let out = forwarded(&spoofed, &trusting);
        assert_eq!(out["x-forwarded-for"], "6.6.6.6, 127.0.0.9");
        assert_eq!(out["x-forwarded-host"], "evil.test");
        assert_eq!(out["x-forwarded-proto"], "https");
        assert_eq!(
            out["forwarded"],
            "for=6.6.6.6, for=127.0.0.9;host=\"cdn.test\";proto=http"
        );
        assert!(!out.contains_key("x-original-url"));
    }

    #[test]
    fn trusted_peers_parse_and_match() {
        let rules = ForwardRules::new(&ForwardingConfig {
            trusted_peers: vec!["10.0.0.0/8".into(), "::1".into(), "192.0.2.7".into()],
            ..ForwardingConfig::default()
        })
        .unwrap();
        assert!(rules.trusts("10.200.3.4".parse().unwrap()));
        assert!(rules.trusts("::ffff:10.1.1.1".parse().unwrap()));
        assert!(rules.trusts("::1".parse().unwrap()));
        assert!(rules.trusts("192.0.2.7".parse().unwrap()));
        assert!(!rules.trusts("192.0.2.8".parse().unwrap()));
        assert!(!rules.trusts("11.0.0.1".parse().unwrap()));
        let bad = ForwardRules::new(&ForwardingConfig {
            trusted_peers: vec!["10.0.0.0/33".into()],
            ..ForwardingConfig::default()
        });
        assert!(bad.unwrap_err().contains("trusted_peers[0]"));
    }
}
