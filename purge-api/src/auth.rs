//! Bearer-token authentication for every `/v1` route, compared in constant time.

use axum::extract::{Request, State};
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

/// Middleware: `401` unless `Authorization: Bearer <the configured token>`.
pub(crate) async fn require_token(
    State(api): State<PurgeApi>,
    mut request: Request,
    next: Next,
) -> Result<Response, PurgeApiError> {
    let given = bearer_token(request.headers())?;
    if !token_matches(given.as_bytes(), api.config().token.as_bytes()) {
        return Err(PurgeApiError::Unauthorized("invalid bearer token"));
    }
    let caller = Caller(given.to_owned());
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

/// The token of an `Authorization: Bearer TOKEN` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<&str, PurgeApiError> {
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
pub(crate) fn token_matches(given: &[u8], expected: &[u8]) -> bool {
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
}
