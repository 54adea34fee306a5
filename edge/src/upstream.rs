//! The origin client: a pooled reqwest client with connect, first-byte, idle and total
//! timeouts, and the rules for which request headers travel to the origin.

use std::net::SocketAddr;

use http::header::{HOST, HeaderName, HeaderValue};
use http::{HeaderMap, Method};

use crate::config::{EdgeConfig, TimeoutConfig};
use crate::entry::is_hop_by_hop;
use crate::error::{EdgeError, UpstreamError};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// A client for the configured origin.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    /// Origin base URL without a trailing slash, e.g. `http://127.0.0.1:8000` or
    /// `https://assets.example.com/static`.
    base: String,
    timeouts: TimeoutConfig,
}

impl Upstream {
    pub fn new(config: &EdgeConfig) -> Result<Self, EdgeError> {
        let origin = config.origins.first().ok_or_else(|| {
            EdgeError::Config("edge.origins: at least one origin is required".into())
        })?;
        let t = &config.timeouts;
        let client = reqwest::Client::builder()
            .connect_timeout(t.connect.0)
            .read_timeout(t.idle.0)
            .timeout(t.total.0)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(t.pool_idle.0)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| EdgeError::Config(format!("edge.origins[0]: cannot build client: {e}")))?;
        Ok(Self {
            client,
            base: origin.url.trim_end_matches('/').to_owned(),
            timeouts: t.clone(),
        })
    }

    /// Sends a request for `path_and_query` and waits for the response head.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Option<reqwest::Body>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = format!("{}{}", self.base, path_and_query);
        let mut req = self.client.request(method, url).headers(headers);
        if let Some(body) = body {
            req = req.body(body);
        }
        let limit = self.timeouts.first_byte.0;
        match tokio::time::timeout(limit, req.send()).await {
            Err(_) => Err(UpstreamError::FirstByteTimeout(limit)),
            Ok(Err(e)) => Err(UpstreamError::from_reqwest(&e)),
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// Headers of a client request as they go to the origin: no hop-by-hop fields, no `Host`
/// (the origin's own host is used, the client's travels as `X-Forwarded-Host`), and the
/// forwarding chain extended.
pub fn forward_headers(client: &HeaderMap, peer: Option<SocketAddr>) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(client.len() + 3);
    let connection_listed: Vec<String> = client
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in client {
        if is_hop_by_hop(name)
            || name == HOST
            || connection_listed.iter().any(|c| c == name.as_str())
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if let Some(host) = client.get(HOST) {
        out.insert(X_FORWARDED_HOST, host.clone());
    }
    // RFC 9110 §7.6.3: every proxy adds itself to Via (and it lets a tier of edgecache
    // nodes see loops).
    let via = match out.get(http::header::VIA).and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, 1.1 edgecache"),
        None => "1.1 edgecache".to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&via) {
        out.insert(http::header::VIA, v);
    }
    if !out.contains_key(X_FORWARDED_PROTO) {
        out.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if let Some(peer) = peer {
        let ip = peer.ip().to_string();
        let chain = match out.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&chain) {
            out.insert(X_FORWARDED_FOR, v);
        }
    }
    out
}

/// Removes the client's own validators and ranges: the edge fetches whole objects and
/// answers conditionals and ranges itself.
pub fn strip_conditionals(headers: &mut HeaderMap) {
    use http::header::{
        IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
    };
    for name in [
        IF_MATCH,
        IF_NONE_MATCH,
        IF_MODIFIED_SINCE,
        IF_UNMODIFIED_SINCE,
        IF_RANGE,
        RANGE,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_drops_hop_by_hop_and_extends_chain() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("host", HeaderValue::from_static("cdn.test"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        let out = forward_headers(&h, Some("127.0.0.9:1234".parse().unwrap()));
        assert!(!out.contains_key("x-private"));
        assert!(!out.contains_key("keep-alive"));
        assert!(!out.contains_key("host"));
        assert_eq!(out.get("x-forwarded-host").unwrap(), "cdn.test");
        assert_eq!(out.get("x-forwarded-for").unwrap(), "10.0.0.1, 127.0.0.9");
        assert_eq!(out.get("accept").unwrap(), "*/*");
        assert_eq!(out.get("via").unwrap(), "1.1 edgecache");
    }
}
