//! The disk tier: reading a stored body back (verified), and reopening a populated tier.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use edgecache_edge::disk::{DiskLookup, DiskTier};
use edgecache_edge::entry::CachedResponse;
use edgecache_edge::key::{CacheKey, KeyRules};
use edgecache_edge::policy::PolicyConfig;
use http::{HeaderMap, HeaderValue, StatusCode};

fn entry(body: Bytes) -> CachedResponse {
    let mut h = HeaderMap::new();
    h.insert("cache-control", HeaderValue::from_static("max-age=3600"));
    let now = SystemTime::now();
    CachedResponse::new(
        StatusCode::OK,
        &h,
        body,
        &HeaderMap::new(),
        now,
        now,
        &PolicyConfig::default(),
    )
}

fn key(i: usize) -> CacheKey {
    CacheKey::new(
        "http",
        "bench",
        &format!("/obj/{i}").parse().unwrap(),
        &KeyRules::default(),
    )
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tier = DiskTier::open(dir.path(), 1 << 30).unwrap();
    for (name, size) in [("disk_read_100k", 100 * 1024), ("disk_read_1m", 1 << 20)] {
        let k = key(size);
        tier.store_whole(&k, &entry(Bytes::from(vec![7u8; size])))
            .unwrap();
        c.bench_function(name, |b| {
            b.iter(|| {
                let DiskLookup::Found(e) = tier.lookup(&k, &HeaderMap::new()) else {
                    unreachable!("stored above")
                };
                black_box(rt.block_on(tier.read_all(&e)).unwrap())
            })
        });
    }

    // What a hit on a body kept on disk only does: the lookup, then the body streamed from
    // the (verified, page-cached) file. The first read verifies the file; later ones trust it.
    c.bench_function("disk_lookup", |b| {
        let k = key(100 * 1024);
        b.iter(|| black_box(tier.lookup(&k, &HeaderMap::new())))
    });
    for (name, size) in [("disk_hit_100k", 100 * 1024), ("disk_hit_1m", 1 << 20)] {
        let k = key(size);
        c.bench_function(name, |b| {
            b.iter(|| {
                let DiskLookup::Found(e) = tier.lookup(&k, &HeaderMap::new()) else {
                    unreachable!("stored above")
                };
                let len = e.disk.as_ref().map_or(0, |d| d.len);
                let read: usize = rt.block_on(async {
                    use futures_util::StreamExt;
                    tier.stream(&e, 0, len - 1)
                        .map(|block| block.unwrap().len())
                        .fold(0, |a, n| async move { a + n })
                        .await
                });
                assert_eq!(read as u64, len);
            })
        });
    }

    // Reopening a tier of 100,000 entries: how long until it serves, and until the
    // eviction policy knows every entry.
    let big = tempfile::tempdir().unwrap();
    {
        let tier = DiskTier::open(big.path(), 1 << 40).unwrap();
        let body = entry(Bytes::from_static(b"x"));
        for i in 0..100_000 {
            tier.store_whole_unsynced(&key(i), &body).unwrap();
        }
        tier.flush();
    }
    let mut group = c.benchmark_group("disk_reopen_100k");
    group.sample_size(10);
    group.bench_function("open_until_serving", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (tier, started) = reopen(big.path());
                let DiskLookup::Found(_) = tier.lookup(&key(99_999), &HeaderMap::new()) else {
                    panic!("entry missing after reopen")
                };
                total += started.elapsed();
                while !tier.stats().index_loaded {
                    std::thread::yield_now();
                }
            }
            total
        })
    });
    group.bench_function("open_until_index_loaded", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (tier, started) = reopen(big.path());
                while !tier.stats().index_loaded {
                    std::thread::yield_now();
                }
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
}

/// Opens the tier at `dir`, timed from the attempt that succeeds: the previous instance's
/// orphan sweep may still hold the directory's lock for a moment after it is dropped.
fn reopen(dir: &std::path::Path) -> (DiskTier, Instant) {
    loop {
        let started = Instant::now();
        match DiskTier::open(dir, 1 << 40) {
            Ok(tier) => return (tier, started),
            Err(e) if e.to_string().contains("in use") => std::thread::yield_now(),
            Err(e) => panic!("reopening the disk tier: {e}"),
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
