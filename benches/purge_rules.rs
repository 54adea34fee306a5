//! Purge cost: applying a tag purge while 1,000,000 entries are cached (it must not depend
//! on how many match), and the check every lookup makes against the rules in force.

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use edgecache_edge::entry::CachedResponse;
use edgecache_edge::key::{CacheKey, KeyRules};
use edgecache_edge::memory::MemoryTier;
use edgecache_edge::policy::PolicyConfig;
use edgecache_edge::purge::PurgeRules;
use edgecache_purge_api::PurgeRequest;
use http::{HeaderMap, HeaderValue, StatusCode};

fn entry(tag: &'static str) -> Arc<CachedResponse> {
    let mut h = HeaderMap::new();
    h.insert("cache-control", HeaderValue::from_static("max-age=3600"));
    h.insert("surrogate-key", HeaderValue::from_static(tag));
    let now = SystemTime::now();
    Arc::new(CachedResponse::new(
        StatusCode::OK,
        &h,
        Bytes::from_static(b"x"),
        &HeaderMap::new(),
        now,
        now,
        &PolicyConfig::default(),
    ))
}

fn key(i: usize) -> CacheKey {
    CacheKey::new(
        "http",
        "bench",
        &format!("/o/{i}").parse().unwrap(),
        &KeyRules::default(),
    )
}

fn bench(c: &mut Criterion) {
    // A million entries, all carrying the tag about to be purged.
    let memory = MemoryTier::new(4 << 30, 1 << 20);
    let tagged = entry("release-42");
    for i in 0..1_000_000 {
        memory.store(&key(i), tagged.clone());
    }
    let request = PurgeRequest {
        tags: vec!["release-42".into()],
        ..PurgeRequest::default()
    };
    c.bench_function("tag_purge_apply_1m_cached", |b| {
        b.iter_batched(
            || PurgeRules::in_memory(KeyRules::default()),
            |rules| {
                rules.apply(black_box(&request), Some(1), SystemTime::now());
                rules
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let k = key(7);
    let none = PurgeRules::in_memory(KeyRules::default());
    c.bench_function("purge_check_no_rules", |b| {
        b.iter(|| black_box(none.verdict(&k, &tagged)))
    });
    let many = PurgeRules::in_memory(KeyRules::default());
    for i in 0..100 {
        let r = PurgeRequest {
            tags: vec![format!("t{i}")],
            prefixes: vec![format!("/p{i}/")],
            urls: vec![format!("/u{i}")],
            ..PurgeRequest::default()
        };
        many.apply(&r, None, SystemTime::now());
    }
    c.bench_function("purge_check_300_rules", |b| {
        b.iter(|| black_box(many.verdict(&k, &tagged)))
    });
    let started = std::time::Instant::now();
    let rules = PurgeRules::in_memory(KeyRules::default());
    rules.apply(
        &request,
        None,
        SystemTime::now() + std::time::Duration::from_millis(5),
    );
    let swept = memory.sweep(|k, e| rules.verdict(k, e), SystemTime::now());
    println!(
        "background sweep of 1,000,000 entries: {swept} removed in {:?}",
        started.elapsed()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
