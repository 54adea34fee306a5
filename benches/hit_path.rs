//! The cache-hit path, piece by piece and whole: request checks and key normalisation,
//! memory-tier lookup, freshness evaluation and response assembly.

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use edgecache_edge::cache_control::CacheControl;
use edgecache_edge::cache_status::CacheStatus;
use edgecache_edge::entry::CachedResponse;
use edgecache_edge::forward::check_request;
use edgecache_edge::key::KeyRules;
use edgecache_edge::memory::{Lookup, MemoryTier};
use edgecache_edge::policy::PolicyConfig;
use edgecache_edge::respond;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

fn origin_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("cache-control", "public, max-age=31536000, immutable"),
        ("content-type", "application/javascript; charset=utf-8"),
        ("etag", "\"400-17f3c2a1b\""),
        ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
        ("date", &httpdate::fmt_http_date(SystemTime::now())),
        ("accept-ranges", "bytes"),
        ("vary", "Accept-Encoding"),
    ] {
        h.insert(k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("cdn.example.com"));
    h.insert("accept-encoding", HeaderValue::from_static("gzip, br"));
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h
}

fn bench(c: &mut Criterion) {
    let rules = KeyRules::default();
    let uri: Uri = "/static/app.3f9c2a1b.js?v=2&utm_source=x&a=1"
        .parse()
        .unwrap();
    let req = request_headers();
    let mut parts = http::Request::get(uri).body(()).unwrap().into_parts().0;
    parts.headers = req.clone();
    let no_body = axum::body::Body::empty();
    let tier = MemoryTier::new(256 << 20, 8 << 20);
    let key = check_request(&parts, &no_body, &rules).unwrap();
    let now = SystemTime::now();
    let entry = Arc::new(CachedResponse::new(
        StatusCode::OK,
        &origin_headers(),
        Bytes::from(vec![b'x'; 1024]),
        &req,
        now,
        now,
        &PolicyConfig::default(),
    ));
    tier.store(&key, entry.clone());

    c.bench_function("key_normalise", |b| {
        b.iter(|| check_request(black_box(&parts), &no_body, &rules))
    });
    c.bench_function("memory_lookup", |b| {
        b.iter(|| black_box(tier.lookup(black_box(&key), &req)))
    });
    c.bench_function("freshness_evaluate", |b| {
        b.iter(|| {
            let cc = CacheControl::for_request(black_box(&req));
            black_box(entry.freshness.usability(&cc, SystemTime::now()))
        })
    });
    c.bench_function("response_assemble", |b| {
        b.iter(|| {
            let status = CacheStatus::hit(3600).render("edgecache-bench", None);
            black_box(respond::from_entry(
                &entry,
                &Method::GET,
                &req,
                5,
                status,
                None,
            ))
        })
    });
    c.bench_function("hit_path_whole", |b| {
        b.iter(|| {
            let now = SystemTime::now();
            let Ok(key) = check_request(black_box(&parts), &no_body, &rules) else {
                unreachable!("a valid request")
            };
            let cc = CacheControl::for_request(&req);
            let Lookup::Found(e) = tier.lookup(&key, &req) else {
                unreachable!("entry stored above")
            };
            let _ = e.freshness.usability(&cc, now);
            let status = CacheStatus::hit(e.freshness.ttl(now)).render("edgecache-bench", None);
            black_box(respond::from_entry(
                &e,
                &Method::GET,
                &req,
                e.freshness.age(now),
                status,
                None,
            ))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
