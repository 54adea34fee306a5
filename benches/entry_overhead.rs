//! Memory a cached entry costs beyond its body: an origin and an edge in this process, on
//! loopback; the heap is counted before and after 40,000 distinct 1 KiB objects are
//! fetched through the edge into its memory tier. The difference, divided by the number
//! of entries, less the body, is the per-entry overhead (cache key, headers, freshness,
//! moka's bookkeeping, and whatever the origin response's parsing left attached). It is
//! counted twice: once the entries are stored, and again after each was served once from
//! the cache (serving may leave something behind, such as a shared buffer's count).
//!
//! `cargo bench --bench entry_overhead`; the allocation sites of what stays allocated are
//! written as a DHAT profile (`dh_view.html`) to the temp directory.

use std::time::Duration;

use edgecache_edge::EdgeConfig;
use edgecache_edge::config::OriginEntry;
use futures_util::StreamExt;
use tokio::net::TcpListener;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const ENTRIES: usize = 40_000;
const BASELINE: usize = 2_000;
const BODY: usize = 1024;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(measure());
}

async fn measure() {
    let site = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(site.path().join("a")).expect("mkdir");
    for i in 0..BASELINE + ENTRIES {
        let body: Vec<u8> = (0..BODY).map(|b| (b * 7 + i) as u8).collect();
        std::fs::write(site.path().join(format!("a/{i:05}.3f9c2a1b.js")), body).expect("write");
    }
    let origin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin = origin_listener.local_addr().expect("addr");
    tokio::spawn(edgecache_origin::run(
        origin_listener,
        edgecache_origin::OriginConfig::new(site.path()),
        std::future::pending(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let edge = listener.local_addr().expect("addr");
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = admin_listener.local_addr().expect("addr");
    let config = EdgeConfig {
        pop: "bench".into(),
        origins: vec![OriginEntry::http(format!("http://{origin}"))],
        ..EdgeConfig::default()
    };
    tokio::spawn(edgecache_edge::run(
        listener,
        Some(admin_listener),
        config,
        std::future::pending(),
    ));

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    // The heap is only counted from here on, after the servers and the first connections
    // exist; the baseline objects settle connection pools and buffers.
    // The profile (where the retained bytes were allocated) is written when it is dropped.
    let profile = std::env::temp_dir().join("edgecache-entry-overhead.dhat.json");
    let profiler = dhat::Profiler::builder().file_name(&profile).build();
    fetch_all(&client, edge, 0..BASELINE, false).await;
    wait_for_entries(&client, admin, BASELINE).await;
    let before = dhat::HeapStats::get().curr_bytes;
    fetch_all(&client, edge, BASELINE..BASELINE + ENTRIES, false).await;
    wait_for_entries(&client, admin, BASELINE + ENTRIES).await;
    let stored = dhat::HeapStats::get().curr_bytes;
    fetch_all(&client, edge, BASELINE..BASELINE + ENTRIES, true).await;
    wait_for_entries(&client, admin, BASELINE + ENTRIES).await;
    let served = dhat::HeapStats::get().curr_bytes;

    drop(profiler);
    for (when, after) in [("stored", stored), ("served once", served)] {
        let per_entry = (after as f64 - before as f64) / ENTRIES as f64;
        println!(
            "memory tier, {when}: {ENTRIES} entries of {BODY} B: heap grew {} B, \
             {per_entry:.0} B per entry, {:.0} B per entry beyond its body",
            after as i64 - before as i64,
            per_entry - BODY as f64
        );
    }
}

/// Fetches every object of `range`; with `hits`, each must come from the memory tier.
async fn fetch_all(
    client: &reqwest::Client,
    edge: std::net::SocketAddr,
    range: std::ops::Range<usize>,
    hits: bool,
) {
    futures_util::stream::iter(range)
        .map(|i| {
            let url = format!("http://{edge}/a/{i:05}.3f9c2a1b.js");
            async move {
                let resp = client.get(&url).send().await.expect("request");
                assert_eq!(resp.status(), 200, "{url}");
                if hits {
                    let status = resp.headers()["cache-status"].to_str().expect("ascii");
                    assert!(
                        status.contains("; hit") && status.contains("detail=memory"),
                        "{url}: {status}"
                    );
                }
                let body = resp.bytes().await.expect("body");
                assert_eq!(body.len(), BODY, "{url}");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// Waits until the edge reports `n` entries in its memory tier (stores finish after the
/// responses that caused them).
async fn wait_for_entries(client: &reqwest::Client, admin: std::net::SocketAddr, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let body = client
            .get(format!("http://{admin}/stats"))
            .send()
            .await
            .expect("stats")
            .bytes()
            .await
            .expect("stats body");
        let stats: serde_json::Value = serde_json::from_slice(&body).expect("stats json");
        if stats["memory"]["entries"].as_u64() == Some(n as u64) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "memory tier never reached {n} entries: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
