//! The access log: one line per request (tracing target `edgecache::access`), limited to a
//! number of lines per second so that heavy load cannot turn logging into the bottleneck.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode, Uri};

/// The tracing target of access-log lines: filter on it (`RUST_LOG=edgecache::access=off`).
pub const TARGET: &str = "edgecache::access";

/// How many lines each second may carry; the rest are counted and the count is reported
/// on the next line written.
#[derive(Debug)]
pub struct AccessLog {
    per_second: u64,
    epoch: Instant,
    /// The current second (high 32 bits) and lines written in it (low 32 bits).
    window: AtomicU64,
    suppressed: AtomicU64,
}

/// Response extension: how long the request waited for the origin's response head.
#[derive(Debug, Clone, Copy)]
pub struct OriginWait(pub Duration);

/// The tier named in a `Cache-Status` value's `detail` (`memory`, `disk`), if any.
pub fn tier_of(cache_status: &[u8]) -> Option<&'static str> {
    let text = std::str::from_utf8(cache_status).ok()?;
    // This cache's member is the last one; caches upstream come before it.
    let ours = text.rsplit(',').next()?;
    let detail = ours
        .split(';')
        .find_map(|p| p.trim().strip_prefix("detail="))?;
    ["memory", "disk"].into_iter().find(|t| *t == detail)
}

/// What one request did, for its log line.
pub struct Line<'a> {
    pub pop: &'a str,
    pub client: SocketAddr,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub status: StatusCode,
    /// Body bytes, when known before the body is sent.
    pub bytes: Option<u64>,
    pub cache: &'static str,
    /// Which tier answered, or `origin`.
    pub tier: &'static str,
    /// Time waiting for the origin's response head, if the origin was asked.
    pub origin: Option<Duration>,
    /// Time to the response head.
    pub total: Duration,
}

impl AccessLog {
    /// At most `per_second` lines a second; 0 writes none.
    pub fn new(per_second: u64) -> Self {
        Self {
            per_second,
            epoch: Instant::now(),
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last line)` when a line may be written now.
    pub fn admit(&self) -> Option<u64> {
        if self.per_second == 0 || !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
            return None;
        }
        self.admit_at(self.epoch.elapsed().as_secs())
    }

    /// Writes `line`, with the number of lines left out before it.
    pub fn write(&self, line: &Line<'_>, suppressed: u64) {
        tracing::info!(
            target: TARGET,
            pop = line.pop,
            client = %line.client.ip(),
            method = %line.method,
            path = %line.uri.path_and_query().map_or("/", |p| p.as_str()),
            status = line.status.as_u16(),
            bytes = line.bytes,
            cache = line.cache,
            tier = line.tier,
            origin_ms = line.origin.map(|d| d.as_secs_f64() * 1000.0),
            total_ms = line.total.as_secs_f64() * 1000.0,
            suppressed,
            "access"
        );
    }

    /// `Some(lines suppressed since the last one written)` if a line may be written in
    /// second `now`, `None` if this second's allowance is spent.
    fn admit_at(&self, now: u64) -> Option<u64> {
        let second = now & 0xffff_ffff;
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (at, count) = (current >> 32, current & 0xffff_ffff);
            let next = if at == second {
                if count >= self.per_second {
                    self.suppressed.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                current + 1
            } else {
                (second << 32) | 1
            };
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.suppressed.swap(0, Ordering::Relaxed)),
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_comes_from_the_cache_status_detail() {
        assert_eq!(
            tier_of(b"edgecache-x; hit; ttl=5; detail=disk"),
            Some("disk")
        );
        assert_eq!(tier_of(b"edgecache-x; hit; detail=memory"), Some("memory"));
        assert_eq!(tier_of(b"edgecache-x; fwd=uri-miss; stored"), None);
        assert_eq!(tier_of(b"edgecache-x; hit; detail=built-in"), None);
        assert_eq!(
            tier_of(b"up; hit; detail=disk, edgecache-x; fwd=miss"),
            None
        );
    }

    #[test]
    fn each_second_allows_its_quota_and_reports_what_it_dropped() {
        let log = AccessLog::new(2);
        assert_eq!(log.admit_at(5), Some(0));
        assert_eq!(log.admit_at(5), Some(0));
        assert_eq!(log.admit_at(5), None);
        assert_eq!(log.admit_at(5), None);
        assert_eq!(log.admit_at(6), Some(2));
        assert_eq!(log.admit_at(6), Some(0));
        assert_eq!(log.admit_at(6), None);
        assert_eq!(log.admit_at(7), Some(1));
    }
}
