//! `Cache-Control`, `CDN-Cache-Control` and `Edgecache-Cache-Control` from an origin or a
//! client: parsing never panics and lifetimes stay within RFC 9111's bound.
#![no_main]

use edgecache_edge::cache_control::{CacheControl, DELTA_SECONDS_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = http::HeaderMap::new();
    let names = [
        "cache-control",
        "cdn-cache-control",
        "edgecache-cache-control",
    ];
    for (name, part) in names.iter().zip(data.split(|&b| b == b'\n')) {
        if let Ok(value) = http::HeaderValue::from_bytes(part) {
            headers.append(*name, value);
        }
    }
    let (response, _) = CacheControl::for_response(&headers);
    let request = CacheControl::for_request(&headers);
    for v in [
        response.max_age,
        response.s_maxage,
        request.max_age,
        request.min_fresh,
    ]
    .into_iter()
    .flatten()
    {
        assert!(v <= DELTA_SECONDS_MAX);
    }
});
