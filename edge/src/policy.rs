//! Storability, freshness and age of responses in a shared cache (RFC 9111 §3, §4.2;
//! RFC 5861). Every function takes `now` so the arithmetic is tested without sleeping.

use std::time::{Duration, SystemTime};

use http::header::{AGE, AUTHORIZATION, DATE, EXPIRES, LAST_MODIFIED, SET_COOKIE, VARY};
use http::{HeaderMap, Method, StatusCode};

use crate::cache_control::{CacheControl, DELTA_SECONDS_MAX, MaxStale, Targeted, parse_delta};
pub use crate::config::SetCookie;

/// Tunables of the freshness model.
#[derive(Debug, Clone, Copy)]
pub struct PolicyConfig {
    /// Heuristic freshness: this fraction of the time since `Last-Modified` (RFC 9111 §4.2.2).
    pub heuristic_fraction: f64,
    /// Upper bound of a heuristic lifetime, in seconds.
    pub heuristic_max: u64,
    /// How stale an entry may be and still stand in for an unreachable or failing origin
    /// when the response did not say (RFC 9111 §4.2.4 lets a disconnected cache do so
    /// unless `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache` forbid it).
    pub stale_if_error_default: u64,
    /// What is done with responses carrying `Set-Cookie`.
    pub set_cookie: SetCookie,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            heuristic_fraction: 0.1,
            heuristic_max: 86_400,
            stale_if_error_default: 86_400,
            set_cookie: SetCookie::Strip,
        }
    }
}

impl PolicyConfig {
    /// Whether a stored response keeps its `Set-Cookie` fields.
    pub fn keeps_set_cookie(&self) -> bool {
        self.set_cookie == SetCookie::Store
    }
}

/// A response with `Set-Cookie` may be stored only as `[edge.cache] set_cookie` says: never
/// with `bypass`; with `strip` (the default) only on explicit freshness, since heuristic
/// freshness would hand one visitor's response (frameworks set session cookies on static
/// files too) to others for up to a day; with `store`, as RFC 9111 allows.
pub fn set_cookie_allows(
    policy: &PolicyConfig,
    headers: &HeaderMap,
    freshness: &Freshness,
) -> Result<(), NotStorable> {
    if !headers.contains_key(SET_COOKIE) {
        return Ok(());
    }
    match policy.set_cookie {
        SetCookie::Bypass => Err(NotStorable::SetCookie),
        SetCookie::Strip if freshness.heuristic => Err(NotStorable::SetCookie),
        SetCookie::Strip | SetCookie::Store => Ok(()),
    }
}

/// Why a response is not stored. `as_str` feeds logs and `Cache-Status` `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStorable {
    Method,
    Status,
    NoStore,
    Private,
    Authorization,
    VaryStar,
    NoFreshness,
    MustUnderstand,
    SetCookie,
}

impl NotStorable {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Status => "status",
            Self::NoStore => "no-store",
            Self::Private => "private",
            Self::Authorization => "authorization",
            Self::VaryStar => "vary-star",
            Self::NoFreshness => "no-freshness",
            Self::MustUnderstand => "must-understand",
            Self::SetCookie => "set-cookie",
        }
    }
}

/// Status codes a cache may give heuristic freshness to (RFC 9110 §15.1).
pub fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Status codes whose semantics this cache implements (for `must-understand`).
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Decides whether a response to `method` may be stored by a shared cache (RFC 9111 §3).
pub fn storable(
    method: &Method,
    req_headers: &HeaderMap,
    req_cc: &CacheControl,
    status: StatusCode,
    resp_headers: &HeaderMap,
    resp_cc: &CacheControl,
    targeted: Targeted,
) -> Result<(), NotStorable> {
    if method != Method::GET {
        return Err(NotStorable::Method);
    }
    // 206 and 304 are never stored as entries of their own; 1xx are not final, and codes
    // past 599 are not HTTP status codes at all (RFC 9110 §15).
    let code = status.as_u16();
    if !(200..=599).contains(&code) || code == 206 || code == 304 {
        return Err(NotStorable::Status);
    }
    if resp_cc.must_understand {
        if !understood(status) {
            return Err(NotStorable::MustUnderstand);
        }
    } else if resp_cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if req_cc.no_store {
        return Err(NotStorable::NoStore);
    }
    if resp_cc.private {
        return Err(NotStorable::Private);
    }
    if req_headers.contains_key(AUTHORIZATION)
        && !(resp_cc.must_revalidate || resp_cc.public || resp_cc.s_maxage.is_some())
    {
        return Err(NotStorable::Authorization);
    }
    if vary_is_star(resp_headers) {
        return Err(NotStorable::VaryStar);
    }
    let explicit = resp_cc.public
        || resp_cc.max_age.is_some()
        || resp_cc.s_maxage.is_some()
        || (targeted == Targeted::None && resp_headers.contains_key(EXPIRES));
    if !explicit && !heuristically_cacheable(status) {
        return Err(NotStorable::NoFreshness);
    }
    Ok(())
}

/// True when any `Vary` member is `*`: such a response never matches a later request.
pub fn vary_is_star(headers: &HeaderMap) -> bool {
    headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|f| f.trim() == "*")
}

/// A point in time in milliseconds since the Unix epoch: what every cached entry keeps of
/// its times, at half the size of a `SystemTime` (the disk tier's records keep the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMs(pub u64);

impl From<SystemTime> for UnixMs {
    fn from(t: SystemTime) -> Self {
        Self(
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        )
    }
}

impl From<UnixMs> for SystemTime {
    fn from(t: UnixMs) -> Self {
        SystemTime::UNIX_EPOCH + Duration::from_millis(t.0)
    }
}

/// Freshness facts of a stored response, fixed when it is stored or refreshed. Seconds are
/// kept as `u32`: delta-seconds are capped at 2^31 (RFC 9111 §1.2.2) and larger ages
/// saturate, so nothing a cache can act on is lost, and every entry is 24 bytes smaller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// Freshness lifetime in seconds.
    pub lifetime: u32,
    /// RFC 5861 windows, in seconds past the lifetime.
    pub stale_while_revalidate: u32,
    pub stale_if_error: u32,
    /// When the response's age was zero, in milliseconds since the Unix epoch (before it,
    /// for an `Age` older than the epoch): its arrival time less the age it arrived with.
    /// The age at `now` is `now - born`, which is RFC 9111 §4.2.3's
    /// `corrected_initial_age + resident_time` in one number.
    pub born_ms: i64,
    /// Stale content must never be served (`must-revalidate`, `proxy-revalidate`, `s-maxage`).
    pub must_revalidate: bool,
    /// Every use needs a successful validation first.
    pub no_cache: bool,
    /// Whether the lifetime came from a heuristic.
    pub heuristic: bool,
}

/// [`Freshness::born_ms`] of a response that arrived at `response_time` already
/// `initial_age` seconds old.
pub fn born_ms(response_time: UnixMs, initial_age: u64) -> i64 {
    let arrived = i64::try_from(response_time.0).unwrap_or(i64::MAX);
    let age_ms = i64::from(secs32(initial_age)) * 1000;
    arrived.saturating_sub(age_ms)
}

/// Seconds as a [`Freshness`] keeps them: anything beyond `u32` saturates.
pub fn secs32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// How a stored response may be used for a given request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usability {
    /// Serve it as it is.
    Fresh,
    /// Serve it and revalidate in the background (RFC 5861 §3, or the request's `max-stale`).
    ServeStale,
    /// Revalidate (or refetch) before serving.
    Revalidate,
}

impl Freshness {
    /// Computes freshness for a response received at `response_time` to a request sent at
    /// `request_time`.
    pub fn compute(
        status: StatusCode,
        headers: &HeaderMap,
        cc: &CacheControl,
        targeted: Targeted,
        request_time: SystemTime,
        response_time: SystemTime,
        config: &PolicyConfig,
    ) -> Self {
        let date = header_date(headers, DATE).unwrap_or(response_time);
        let lifetime_and_heuristic = if let Some(s) = cc.s_maxage {
            (s, false)
        } else if let Some(m) = cc.max_age {
            (m, false)
        } else if targeted == Targeted::None && headers.contains_key(EXPIRES) {
            // An invalid or repeated Expires means "already expired" (RFC 9111 §5.3).
            let expires = (headers.get_all(EXPIRES).iter().count() == 1)
                .then(|| header_date_lenient(headers, EXPIRES))
                .flatten();
            (
                expires.map_or(0, |e| secs_between(date, e).min(DELTA_SECONDS_MAX)),
                false,
            )
        } else if heuristically_cacheable(status) || cc.public {
            (heuristic_lifetime(headers, date, config), true)
        } else {
            (0, false)
        };
        let (lifetime, heuristic) = lifetime_and_heuristic;

        let age_value = age_value(headers);
        let apparent_age = secs_between(date, response_time);
        let response_delay = secs_between(request_time, response_time);
        let corrected_age_value = age_value.saturating_add(response_delay);
        let corrected_initial_age = apparent_age.max(corrected_age_value);

        Self {
            lifetime: secs32(lifetime),
            stale_while_revalidate: secs32(cc.stale_while_revalidate.unwrap_or(0)),
            stale_if_error: secs32(cc.stale_if_error.unwrap_or(0)),
            born_ms: born_ms(response_time.into(), corrected_initial_age),
            must_revalidate: cc.must_revalidate || cc.proxy_revalidate || cc.s_maxage.is_some(),
            no_cache: cc.no_cache,
            heuristic,
        }
    }

    /// The response's current age in seconds (RFC 9111 §4.2.3).
    pub fn age(&self, now: SystemTime) -> u64 {
        let now = i64::try_from(UnixMs::from(now).0).unwrap_or(i64::MAX);
        u64::try_from(now.saturating_sub(self.born_ms) / 1000).unwrap_or(0)
    }

    /// Remaining freshness in seconds; negative once stale.
    pub fn ttl(&self, now: SystemTime) -> i64 {
        let age = self.age(now).min(i64::MAX as u64) as i64;
        i64::from(self.lifetime).saturating_sub(age)
    }

    pub fn is_fresh(&self, now: SystemTime) -> bool {
        u64::from(self.lifetime) > self.age(now)
    }

    /// Seconds past the lifetime (0 while fresh).
    pub fn staleness(&self, now: SystemTime) -> u64 {
        self.age(now).saturating_sub(u64::from(self.lifetime))
    }

    /// Decides how the entry may answer a request with directives `req`.
    pub fn usability(&self, req: &CacheControl, now: SystemTime) -> Usability {
        if self.no_cache || req.no_cache {
            return Usability::Revalidate;
        }
        let age = self.age(now);
        if let Some(max_age) = req.max_age
            && age > max_age
        {
            return Usability::Revalidate;
        }
        let ttl = self.ttl(now);
        let min_fresh = req.min_fresh.unwrap_or(0).min(i64::MAX as u64) as i64;
        if ttl > 0 && ttl >= min_fresh {
            return Usability::Fresh;
        }
        if self.must_revalidate || req.min_fresh.is_some() {
            return Usability::Revalidate;
        }
        let staleness = self.staleness(now);
        let client_allows = match req.max_stale {
            Some(MaxStale::Any) => true,
            Some(MaxStale::Seconds(s)) => staleness <= s,
            None => false,
        };
        if client_allows {
            return Usability::ServeStale;
        }
        if ttl <= 0 && staleness < u64::from(self.stale_while_revalidate) && req.max_age.is_none() {
            return Usability::ServeStale;
        }
        Usability::Revalidate
    }

    /// True when the entry may stand in for a failed origin (RFC 5861 §4, RFC 9111 §4.2.4),
    /// for a request with directives `req`; `default_window` applies when neither the
    /// response nor the request set a longer `stale-if-error`.
    pub fn usable_on_error(
        &self,
        req: &CacheControl,
        now: SystemTime,
        default_window: u64,
    ) -> bool {
        if self.must_revalidate || self.no_cache {
            return false;
        }
        let window = u64::from(self.stale_if_error)
            .max(req.stale_if_error.unwrap_or(0))
            .max(default_window);
        self.staleness(now) <= window
    }

    /// How long the entry is worth keeping: lifetime plus the windows in which stale content
    /// may still be served or revalidated cheaply.
    pub fn keep_for(&self, now: SystemTime) -> Duration {
        let extra = u64::from(self.stale_while_revalidate.max(self.stale_if_error));
        let remaining = self.ttl(now).max(0) as u64;
        // Entries with validators stay a while after expiry: a 304 is cheaper than a refetch.
        Duration::from_secs(remaining.saturating_add(extra).max(60))
    }
}

/// The `Age` header: the first line's first member, parameters cut, digits only; anything
/// else is ignored (RFC 9111 §5.1).
fn age_value(headers: &HeaderMap) -> u64 {
    headers
        .get(AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let first = v.split(',').next().unwrap_or("");
            parse_delta(first.split(';').next().unwrap_or("").trim())
        })
        .unwrap_or(0)
}

fn heuristic_lifetime(headers: &HeaderMap, date: SystemTime, config: &PolicyConfig) -> u64 {
    let Some(last_modified) = header_date(headers, LAST_MODIFIED) else {
        return 0;
    };
    let since = secs_between(last_modified, date) as f64;
    ((since * config.heuristic_fraction) as u64).min(config.heuristic_max)
}

/// Parses an HTTP date header (IMF-fixdate, RFC 850 or asctime).
pub fn header_date(headers: &HeaderMap, name: http::header::HeaderName) -> Option<SystemTime> {
    let value = headers.get(name)?.to_str().ok()?;
    httpdate::parse_http_date(value.trim()).ok()
}

/// Like [`header_date`], but also accepts day, month and zone names in any letter case, as
/// many deployed caches do; every other deviation from the three formats stays invalid.
pub fn header_date_lenient(
    headers: &HeaderMap,
    name: http::header::HeaderName,
) -> Option<SystemTime> {
    let value = headers.get(&name)?.to_str().ok()?.trim();
    if let Ok(t) = httpdate::parse_http_date(value) {
        return Some(t);
    }
    httpdate::parse_http_date(&canonical_case(value)).ok()
}

/// `THU, 18 AUG 2050 02:01:18 gmt` → `Thu, 18 Aug 2050 02:01:18 GMT`.
fn canonical_case(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.eq_ignore_ascii_case("gmt") {
            out.push_str("GMT");
        } else {
            for (i, c) in word.chars().enumerate() {
                out.push(if i == 0 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                });
            }
        }
        word.clear();
    };
    for c in value.chars() {
        if c.is_ascii_alphabetic() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Whole seconds from `a` to `b`, 0 if `b` is earlier.
fn secs_between(a: SystemTime, b: SystemTime) -> u64 {
    b.duration_since(a).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn fresh(h: &HeaderMap, t: SystemTime) -> Freshness {
        let (cc, targeted) = CacheControl::for_response(h);
        Freshness::compute(
            StatusCode::OK,
            h,
            &cc,
            targeted,
            t,
            t,
            &PolicyConfig::default(),
        )
    }

    fn date(t: SystemTime) -> String {
        httpdate::fmt_http_date(t)
    }

    #[test]
    fn s_maxage_beats_max_age() {
        let h = headers(&[("cache-control", "max-age=10, s-maxage=100".into())]);
        let f = fresh(&h, at(0));
        assert_eq!(f.lifetime, 100);
        assert!(f.must_revalidate, "s-maxage implies proxy-revalidate");
    }

    #[test]
    fn expires_relative_to_date() {
        let h = headers(&[("date", date(at(0))), ("expires", date(at(300)))]);
        assert_eq!(fresh(&h, at(0)).lifetime, 300);
        let bad = headers(&[("expires", "0".into())]);
        assert_eq!(fresh(&bad, at(0)).lifetime, 0);
    }

    #[test]
    fn heuristic_is_a_tenth_of_last_modified_age() {
        let h = headers(&[("date", date(at(10_000))), ("last-modified", date(at(0)))]);
        let f = fresh(&h, at(10_000));
        assert_eq!((f.lifetime, f.heuristic), (1_000, true));
    }

    #[test]
    fn age_counts_upstream_age_delay_and_residence() {
        let h = headers(&[
            ("cache-control", "max-age=100".into()),
            ("date", date(at(0))),
            ("age", "30".into()),
        ]);
        let (cc, t) = CacheControl::for_response(&h);
        let f = Freshness::compute(
            StatusCode::OK,
            &h,
            &cc,
            t,
            at(0),
            at(2),
            &PolicyConfig::default(),
        );
        // corrected_initial_age is 32 s: its age when it arrived at 2 s.
        assert_eq!(f.age(at(2)), 32);
        assert_eq!(f.age(at(12)), 42);
        assert_eq!(f.ttl(at(12)), 58);
        assert!(f.is_fresh(at(69)));
        assert!(!f.is_fresh(at(70)));
    }

    #[test]
    fn age_parsing_is_strict() {
        let age = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(AGE, HeaderValue::from_static(v));
            age_value(&h)
        };
        assert_eq!(age("7200"), 7200);
        assert_eq!(age("7200, 0"), 7200);
        assert_eq!(age("0, 7200"), 0);
        assert_eq!(age("7200;foo=bar"), 7200);
        assert_eq!(age("7200.0"), 0);
        assert_eq!(age("-7200"), 0);
        assert_eq!(age("abc"), 0);
        assert_eq!(age("99999999999"), DELTA_SECONDS_MAX);
    }

    #[test]
    fn expires_formats() {
        let exp = |v: &str| {
            let h = headers(&[("date", date(at(0))), ("expires", v.into())]);
            fresh(&h, at(0)).lifetime
        };
        let future = "Thu, 18 Aug 2050 02:01:18 GMT";
        assert!(exp(future) > 0);
        assert!(exp("THU, 18 AUG 2050 02:01:18 gMT") > 0);
        assert!(exp("Thu Aug 18 02:01:18 2050") > 0);
        assert_eq!(exp("Thu, 18 Aug 2050 02:01:18 UTC"), 0);
        assert_eq!(exp("Thu, 18 Aug 50 02:01:18 GMT"), 0);
        assert_eq!(exp("Thu 18 Aug 2050 02:01:18 GMT"), 0);
        assert_eq!(exp("Thu, 18-Aug-2050 02:01:18 GMT"), 0);
        assert_eq!(exp("Thu, 18 Aug 2050 2:01:18 GMT"), 0);
    }

    #[test]
    fn public_allows_heuristics_for_any_status() {
        let h = headers(&[
            ("cache-control", "public".into()),
            ("date", date(at(10_000))),
            ("last-modified", date(at(0))),
        ]);
        let (cc, t) = CacheControl::for_response(&h);
        let f = Freshness::compute(
            StatusCode::from_u16(599).unwrap(),
            &h,
            &cc,
            t,
            at(10_000),
            at(10_000),
            &PolicyConfig::default(),
        );
        assert_eq!(f.lifetime, 1_000);
    }

    #[test]
    fn date_in_the_future_gives_no_negative_age() {
        let h = headers(&[
            ("cache-control", "max-age=10".into()),
            ("date", date(at(500))),
        ]);
        assert_eq!(fresh(&h, at(0)).age(at(0)), 0);
    }

    #[test]
    fn stale_while_revalidate_window() {
        let h = headers(&[(
            "cache-control",
            "max-age=10, stale-while-revalidate=20".into(),
        )]);
        let f = fresh(&h, at(0));
        let req = CacheControl::default();
        assert_eq!(f.usability(&req, at(5)), Usability::Fresh);
        assert_eq!(f.usability(&req, at(15)), Usability::ServeStale);
        assert_eq!(f.usability(&req, at(31)), Usability::Revalidate);
    }

    #[test]
    fn must_revalidate_forbids_stale_use() {
        let h = headers(&[(
            "cache-control",
            "max-age=1, must-revalidate, stale-while-revalidate=60, stale-if-error=60".into(),
        )]);
        let f = fresh(&h, at(0));
        assert_eq!(
            f.usability(&CacheControl::default(), at(5)),
            Usability::Revalidate
        );
        assert!(!f.usable_on_error(&CacheControl::default(), at(5), 3600));
    }

    #[test]
    fn stale_if_error_window() {
        let h = headers(&[("cache-control", "max-age=1, stale-if-error=10".into())]);
        let f = fresh(&h, at(0));
        assert!(f.usable_on_error(&CacheControl::default(), at(5), 0));
        assert!(!f.usable_on_error(&CacheControl::default(), at(20), 0));
        assert!(f.usable_on_error(&CacheControl::default(), at(20), 60));
    }

    #[test]
    fn request_directives_limit_reuse() {
        let h = headers(&[("cache-control", "max-age=100".into())]);
        let f = fresh(&h, at(0));
        let mut req = CacheControl::default();
        req.parse_into("max-age=5");
        assert_eq!(f.usability(&req, at(10)), Usability::Revalidate);
        let mut req = CacheControl::default();
        req.parse_into("min-fresh=95");
        assert_eq!(f.usability(&req, at(10)), Usability::Revalidate);
        let mut req = CacheControl::default();
        req.parse_into("no-cache");
        assert_eq!(f.usability(&req, at(1)), Usability::Revalidate);
        let mut req = CacheControl::default();
        req.parse_into("max-stale=50");
        assert_eq!(f.usability(&req, at(120)), Usability::ServeStale);
        assert_eq!(f.usability(&req, at(200)), Usability::Revalidate);
    }

    #[test]
    fn storability_rules() {
        let get = Method::GET;
        let none = HeaderMap::new();
        let ok = |status: u16, resp: &HeaderMap| {
            let (cc, t) = CacheControl::for_response(resp);
            storable(
                &get,
                &none,
                &CacheControl::default(),
                StatusCode::from_u16(status).unwrap(),
                resp,
                &cc,
                t,
            )
        };
        let plain = HeaderMap::new();
        assert_eq!(ok(200, &plain), Ok(()));
        assert_eq!(ok(302, &plain), Err(NotStorable::NoFreshness));
        let h = headers(&[("cache-control", "max-age=10".into())]);
        assert_eq!(ok(302, &h), Ok(()));
        assert_eq!(ok(206, &h), Err(NotStorable::Status));
        assert_eq!(ok(999, &h), Err(NotStorable::Status));
        let h = headers(&[("cache-control", "private, max-age=10".into())]);
        assert_eq!(ok(200, &h), Err(NotStorable::Private));
        let h = headers(&[("cache-control", "no-store".into())]);
        assert_eq!(ok(200, &h), Err(NotStorable::NoStore));
        let h = headers(&[("cache-control", "no-store, must-understand".into())]);
        assert_eq!(ok(200, &h), Ok(()));
        assert_eq!(ok(299, &h), Err(NotStorable::MustUnderstand));
        let h = headers(&[("vary", "accept, *".into())]);
        assert_eq!(ok(200, &h), Err(NotStorable::VaryStar));
    }

    #[test]
    fn authorization_needs_explicit_permission() {
        let mut req = HeaderMap::new();
        req.insert(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        let check = |resp: &HeaderMap| {
            let (cc, t) = CacheControl::for_response(resp);
            storable(
                &Method::GET,
                &req,
                &CacheControl::default(),
                StatusCode::OK,
                resp,
                &cc,
                t,
            )
        };
        let h = headers(&[("cache-control", "max-age=10".into())]);
        assert_eq!(check(&h), Err(NotStorable::Authorization));
        let h = headers(&[("cache-control", "max-age=10, public".into())]);
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn set_cookie_is_stored_only_as_configured() {
        let t = at(0);
        let explicit = headers(&[
            ("set-cookie", "session=alice".into()),
            ("cache-control", "public, max-age=60".into()),
        ]);
        let heuristic = headers(&[
            ("set-cookie", "session=alice".into()),
            ("last-modified", date(at(0) - Duration::from_secs(86_400))),
        ]);
        let plain = headers(&[("last-modified", date(at(0) - Duration::from_secs(86_400)))]);
        let verdict = |mode: SetCookie, h: &HeaderMap| {
            let policy = PolicyConfig {
                set_cookie: mode,
                ..PolicyConfig::default()
            };
            set_cookie_allows(&policy, h, &fresh(h, t))
        };
        assert!(fresh(&heuristic, t).heuristic);
        assert_eq!(verdict(SetCookie::Strip, &explicit), Ok(()));
        assert_eq!(
            verdict(SetCookie::Strip, &heuristic),
            Err(NotStorable::SetCookie)
        );
        assert_eq!(
            verdict(SetCookie::Bypass, &explicit),
            Err(NotStorable::SetCookie)
        );
        assert_eq!(verdict(SetCookie::Store, &heuristic), Ok(()));
        for mode in [SetCookie::Strip, SetCookie::Bypass, SetCookie::Store] {
            assert_eq!(verdict(mode, &plain), Ok(()), "{mode:?}");
        }
        assert!(!PolicyConfig::default().keeps_set_cookie());
    }
}
