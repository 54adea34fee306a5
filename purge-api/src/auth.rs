//! Bearer-token authentication for every `/v1` route, compared in constant time.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::error::PurgeApiError;
use crate::server::PurgeApi;

/// The caller's token, put in the request's extensions once it matched; the rate limiter
/// keys its buckets by it.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub String);

/// Middleware: `401` unless `Authorization: Bearer <the configured token>`, and `429` for
/// every request from an address that has failed too often in a row (see [`AuthFailures`]).
pub(crate) async fn require_token(
    State(api): State<PurgeApi>,
    mut request: Request,
    next: Next,
) -> Result<Response, PurgeApiError> {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let failures = api.auth_failures();
    if let Some(ip) = ip
        && let Err(retry_after) = failures.check(ip, Instant::now())
    {
        return Err(PurgeApiError::AuthLocked { retry_after });
    }
    let checked = bearer_token(request.headers()).and_then(|given| {
        if token_matches(given.as_bytes(), api.config().token.as_bytes()) {
            Ok(given.to_owned())
        } else {
            Err(PurgeApiError::Unauthorized("invalid bearer token"))
        }
    });
    let given = match checked {
        Ok(given) => {
            if let Some(ip) = ip {
                failures.succeeded(ip);
            }
            given
        }
        Err(e) => {
            if let Some(ip) = ip
                && let Some(locked_for) = failures.failed(ip, Instant::now())
            {
                tracing::warn!(%ip, locked_ms = locked_for.as_millis() as u64, "repeated failed authentication: address locked out");
            }
            return Err(e);
        }
    };
    request.extensions_mut().insert(Caller(given));
    Ok(next.run(request).await)
}

/// Failed authentications by client address. The first [`FREE_FAILURES`] in a row cost
/// nothing; each one after locks the address out (every request answered `429` with
/// `Retry-After`, the token not even compared) for twice as long as the one before, from 1 s
/// up to a minute. A success clears the address's count. Guessing a token is hopeless
/// anyway; this keeps the API from being an oracle answering as fast as it is asked.
#[derive(Debug, Default)]
pub(crate) struct AuthFailures {
    by_ip: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Failures {
    in_a_row: u32,
    locked_until: Option<Instant>,
}

/// Failures in a row that are answered with a plain 401.
pub(crate) const FREE_FAILURES: u32 = 10;
const LONGEST_LOCK: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past it, those not locked out are forgotten.
const MAX_TRACKED: usize = 10_000;

impl AuthFailures {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.by_ip
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err(time left)` while `ip` is locked out.
    pub(crate) fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        match self.map().get(&ip).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err(until - now),
            _ => Ok(()),
        }
    }

    /// Records a failure; returns how long `ip` is now locked out, if it is.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let mut map = self.map();
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            map.retain(|_, f| f.locked_until.is_some_and(|u| u > now));
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let f = map.entry(ip).or_default();
        f.in_a_row = f.in_a_row.saturating_add(1);
        let over = f.in_a_row.checked_sub(FREE_FAILURES + 1)?;
        let lock = Duration::from_secs(1u64 << over.min(6)).min(LONGEST_LOCK);
        f.locked_until = Some(now + lock);
        Some(lock)
    }

    /// Clears `ip`'s failures.
    pub(crate) fn succeeded(&self, ip: IpAddr) {
        let mut map = self.map();
        if !map.is_empty() {
            map.remove(&ip);
        }
    }
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, PurgeApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(PurgeApiError::Unauthorized(
            "missing Authorization: Bearer header",
        ))?;
    let value = value
        .to_str()
        .map_err(|_| PurgeApiError::Unauthorized("Authorization header is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').ok_or(PurgeApiError::Unauthorized(
        "Authorization must be \"Bearer TOKEN\"",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(PurgeApiError::Unauthorized(
            "Authorization must be \"Bearer TOKEN\"",
        ));
    }
    Ok(token.trim())
}

/// Compares in time that depends on the expected token's length only, so neither where a
/// guess differs nor how long the real token is can be learned by timing.
pub fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut padded = vec![0u8; expected.len()];
    let n = given.len().min(expected.len());
    padded[..n].copy_from_slice(&given[..n]);
    let same_bytes = padded.ct_eq(expected);
    let same_len = (given.len() as u64).ct_eq(&(expected.len() as u64));
    bool::from(same_bytes & same_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_the_exact_token_matches() {
        assert!(token_matches(b"s3cret", b"s3cret"));
        assert!(!token_matches(b"s3cre", b"s3cret"));
        assert!(!token_matches(b"s3cretX", b"s3cret"));
        assert!(!token_matches(b"s3creT", b"s3cret"));
        assert!(!token_matches(b"", b"s3cret"));
        assert!(!token_matches(b"s3cret\0", b"s3cret"));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(&headers("Bearer abc")).unwrap(), "abc");
        assert_eq!(bearer_token(&headers("bearer  abc ")).unwrap(), "abc");
    }

    #[test]
    fn missing_or_other_schemes_are_unauthorized_with_a_reason() {
        let err = bearer_token(&HeaderMap::new()).unwrap_err();
        assert_eq!(err.to_string(), "missing Authorization: Bearer header");
        let err = bearer_token(&headers("Basic dXNlcjpwYXNz")).unwrap_err();
        assert_eq!(err.to_string(), "Authorization must be \"Bearer TOKEN\"");
        let err = bearer_token(&headers("Bearer")).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn repeated_failures_lock_an_address_out_for_longer_each_time() {
        let f = AuthFailures::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let t = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(f.failed(ip, t), None);
            assert_eq!(f.check(ip, t), Ok(()));
        }
        assert_eq!(f.failed(ip, t), Some(Duration::from_secs(1)));
        assert!(f.check(ip, t).is_err());
        assert_eq!(f.check(other, t), Ok(()));
        let later = t + Duration::from_secs(1);
        assert_eq!(f.check(ip, later), Ok(()));
        assert_eq!(f.failed(ip, later), Some(Duration::from_secs(2)));
        for _ in 0..20 {
            f.failed(ip, later);
        }
        assert_eq!(f.check(ip, later), Err(LONGEST_LOCK));
        f.succeeded(ip);
        assert_eq!(f.check(ip, later), Ok(()));
    }
}
