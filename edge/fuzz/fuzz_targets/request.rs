//! A request from anyone: method, target, Host fields and other headers as bytes. The
//! checks never panic, a key they accept is already in its one normal form, and the
//! upstream request built from it never carries framing or the client's forwarding headers.
#![no_main]

use edgecache_edge::forward::{Client, ForwardRules, Purpose, check_request, upstream_headers};
use edgecache_edge::key::{CacheKey, KeyRules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let (Some(method), Some(target)) = (lines.next(), lines.next()) else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(method) else {
        return;
    };
    let Ok(uri) = http::Uri::try_from(target) else {
        return;
    };
    let mut builder = http::Request::builder().method(method).uri(uri);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(&line[colon + 1..]),
        ) else {
            continue;
        };
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();
    let rules = KeyRules::default();
    let Ok(key) = check_request(&parts, &axum::body::Body::empty(), &rules) else {
        return;
    };
    let again: http::Uri = key.path_and_query().parse().expect("a key's path parses");
    let rekeyed = CacheKey::new("http", key.host(), &again, &rules);
    assert_eq!(rekeyed.path_and_query(), key.path_and_query());
    let client = Client {
        peer: "192.0.2.1:1234".parse().unwrap(),
        proto: "http",
        via_name: "edgecache-fuzz",
    };
    let out = upstream_headers(
        &parts.headers,
        &key,
        client,
        &ForwardRules::default(),
        Purpose::Pass,
    );
    assert!(!out.contains_key(http::header::CONTENT_LENGTH));
    assert!(!out.contains_key(http::header::TRANSFER_ENCODING));
    assert!(!out.contains_key(http::header::HOST));
    assert_eq!(out["x-forwarded-for"], "192.0.2.1");
});
