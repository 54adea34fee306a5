//! The RFC 9211 `Cache-Status` field and the request's path through the cache.

use std::fmt::Write;

use http::HeaderValue;
use http::header::HeaderName;

pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Where a request ended up. `as_str` names it in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheState {
    /// Served fresh from the cache.
    Hit,
    /// Served stale from the cache (stale-while-revalidate or the client's max-stale).
    StaleHit,
    /// Nothing cached for the URL.
    Miss,
    /// The URL is cached but not for this request's `Vary` values.
    VaryMiss,
    /// A stale entry was confirmed by the origin with a 304.
    Revalidated,
    /// A stale entry was replaced by a new response.
    Refetched,
    /// The origin failed and a stale entry stood in (stale-if-error).
    StaleOnError,
    /// Not a cacheable request: forwarded as it is.
    Pass,
    /// The origin failed and nothing could stand in.
    Error,
}

impl CacheState {
    pub const ALL: [CacheState; 9] = [
        Self::Hit,
        Self::StaleHit,
        Self::Miss,
        Self::VaryMiss,
        Self::Revalidated,
        Self::Refetched,
        Self::StaleOnError,
        Self::Pass,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::StaleHit => "stale_hit",
            Self::Miss => "miss",
            Self::VaryMiss => "vary_miss",
            Self::Revalidated => "revalidated",
            Self::Refetched => "refetched",
            Self::StaleOnError => "stale_on_error",
            Self::Pass => "pass",
            Self::Error => "error",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// True when the response came from the cache without a full origin fetch.
    pub fn served_from_cache(self) -> bool {
        matches!(
            self,
            Self::Hit | Self::StaleHit | Self::Revalidated | Self::StaleOnError
        )
    }
}

/// RFC 9211 `fwd` reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    UriMiss,
    VaryMiss,
    Miss,
    Request,
    Stale,
    Bypass,
}

impl Fwd {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UriMiss => "uri-miss",
            Self::VaryMiss => "vary-miss",
            Self::Miss => "miss",
            Self::Request => "request",
            Self::Stale => "stale",
            Self::Bypass => "bypass",
        }
    }
}

/// One `Cache-Status` entry of this cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStatus {
    pub hit: bool,
    pub fwd: Option<Fwd>,
    pub fwd_status: Option<u16>,
    pub ttl: Option<i64>,
    pub stored: bool,
    pub collapsed: bool,
    pub detail: Option<&'static str>,
}

impl CacheStatus {
    pub fn hit(ttl: i64) -> Self {
        Self {
            hit: true,
            ttl: Some(ttl),
            ..Self::default()
        }
    }

    pub fn forward(fwd: Fwd) -> Self {
        Self {
            fwd: Some(fwd),
            ..Self::default()
        }
    }

    /// Renders this entry after `upstream`'s entries (RFC 9211 §2: the cache nearest the
    /// origin comes first), as `<name>; hit; ttl=…` or `<name>; fwd=…; …`.
    pub fn render(&self, name: &str, upstream: Option<&HeaderValue>) -> HeaderValue {
        let mut s = String::with_capacity(96);
        if let Some(prev) = upstream.and_then(|v| v.to_str().ok())
            && !prev.trim().is_empty()
        {
            s.push_str(prev.trim());
            s.push_str(", ");
        }
        s.push_str(name);
        if self.hit {
            s.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            s.push_str("; fwd=");
            s.push_str(fwd.as_str());
        }
        if let Some(code) = self.fwd_status {
            let _ = write!(s, "; fwd-status={code}");
        }
        if let Some(ttl) = self.ttl {
            let _ = write!(s, "; ttl={ttl}");
        }
        if self.stored {
            s.push_str("; stored");
        }
        if self.collapsed {
            s.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            s.push_str("; detail=");
            s.push_str(detail);
        }
        HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("edgecache"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_hit_and_miss() {
        assert_eq!(
            CacheStatus::hit(3522).render("edgecache-us-east", None),
            "edgecache-us-east; hit; ttl=3522"
        );
        let mut s = CacheStatus::forward(Fwd::UriMiss);
        s.fwd_status = Some(200);
        s.stored = true;
        assert_eq!(
            s.render("edgecache-eu", None),
            "edgecache-eu; fwd=uri-miss; fwd-status=200; stored"
        );
    }

    #[test]
    fn appends_after_upstream_entries() {
        let up = HeaderValue::from_static("OriginCache; hit");
        assert_eq!(
            CacheStatus::hit(1).render("edgecache-x", Some(&up)),
            "OriginCache; hit, edgecache-x; hit; ttl=1"
        );
    }
}
