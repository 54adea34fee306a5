//! Cache keys: scheme + host + normalised path + normalised query, and the one
//! normalisation of request targets that the key, purge rules and the upstream request
//! all use.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use http::Uri;

/// Query parameters left out of the key; a trailing `*` matches any suffix.
#[derive(Debug, Clone)]
pub struct KeyRules {
    ignored: Vec<String>,
}

impl Default for KeyRules {
    fn default() -> Self {
        Self::new(["utm_*", "fbclid", "gclid"])
    }
}

impl KeyRules {
    pub fn new<S: Into<String>>(ignored: impl IntoIterator<Item = S>) -> Self {
        Self {
            ignored: ignored.into_iter().map(Into::into).collect(),
        }
    }

    fn ignores(&self, name: &str) -> bool {
        self.ignored
            .iter()
            .any(|rule| match rule.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == rule,
            })
    }
}

/// A normalised cache key, e.g. `http://example.com/app.js?a=1&v=2`.
///
/// Only the text is kept (16 bytes and the text, for every cached object): the path
/// starts at the first `/` after `://`, which the host cannot contain (see
/// [`push_host`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey {
    text: Box<str>,
}

impl CacheKey {
    /// Builds the key of a request for `uri` arriving with `host` (the `Host` header, or the
    /// URI's authority for absolute-form requests). A path that cannot be normalised (see
    /// [`normalise_path`]) is kept as written: requests with one are refused before they
    /// are keyed, so only a purge rule can carry one, and it then matches nothing.
    pub fn new(scheme: &str, host: &str, uri: &Uri, rules: &KeyRules) -> Self {
        match Self::try_new(scheme, host, uri, rules) {
            Ok(key) => key,
            Err(_) => Self::build(scheme, host, uri.path(), uri.query(), rules),
        }
    }

    /// Builds the key of a request, or says why its path cannot be keyed.
    pub fn try_new(
        scheme: &str,
        host: &str,
        uri: &Uri,
        rules: &KeyRules,
    ) -> Result<Self, TargetError> {
        let path = normalise_path(uri.path())?;
        Ok(Self::build(scheme, host, &path, uri.query(), rules))
    }

    fn build(scheme: &str, host: &str, path: &str, query: Option<&str>, rules: &KeyRules) -> Self {
        // Exact unless the host is percent-encoded or query parameters are dropped: the
        // text becomes a `Box<str>`, which reallocates when there is spare room.
        let host = without_default_port(scheme, host);
        let query_len = query.map_or(0, |q| q.len() + 1);
        let mut text =
            String::with_capacity(scheme.len() + 3 + host.len() + path.len().max(1) + query_len);
        text.push_str(scheme);
        text.push_str("://");
        push_host(&mut text, host);
        text.push_str(if path.is_empty() { "/" } else { path });
        if let Some(query) = query {
            push_query(&mut text, query, rules);
        }
        Self { text: text.into() }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Rebuilds a key from its text (as stored by the disk tier).
    pub fn from_stored(text: &str) -> Option<Self> {
        path_start(text)?;
        Some(Self { text: text.into() })
    }

    /// Byte offset where the path begins. Every key has one: `new` writes a `/` after the
    /// host and `from_stored` refuses text without.
    fn path_at(&self) -> usize {
        path_start(&self.text).unwrap_or(self.text.len())
    }

    /// Path and normalised query, e.g. `/app.js?v=2`.
    pub fn path_and_query(&self) -> &str {
        &self.text[self.path_at()..]
    }

    /// `scheme://host`.
    pub fn origin(&self) -> &str {
        &self.text[..self.path_at()]
    }

    /// The host (and port, unless the scheme's default) as keyed: lower-cased.
    pub fn host(&self) -> &str {
        let origin = self.origin();
        origin.split_once("://").map_or(origin, |(_, host)| host)
    }

    /// Size in bytes, for the memory tier's weigher.
    pub fn weight(&self) -> usize {
        self.text.len()
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a request target cannot be keyed: it is ambiguous, and origins disagree on what it
/// names, so it is refused rather than guessed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// `\` is a separator to some servers (IIS, some frameworks) and a plain byte to others.
    #[error("a backslash in the path is ambiguous; encode it as %5C")]
    Backslash,
    #[error("malformed percent-encoding in the path")]
    BadPercent,
}

/// The one normalisation of a request path, for the key, purge rules and the request sent
/// upstream (RFC 3986 §6.2.2):
///
/// - percent-encoded unreserved characters are decoded (`%7E` → `~`, `%2e` → `.`), and every
///   other percent-encoding is written with upper-case hex (`%2f` → `%2F`);
/// - dot segments are removed (§5.2.4) after that decoding, so `/x/../p`, `/x/%2e%2e/p`
///   and `/./p` are all `/p`;
/// - `%2F` and `%5C` stay encoded: they are data, never separators;
/// - a raw `\` or a malformed percent-encoding is an error.
///
/// Paths that need none of this (nearly all) are returned borrowed.
pub fn normalise_path(path: &str) -> Result<Cow<'_, str>, TargetError> {
    let bytes = path.as_bytes();
    if bytes.contains(&b'\\') {
        return Err(TargetError::Backslash);
    }
    let encoded = bytes.contains(&b'%');
    if !encoded && !has_dot_segment(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = if encoded {
        Cow::Owned(decode_unreserved(bytes)?)
    } else {
        Cow::Borrowed(path)
    };
    if !decoded.starts_with('/') || !has_dot_segment(&decoded) {
        return Ok(Cow::Owned(decoded.into_owned()));
    }
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

fn has_dot_segment(path: &str) -> bool {
    path.contains("/.") && path.split('/').any(|s| s == "." || s == "..")
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn decode_unreserved(bytes: &[u8]) -> Result<String, TargetError> {
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(TargetError::BadPercent);
        };
        let value = hi << 4 | lo;
        if is_unreserved(value) {
            out.push(char::from(value));
        } else {
            let _ = write!(out, "%{value:02X}");
        }
        i += 3;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 for an absolute path: `.` segments go, `..` removes the one before it
/// (never above the root), and a path ending in a dot segment keeps its trailing `/`.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path[1..].split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        if last {
            out.push("");
        }
    }
    let mut text = String::with_capacity(path.len());
    for s in out {
        text.push('/');
        text.push_str(s);
    }
    if text.is_empty() {
        text.push('/');
    }
    text
}

/// Where the path of a key's text begins: the first `/` after `://`.
fn path_start(text: &str) -> Option<usize> {
    let after_scheme = text.find("://")? + 3;
    Some(after_scheme + text[after_scheme..].find('/')?)
}

/// The host without surrounding whitespace and without the scheme's default port.
fn without_default_port<'a>(scheme: &str, host: &'a str) -> &'a str {
    let host = host.trim();
    let default_port = match scheme {
        "https" => ":443",
        _ => ":80",
    };
    host.strip_suffix(default_port).unwrap_or(host)
}

/// Appends the host lower-cased. Bytes a host cannot contain (`/`, `?`, `#`, `%`,
/// controls, spaces, non-ASCII: a `Host` header is not checked by the HTTP parser) are
/// percent-encoded, so `Host: a/b` with path `/x` can never share a key with `Host: a`
/// and path `/b/x`.
fn push_host(out: &mut String, host: &str) {
    for b in host.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'/' | b'?' | b'#' | b'%') {
            out.push(char::from(b.to_ascii_lowercase()));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn param_name(p: &str) -> &str {
    p.split_once('=').map_or(p, |(n, _)| n)
}

/// Appends `?` and the query's parameters sorted, minus ignored ones. The order among equal
/// names is kept, since `a=1&a=2` and `a=2&a=1` may mean different things to an origin.
fn push_query(text: &mut String, query: &str, rules: &KeyRules) {
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter(|p| !rules.ignores(p.split_once('=').map_or(*p, |(name, _)| name)))
        .collect();
    if params.is_empty() {
        return;
    }
    params.sort_by(|a, b| param_name(a).cmp(param_name(b)));
    text.push('?');
    for (i, p) in params.iter().enumerate() {
        if i > 0 {
            text.push('&');
        }
        text.push_str(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(host: &str, uri: &str) -> CacheKey {
        CacheKey::new("http", host, &uri.parse().unwrap(), &KeyRules::default())
    }

    #[test]
    fn query_is_sorted() {
        assert_eq!(
            key("a.test", "/x?b=2&a=1").as_str(),
            "http://a.test/x?a=1&b=2"
        );
    }

    #[test]
    fn tracking_parameters_are_dropped() {
        assert_eq!(
            key("a.test", "/x?utm_source=m&v=2&fbclid=z&gclid=q").as_str(),
            "http://a.test/x?v=2"
        );
        assert_eq!(
            key("a.test", "/x?utm_campaign=q").as_str(),
            "http://a.test/x"
        );
    }

    #[test]
    fn versions_stay_distinct() {
        assert_ne!(key("a", "/app.js?v=1"), key("a", "/app.js?v=2"));
        assert_ne!(key("a", "/app.3f9c2a.js"), key("a", "/app.js"));
    }

    #[test]
    fn host_is_normalised() {
        assert_eq!(key("A.Test:80", "/").as_str(), "http://a.test/");
        assert_eq!(key("a.test:8080", "/").as_str(), "http://a.test:8080/");
    }

    #[test]
    fn repeated_names_keep_their_order() {
        assert_eq!(
            key("a", "/x?b=1&a=2&a=1").path_and_query(),
            "/x?a=2&a=1&b=1"
        );
    }

    #[test]
    fn a_host_cannot_reach_into_the_path() {
        let odd = key("a/b", "/x");
        assert_eq!(odd.as_str(), "http://a%2Fb/x");
        assert_ne!(odd, key("a", "/b/x"));
        assert_eq!(odd.path_and_query(), "/x");
        assert_eq!(odd.origin(), "http://a%2Fb");
        assert_eq!(key("a?b #%", "/").as_str(), "http://a%3Fb%20%23%25/");
        assert_eq!(key("[::1]:8080", "/").as_str(), "http://[::1]:8080/");
    }

    #[test]
    fn stored_text_round_trips() {
        let k = key("a.test:8080", "/p?q=1");
        assert_eq!(CacheKey::from_stored(k.as_str()), Some(k));
        assert_eq!(CacheKey::from_stored("nonsense"), None);
    }

    #[test]
    fn dot_segments_and_encodings_have_one_form() {
        for alias in [
            "/p",
            "/x/../p",
            "/x/%2e%2e/p",
            "/x/%2E%2E/p",
            "/x/.%2e/p",
            "/./p",
            "/%70",
            "/../p",
            "/a/b/../../p",
        ] {
            assert_eq!(key("a", alias).as_str(), "http://a/p", "{alias}");
        }
        assert_eq!(key("a", "/a/b/..").path_and_query(), "/a/");
        assert_eq!(key("a", "/a/.").path_and_query(), "/a/");
        assert_eq!(key("a", "/a//b/../c").path_and_query(), "/a//c");
        assert_eq!(key("a", "/%7e%41").path_and_query(), "/~A");
        // Reserved characters stay encoded, in upper-case hex: `%2F` is never a separator.
        assert_eq!(key("a", "/a%2fb").path_and_query(), "/a%2Fb");
        assert_ne!(key("a", "/a%2Fb"), key("a", "/a/b"));
        assert_eq!(key("a", "/x/%2e%2e%2fp").path_and_query(), "/x/..%2Fp");
        assert_eq!(
            key("a", "/.well-known/x").path_and_query(),
            "/.well-known/x"
        );
        assert_eq!(key("a", "/..a/b").path_and_query(), "/..a/b");
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        assert_eq!(normalise_path("/x\\..\\p"), Err(TargetError::Backslash));
        for bad in ["/a%zz", "/a%4", "/a%", "/%g0"] {
            assert_eq!(normalise_path(bad), Err(TargetError::BadPercent), "{bad}");
        }
        assert!(matches!(
            normalise_path("/plain/path.js"),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn parts() {
        let k = key("a.test", "/p?q=1");
        assert_eq!(k.origin(), "http://a.test");
        assert_eq!(k.path_and_query(), "/p?q=1");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Path segments made of the bytes that matter: dots, encodings of dots and of
        /// unreserved and reserved characters, plain names, empty segments.
        fn segment() -> impl Strategy<Value = String> {
            prop_oneof![
                Just(String::new()),
                Just(".".to_owned()),
                Just("..".to_owned()),
                Just("%2e".to_owned()),
                Just("%2E%2e".to_owned()),
                Just(".%2e".to_owned()),
                Just("%2F".to_owned()),
                Just("%2f".to_owned()),
                Just("%41".to_owned()),
                Just("%7e".to_owned()),
                "[a-z0-9._~-]{1,6}",
            ]
        }

        fn path() -> impl Strategy<Value = String> {
            prop::collection::vec(segment(), 0..8).prop_map(|s| format!("/{}", s.join("/")))
        }

        fn query() -> impl Strategy<Value = Vec<(String, String)>> {
            prop::collection::vec(
                (
                    prop_oneof![Just("utm_source".to_owned()), "[a-c]{1,2}"],
                    "[a-z0-9]{0,3}",
                ),
                0..5,
            )
        }

        fn uri(path: &str, query: &[(String, String)]) -> Uri {
            let q: Vec<String> = query.iter().map(|(n, v)| format!("{n}={v}")).collect();
            let text = if q.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{}", q.join("&"))
            };
            text.parse().unwrap()
        }

        proptest! {
            /// Normalising twice changes nothing: the key's path is already in the one form,
            /// so the upstream request built from it asks for exactly what the key says.
            #[test]
            fn normalisation_is_idempotent(p in path(), q in query()) {
                let k = CacheKey::new("http", "a.test", &uri(&p, &q), &KeyRules::default());
                let again: Uri = k.path_and_query().parse().unwrap();
                let k2 = CacheKey::new("http", "a.test", &again, &KeyRules::default());
                prop_assert_eq!(k.as_str(), k2.as_str());
                prop_assert!(!k.path_and_query().split('?').next().unwrap().split('/').any(|s| s == "." || s == ".."));
            }

            /// Reordering parameters (keeping the order among equal names) and adding ignored
            /// ones gives the same key, and ignored ones never reach the key (or the origin).
            #[test]
            fn equivalent_queries_give_one_key(p in path(), q in query(), at in 0usize..6) {
                let mut sorted = q.clone();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                let mut tracked = q.clone();
                tracked.insert(at.min(tracked.len()), ("utm_campaign".into(), "x".into()));
                let rules = KeyRules::default();
                let a = CacheKey::new("http", "a.test", &uri(&p, &sorted), &rules);
                let b = CacheKey::new("http", "a.test", &uri(&p, &tracked), &rules);
                prop_assert_eq!(a.as_str(), b.as_str());
                prop_assert!(!a.path_and_query().contains("utm_"));
            }

            /// A path and the same path with unreserved characters percent-encoded, or with
            /// a detour through `x/..`, are one key.
            #[test]
            fn encoded_and_detoured_aliases_are_one_key(p in path()) {
                let rules = KeyRules::default();
                let plain = CacheKey::new("http", "a", &uri(&p, &[]), &rules);
                let detour = format!("/x/..{p}");
                let encoded: Vec<String> = p
                    .split('/')
                    .map(|seg| {
                        if seg.contains('%') {
                            return seg.to_owned();
                        }
                        seg.chars()
                            .map(|c| if c.is_ascii_lowercase() { format!("%{:02X}", c as u32) } else { c.to_string() })
                            .collect()
                    })
                    .collect();
                let encoded = encoded.join("/");
                let via_detour = CacheKey::new("http", "a", &uri(&detour, &[]), &rules);
                let via_encoding = CacheKey::new("http", "a", &uri(&encoded, &[]), &rules);
                prop_assert_eq!(plain.as_str(), via_detour.as_str());
                prop_assert_eq!(plain.as_str(), via_encoding.as_str());
            }
        }
    }
}
