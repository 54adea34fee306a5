//! Cache keys: scheme + host + path + normalised query.

use std::fmt::{self, Write as _};

use http::Uri;
use http::header::HOST;

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
    /// URI's authority for absolute-form requests).
    pub fn new(scheme: &str, host: &str, uri: &Uri, rules: &KeyRules) -> Self {
        let path = uri.path();
        // Exact unless the host is percent-encoded or query parameters are dropped: the
        // text becomes a `Box<str>`, which reallocates when there is spare room.
        let host = without_default_port(scheme, host);
        let query = uri.query().map_or(0, |q| q.len() + 1);
        let mut text =
            String::with_capacity(scheme.len() + 3 + host.len() + path.len().max(1) + query);
        text.push_str(scheme);
        text.push_str("://");
        push_host(&mut text, host);
        text.push_str(if path.is_empty() { "/" } else { path });
        if let Some(query) = uri.query() {
            push_query(&mut text, query, rules);
        }
        Self { text: text.into() }
    }

    /// The key of a request, taking the host from the URI authority or the `Host` header.
    pub fn from_request(
        scheme: &str,
        uri: &Uri,
        headers: &http::HeaderMap,
        default_host: &str,
        rules: &KeyRules,
    ) -> Self {
        let host = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or(default_host);
        Self::new(scheme, host, uri, rules)
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
    fn parts() {
        let k = key("a.test", "/p?q=1");
        assert_eq!(k.origin(), "http://a.test");
        assert_eq!(k.path_and_query(), "/p?q=1");
    }
}
