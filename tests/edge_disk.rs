//! The disk tier in a running edge: disk hits, promotion, big bodies, ranges, damage, eviction.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgecache_edge::EdgeConfig;
use edgecache_edge::config::ByteSize;
use support::{TestEdge, TestOrigin, header, resp};
use tokio::sync::Semaphore;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// `n` bytes that differ from one offset (and one `seed`) to the next.
fn pattern(n: usize, seed: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7 + seed * 13) % 251) as u8).collect()
}

/// An edge whose disk tier lives in `dir`.
async fn disk_edge(origin_url: &str, dir: &Path, tweak: impl FnOnce(&mut EdgeConfig)) -> TestEdge {
    let dir = dir.to_path_buf();
    TestEdge::start_with(origin_url, move |cfg| {
        cfg.disk.dir = Some(dir);
        tweak(cfg);
    })
    .await
}

/// Polls `/stats` until `ready` holds (at most 10 s), and returns the stats that satisfied it.
async fn wait_for(
    edge: &TestEdge,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = edge.stats().await;
        if ready(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {stats}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the disk tier has committed `entries` entries.
async fn wait_for_disk_entries(edge: &TestEdge, entries: u64) -> serde_json::Value {
    wait_for(edge, &format!("{entries} disk entries"), |s| {
        s["disk"]["entries"] == entries
    })
    .await
}

/// Every file under `<dir>/bodies`.
fn body_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir.join("bodies"), &mut out);
    out
}

fn stat(stats: &serde_json::Value, tier: &str, field: &str) -> u64 {
    stats[tier][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {tier}.{field} in {stats}"))
}

fn is_hit_from(cache_status: &str, tier: &str) -> bool {
    cache_status.starts_with("edgecache-test; hit; ttl=")
        && cache_status.ends_with(&format!("; detail={tier}"))
}

/// The `Host` of every request: it is part of the cache key, and each edge listens on a
/// port of its own, so edges sharing a directory share keys only through a fixed `Host`.
const HOST: &str = "cdn.test";

/// GETs `path` from `edge` with `Host: cdn.test` and `headers`.
async fn get(edge: &TestEdge, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut all = vec![("host", HOST)];
    all.extend_from_slice(headers);
    edge.get_with(path, &all).await
}

const MISS_STORED: &str = "edgecache-test; fwd=uri-miss; fwd-status=200; stored";

/// An origin answering every path with `body`, fresh for an hour.
async fn origin_of(body: Vec<u8>) -> TestOrigin {
    TestOrigin::start(move |_, _| {
        resp(
            200,
            &[("cache-control", "max-age=3600"), ("etag", "\"v1\"")],
            body.clone(),
        )
    })
    .await
}

/// GETs `path` and checks it is a miss that was stored, with exactly `body`.
async fn get_miss(edge: &TestEdge, path: &str, body: &[u8]) {
    let r = get(edge, path, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-status"), MISS_STORED);
    assert!(r.bytes().await.unwrap() == body, "miss body differs");
}

/// GETs `path` and checks it is a hit from `tier` with exactly `body`.
async fn get_hit(edge: &TestEdge, path: &str, tier: &str, body: &[u8]) {
    let r = get(edge, path, &[]).await;
    assert_eq!(r.status(), 200);
    let status = header(&r, "cache-status").to_owned();
    assert!(is_hit_from(&status, tier), "{status}");
    assert_eq!(header(&r, "content-length"), body.len().to_string());
    assert_eq!(header(&r, "etag"), "\"v1\"");
    assert!(r.bytes().await.unwrap() == body, "{tier} hit body differs");
}

/// An edge whose memory tier takes nothing over 64 KiB, with one 1 MiB body (`pattern(MIB,
/// seed)`) at `/big.bin` fetched once and committed to its disk tier in `dir`: every hit on
/// it reads the disk tier. Returns the body, the origin and the edge.
async fn disk_only_entry(dir: &Path, seed: usize) -> (Vec<u8>, TestOrigin, TestEdge) {
    let body = pattern(MIB, seed);
    let origin = origin_of(body.clone()).await;
    let edge = disk_edge(&origin.url(), dir, |cfg| {
        cfg.memory.max_object_size = ByteSize(64 << 10);
    })
    .await;
    get_miss(&edge, "/big.bin", &body).await;
    wait_for_disk_entries(&edge, 1).await;
    (body, origin, edge)
}

#[tokio::test]
async fn disk_hit_after_memory_eviction_or_on_a_fresh_edge() {
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(100 * KIB, 1);
    let origin = origin_of(body.clone()).await;

    let first = disk_edge(&origin.url(), dir.path(), |_| {}).await;
    get_miss(&first, "/obj.bin", &body).await;
    let stats = wait_for_disk_entries(&first, 1).await;
    assert_eq!(stat(&stats, "disk", "write_bytes"), body.len() as u64);
    first.stop().await;

    let second = disk_edge(&origin.url(), dir.path(), |_| {}).await;
    get_hit(&second, "/obj.bin", "disk", &body).await;
    assert_eq!(origin.hits(), 1);
    // Promoted: the next request is answered from memory without reading the disk again.
    get_hit(&second, "/obj.bin", "memory", &body).await;
    assert_eq!(origin.hits(), 1);
    let stats = second.stats().await;
    assert_eq!(stat(&stats, "disk", "read_bytes"), body.len() as u64);
    assert_eq!(stat(&stats, "memory", "entries"), 1);
    assert_eq!(stat(&stats, "disk", "corrupt_dropped"), 0);
    assert_eq!(stats["origin_fetches"], 0);
}

#[tokio::test]
async fn a_body_larger_than_max_object_size_is_served_from_disk_and_never_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let (body, origin, edge) = disk_only_entry(dir.path(), 2).await;
    for _ in 0..2 {
        get_hit(&edge, "/big.bin", "disk", &body).await;
    }
    assert_eq!(origin.hits(), 1);
    let stats = edge.stats().await;
    assert_eq!(stat(&stats, "memory", "entries"), 0);
    assert_eq!(stat(&stats, "disk", "write_bytes"), body.len() as u64);
    // The first hit is read from the file (which is verified whole besides), the second
    // sent straight from it.
    let len = body.len() as u64;
    assert_eq!(sent_and_read(&edge, 3 * len).await, len);
    assert_eq!(body_files(dir.path()).len(), 1);
}

#[tokio::test]
async fn a_range_of_a_disk_only_entry_reads_only_the_blocks_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (body, origin, edge) = disk_only_entry(dir.path(), 3).await;
    let before = stat(&edge.stats().await, "disk", "read_bytes");

    let r = get(&edge, "/big.bin", &[("range", "bytes=300000-300009")]).await;
    assert_eq!(r.status(), 206);
    let status = header(&r, "cache-status").to_owned();
    assert!(is_hit_from(&status, "disk"), "{status}");
    assert_eq!(header(&r, "content-range"), "bytes 300000-300009/1048576");
    assert_eq!(header(&r, "content-length"), "10");
    assert_eq!(&r.bytes().await.unwrap()[..], &body[300_000..300_010]);

    let read = stat(&edge.stats().await, "disk", "read_bytes") - before;
    assert!(read > 0, "the range was not read from the disk tier");
    assert!(
        read <= 512 * KIB as u64,
        "read {read} bytes for a 10-byte range"
    );
    assert_eq!(origin.hits(), 1);
}

/// Stores a 100 KiB object through one edge, applies `damage` to its body file, and checks
/// that a new edge on the same directory drops it and fetches a good copy.
async fn damaged_body_file_is_dropped_and_refetched(damage: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(100 * KIB, 4);
    let origin = origin_of(body.clone()).await;
    let first = disk_edge(&origin.url(), dir.path(), |_| {}).await;
    get_miss(&first, "/obj.bin", &body).await;
    wait_for_disk_entries(&first, 1).await;
    first.stop().await;

    let files = body_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");
    damage(&files[0]);

    let second = disk_edge(&origin.url(), dir.path(), |_| {}).await;
    get_miss(&second, "/obj.bin", &body).await;
    assert_eq!(origin.hits(), 2);
    let stats = second.stats().await;
    assert_eq!(stat(&stats, "disk", "corrupt_dropped"), 1, "{stats}");
    assert!(!files[0].exists(), "the damaged file was left in place");
    get_hit(&second, "/obj.bin", "memory", &body).await;
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn a_corrupt_body_file_is_dropped_and_refetched() {
    damaged_body_file_is_dropped_and_refetched(|path| {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[50_000] ^= 0x01;
        std::fs::write(path, bytes).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_truncated_body_file_is_dropped_and_refetched() {
    damaged_body_file_is_dropped_and_refetched(|path| {
        let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.set_len(60_000).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_full_tier_evicts_down_to_its_size() {
    const OBJECTS: usize = 40;
    const SIZE: usize = 128 * KIB;
    const CAPACITY: u64 = 2 << 20;
    let dir = tempfile::tempdir().unwrap();
    let origin = TestOrigin::start(|seen, _| {
        let n: usize = seen.uri.trim_start_matches("/o/").parse().unwrap();
        resp(200, &[("cache-control", "max-age=3600")], pattern(SIZE, n))
    })
    .await;
    let edge = disk_edge(&origin.url(), dir.path(), |cfg| {
        cfg.disk.size = ByteSize(CAPACITY);
        cfg.memory.max_object_size = ByteSize(16 << 10);
    })
    .await;

    for n in 0..OBJECTS {
        let r = get(&edge, &format!("/o/{n}"), &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "cache-status"), MISS_STORED);
        assert!(r.bytes().await.unwrap() == pattern(SIZE, n), "/o/{n}");
    }
    assert_eq!(origin.hits(), OBJECTS);
    let total = (OBJECTS * SIZE) as u64;
    // Every body is committed, then either kept or evicted (refused admission counts too).
    let stats = wait_for(&edge, "every body committed and kept or evicted", |s| {
        let n = |field: &str| s["disk"][field].as_u64().unwrap_or(0);
        n("write_bytes") == total && n("entries") + n("evictions") == OBJECTS as u64
    })
    .await;
    assert!(stat(&stats, "disk", "bytes") <= CAPACITY, "{stats}");
    assert!(stat(&stats, "disk", "evictions") > 0, "{stats}");
    let entries = stat(&stats, "disk", "entries");
    assert_eq!(stat(&stats, "disk", "bytes"), entries * SIZE as u64);
    let files = body_files(dir.path()).len();
    assert!(files <= 17, "{files} body files left for a 2 MiB tier");
    assert_eq!(files as u64, entries, "files and index disagree: {stats}");

    // What the index still names is served from disk, whole; the rest is fetched again.
    let mut from_disk = 0;
    for n in 0..OBJECTS {
        let r = get(&edge, &format!("/o/{n}"), &[]).await;
        assert_eq!(r.status(), 200);
        let status = header(&r, "cache-status").to_owned();
        if is_hit_from(&status, "disk") {
            from_disk += 1;
        } else {
            assert_eq!(status, MISS_STORED);
        }
        assert!(r.bytes().await.unwrap() == pattern(SIZE, n), "/o/{n}");
    }
    assert!(from_disk > 0, "nothing was served from disk");
    assert_eq!(origin.hits(), 2 * OBJECTS - from_disk);
    assert_eq!(stat(&edge.stats().await, "disk", "corrupt_dropped"), 0);
}

#[tokio::test]
async fn an_incompatible_tier_directory_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let old_format = "edgecache-disk 0\n";
    std::fs::write(dir.path().join("FORMAT"), old_format).unwrap();
    std::fs::write(dir.path().join("junk.txt"), "left by someone else").unwrap();
    std::fs::create_dir_all(dir.path().join("junk-dir/deeper")).unwrap();
    std::fs::write(dir.path().join("junk-dir/deeper/file"), "junk").unwrap();
    // Named like a body file, with an id this test's edge never reaches.
    std::fs::create_dir_all(dir.path().join("bodies/ef")).unwrap();
    let stale_body = dir.path().join("bodies/ef/00000000deadbeef");
    std::fs::write(&stale_body, "an old format's body").unwrap();

    let body = pattern(10 * KIB, 5);
    let origin = origin_of(body.clone()).await;
    let edge = disk_edge(&origin.url(), dir.path(), |_| {}).await;
    get_miss(&edge, "/obj.bin", &body).await;
    get_hit(&edge, "/obj.bin", "memory", &body).await;
    assert_eq!(origin.hits(), 1);
    wait_for_disk_entries(&edge, 1).await;

    assert!(!dir.path().join("junk.txt").exists());
    assert!(!dir.path().join("junk-dir").exists());
    assert!(!stale_body.exists());
    assert_ne!(
        std::fs::read_to_string(dir.path().join("FORMAT")).unwrap(),
        old_format
    );
    assert_eq!(body_files(dir.path()).len(), 1);
}

#[tokio::test]
async fn concurrent_clients_of_a_cold_large_object_share_one_fetch() {
    const CLIENTS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(MIB, 6);
    let gate = Arc::new(Semaphore::new(0));
    let origin = {
        let body = body.clone();
        TestOrigin::start_gated(
            move |_, _| {
                resp(
                    200,
                    &[("cache-control", "max-age=3600"), ("etag", "\"v1\"")],
                    body.clone(),
                )
            },
            gate.clone(),
        )
        .await
    };
    let edge = disk_edge(&origin.url(), dir.path(), |cfg| {
        cfg.memory.max_object_size = ByteSize(64 << 10);
    })
    .await;

    let requests: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url) = (edge.client.clone(), edge.url("/cold.bin"));
            tokio::spawn(async move {
                let r = client.get(url).header("host", HOST).send().await.unwrap();
                let status = header(&r, "cache-status").to_owned();
                (r.status().as_u16(), status, r.bytes().await.unwrap())
            })
        })
        .collect();
    wait_for(&edge, "every other client waiting on the fetch", |s| {
        s["collapsed_requests"] == (CLIENTS - 1) as u64
    })
    .await;
    assert_eq!(origin.hits(), 1);
    gate.add_permits(1000);

    let mut collapsed = 0;
    for request in requests {
        let (code, status, got) = request.await.unwrap();
        assert_eq!(code, 200, "{status}");
        assert!(status.starts_with(MISS_STORED), "{status}");
        if status == format!("{MISS_STORED}; collapsed") {
            collapsed += 1;
        }
        assert_eq!(got.len(), body.len());
        assert!(got == body, "body differs from the origin's");
    }
    assert_eq!(collapsed, CLIENTS - 1);
    assert_eq!(origin.hits(), 1);

    wait_for_disk_entries(&edge, 1).await;
    get_hit(&edge, "/cold.bin", "disk", &body).await;
    assert_eq!(origin.hits(), 1);
    assert_eq!(edge.stats().await["origin_fetches"], 1);
}

#[tokio::test]
async fn a_directory_in_use_by_a_running_edge_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(MIB, 7);
    let origin = origin_of(body.clone()).await;
    let running = disk_edge(&origin.url(), dir.path(), |cfg| {
        cfg.memory.max_object_size = ByteSize(64 << 10);
    })
    .await;
    get_miss(&running, "/big.bin", &body).await;
    wait_for_disk_entries(&running, 1).await;
    let files = body_files(dir.path());
    assert_eq!(files.len(), 1, "{files:?}");

    // A second edge configured with the same directory, e.g. a restart that overlaps the
    // old process's drain. Refusing to start, or starting without the tier, are both fine;
    // taking the directory from under the running edge is not.
    let mut config = EdgeConfig {
        origins: vec![edgecache_edge::config::OriginEntry::http(origin.url())],
        ..EdgeConfig::default()
    };
    config.disk.dir = Some(dir.path().to_path_buf());
    let refused = edgecache_edge::Edge::new(&config);
    let err = refused
        .err()
        .expect("a second edge on the same directory must be refused");
    assert!(err.to_string().contains("edge.disk.dir"), "{err}");

    assert!(
        files[0].exists(),
        "the running edge's body file was deleted"
    );
    get_hit(&running, "/big.bin", "disk", &body).await;
    assert_eq!(origin.hits(), 1);
}

/// POSTs `purge` (JSON) to the edge's own purge endpoint.
async fn purge_on(edge: &TestEdge, purge: &str) {
    let r = support::client()
        .post(edge.admin_url("/purge"))
        .header("content-type", "application/json")
        .body(purge.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// GETs `path` and returns its cache status and body.
async fn status_and_body(edge: &TestEdge, path: &str) -> (String, Vec<u8>) {
    let r = get(edge, path, &[]).await;
    assert_eq!(r.status(), 200);
    let status = header(&r, "cache-status").to_owned();
    (status, r.bytes().await.unwrap().to_vec())
}

/// A disk-only entry read once (so its record is known to the edge) and then changed, by a
/// hard purge and a new copy or by a soft purge and a 304, is served as it is now.
#[tokio::test]
async fn a_disk_only_entry_is_served_as_last_stored() {
    let dir = tempfile::tempdir().unwrap();
    let size = 256 * KIB;
    // Hit n of the origin answers version n; a conditional request gets a 304.
    let origin = TestOrigin::start(move |seen, n| {
        let headers = [("cache-control", "max-age=3600"), ("etag", "\"v1\"")];
        if seen.headers.contains_key("if-none-match") {
            resp(304, &headers, Vec::new())
        } else {
            resp(200, &headers, pattern(size, n))
        }
    })
    .await;
    let edge = disk_edge(&origin.url(), dir.path(), |cfg| {
        cfg.memory.max_object_size = ByteSize(64 << 10);
    })
    .await;

    get_miss(&edge, "/big.bin", &pattern(size, 0)).await;
    wait_for_disk_entries(&edge, 1).await;
    get_hit(&edge, "/big.bin", "disk", &pattern(size, 0)).await;
    // The record read by that hit is kept decoded, and counted.
    let held = stat(&edge.stats().await, "disk", "index_cache_bytes");
    assert!(held > 0 && held < 4096, "index cache holds {held} bytes");

    // Hard purge: the next request fetches version 1, and once that is on disk it is what
    // a hit serves, without another origin request.
    purge_on(&edge, r#"{"urls":["/big.bin"]}"#).await;
    let (status, body) = status_and_body(&edge, "/big.bin").await;
    assert_eq!(status, MISS_STORED);
    assert!(
        body == pattern(size, 1),
        "the miss after the purge served old bytes"
    );
    wait_for(&edge, "the new copy on disk", |s| {
        s["disk"]["write_bytes"] == 2 * size as u64
    })
    .await;
    get_hit(&edge, "/big.bin", "disk", &pattern(size, 1)).await;
    get_hit(&edge, "/big.bin", "disk", &pattern(size, 1)).await;
    assert_eq!(origin.hits(), 2);

    // Soft purge: one revalidation (a 304), after which hits are fresh again.
    purge_on(&edge, r#"{"urls":["/big.bin"],"soft":true}"#).await;
    let (status, body) = status_and_body(&edge, "/big.bin").await;
    assert!(status.contains("fwd=stale"), "{status}");
    assert!(body == pattern(size, 1));
    assert_eq!(origin.hits(), 3);
    let seen = origin.seen();
    assert!(seen[2].headers.contains_key("if-none-match"), "{seen:?}");
    for _ in 0..3 {
        get_hit(&edge, "/big.bin", "disk", &pattern(size, 1)).await;
    }
    assert_eq!(
        origin.hits(),
        3,
        "the refreshed record was not what later hits read"
    );
}

/// Descriptors of this process open on `path` (the edge runs in the test's process).
fn descriptors_on(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| {
            // A removed file's link reads "PATH (deleted)".
            let target = target.to_string_lossy();
            target.strip_suffix(" (deleted)").unwrap_or(&target) == path.to_string_lossy()
        })
        .count()
}

/// Waits (at most 10 s, far less than the 30 s a file stays open unread) until this process
/// holds no descriptor on `path`. A response or a recheck that was using the file when it
/// was removed may still hold it for a moment; the files kept open must not.
async fn wait_until_closed(path: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while descriptors_on(path) > 0 {
        assert!(Instant::now() < deadline, "{what} is still open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Serves `/big.bin` (a disk-only entry, see [`disk_only_entry`]) from disk three times,
/// waits for the recheck the first hit started, and checks its one body file is then held
/// open by one descriptor; returns its path.
async fn hits_keep_the_file_open(edge: &TestEdge, dir: &Path, body: &[u8]) -> PathBuf {
    for _ in 0..3 {
        get_hit(edge, "/big.bin", "disk", body).await;
    }
    // The first hit's recheck of the file has finished: nothing reads it behind the test.
    sent_and_read(edge, 4 * body.len() as u64).await;
    let files = body_files(dir);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        descriptors_on(&files[0]),
        1,
        "the body file is not kept open"
    );
    files.into_iter().next().unwrap()
}

/// Disk hits keep their body file open for the next ones. A change made to that file in
/// place, while it is open, is still found: the damaged bytes are never sent, the entry is
/// dropped, and the next request fetches a good copy.
#[tokio::test]
async fn a_body_file_damaged_while_kept_open_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let (body, origin, edge) = disk_only_entry(dir.path(), 9).await;
    let files = [hits_keep_the_file_open(&edge, dir.path(), &body).await];

    // The same file (same inode), one byte changed in its third block.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[600_000] ^= 0x01;
    std::fs::write(&files[0], &bytes).unwrap();

    // The damaged block is never sent: the response breaks off before it.
    let r = get(&edge, "/big.bin", &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.is_err(), "a damaged body was sent whole");
    // The entry leaves the eviction policy last, after its record and its file.
    wait_for(&edge, "the damaged entry dropped", |s| {
        s["disk"]["corrupt_dropped"] == 1 && s["disk"]["entries"] == 0
    })
    .await;
    assert!(!files[0].exists(), "the damaged file was left in place");
    wait_until_closed(&files[0], "the damaged file").await;

    get_miss(&edge, "/big.bin", &body).await;
    assert_eq!(origin.hits(), 2);
}

/// A body file kept open is closed when its entry is purged: the removed file's space is
/// not held by the edge.
#[tokio::test]
async fn a_purged_body_file_is_not_kept_open() {
    let dir = tempfile::tempdir().unwrap();
    let (body, _origin, edge) = disk_only_entry(dir.path(), 10).await;
    let files = [hits_keep_the_file_open(&edge, dir.path(), &body).await];

    purge_on(&edge, r#"{"urls":["/big.bin"]}"#).await;
    wait_for_disk_entries(&edge, 0).await;
    assert!(!files[0].exists(), "the purged body file is still there");
    wait_until_closed(&files[0], "the purged body file").await;
}

/// Waits until the disk tier has sent and read `total` body bytes between them, and
/// returns the bytes it sent straight from files. One read in 64 (the first among them)
/// rechecks a trusted file: the blocks it asks for are verified on the blocking pool, and
/// the hit is answered from memory, or, for a disk-only entry, read as it would be without
/// `sendfile`.
async fn sent_and_read(edge: &TestEdge, total: u64) -> u64 {
    let stats = wait_for(edge, &format!("{total} bytes sent and read"), |s| {
        s["disk"]["sent_bytes"].as_u64().unwrap() + s["disk"]["read_bytes"].as_u64().unwrap()
            == total
    })
    .await;
    stat(&stats, "disk", "sent_bytes")
}

/// An origin serving `small` at `/small.bin` and `big` at every other path, and an edge with
/// a disk tier in `dir` that has fetched both (`/big.bin`, `/small.bin`) and committed them
/// to disk, each held in memory too.
async fn two_objects_stored(dir: &Path, big: &[u8], small: &[u8]) -> (TestOrigin, TestEdge) {
    let (b, s) = (big.to_vec(), small.to_vec());
    let origin = TestOrigin::start(move |seen, _| {
        let body = if seen.uri.ends_with("/small.bin") {
            s.clone()
        } else {
            b.clone()
        };
        resp(
            200,
            &[("cache-control", "max-age=3600"), ("etag", "\"v1\"")],
            body,
        )
    })
    .await;
    let edge = disk_edge(&origin.url(), dir, |_| {}).await;
    get_miss(&edge, "/big.bin", big).await;
    get_miss(&edge, "/small.bin", small).await;
    wait_for_disk_entries(&edge, 2).await;
    (origin, edge)
}

/// Whole-body hits and single ranges of 64 KiB and up on plain HTTP/1 connections are sent
/// straight from their disk-tier file (`sendfile`), for entries held in memory too.
/// Smaller bodies and ranges, and HEADs, are not. Every byte is the origin's.
#[tokio::test]
async fn large_hits_are_sent_from_their_body_file() {
    let dir = tempfile::tempdir().unwrap();
    let big = pattern(MIB, 11);
    let small = pattern(8 * KIB, 12);
    let (origin, edge) = two_objects_stored(dir.path(), &big, &small).await;

    for _ in 0..4 {
        get_hit(&edge, "/big.bin", "memory", &big).await;
        get_hit(&edge, "/small.bin", "memory", &small).await;
    }
    // The first of the 4 hits is answered from memory while the file is verified.
    let len = big.len() as u64;
    let sent = sent_and_read(&edge, 4 * len).await;
    assert_eq!(sent, 3 * len, "bytes sent from the file");

    let r = edge
        .client
        .head(edge.url("/big.bin"))
        .header("host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), len.to_string());
    assert!(r.bytes().await.unwrap().is_empty());
    let r = get(&edge, "/big.bin", &[("range", "bytes=1000-1999")]).await;
    assert_eq!(r.status(), 206);
    assert!(r.bytes().await.unwrap() == big[1000..2000], "range differs");
    assert_eq!(stat(&edge.stats().await, "disk", "sent_bytes"), sent);
    // A single range of 64 KiB or more is sent from the file.
    get_large_range(&edge, &big).await;
    assert_eq!(
        stat(&edge.stats().await, "disk", "sent_bytes"),
        sent + 204_800
    );
    assert_eq!(origin.hits(), 2);
}

/// GETs bytes 100000-304799 of `/big.bin` and checks the 206 and its bytes.
async fn get_large_range(edge: &TestEdge, body: &[u8]) {
    let r = get(edge, "/big.bin", &[("range", "bytes=100000-304799")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(
        header(&r, "content-range"),
        format!("bytes 100000-304799/{}", body.len())
    );
    assert_eq!(header(&r, "content-length"), "204800");
    assert!(
        r.bytes().await.unwrap() == body[100_000..304_800],
        "large range differs"
    );
}

/// A disk-only entry and a large range of it are sent from its file too, and HTTP/2 (which
/// frames every body itself) gets the same bytes copied.
#[tokio::test]
async fn disk_only_hits_are_sent_from_their_file_and_http2_gets_copies() {
    let dir = tempfile::tempdir().unwrap();
    let (body, origin, edge) = disk_only_entry(dir.path(), 13).await;
    for _ in 0..3 {
        get_hit(&edge, "/big.bin", "disk", &body).await;
    }
    // The first of the 3 hits is read as without `sendfile` while the file is verified.
    let len = body.len() as u64;
    let sent = sent_and_read(&edge, 4 * len).await;
    assert_eq!(sent, 2 * len, "bytes sent from the file");
    get_large_range(&edge, &body).await;
    let sent = stat(&edge.stats().await, "disk", "sent_bytes");
    assert_eq!(sent, 2 * len + 204_800, "bytes sent from the file");

    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // HTTP/2 requests name the edge's own address as their authority, a key of its own:
    // one miss, then a disk hit.
    for (i, expect) in ["fwd=uri-miss", "hit"].into_iter().enumerate() {
        let r = h2.get(edge.url("/big.bin")).send().await.unwrap();
        assert_eq!(r.version(), http::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        let status = header(&r, "cache-status").to_owned();
        assert!(status.contains(expect), "{status}");
        assert!(r.bytes().await.unwrap() == body, "HTTP/2 body differs");
        if i == 0 {
            wait_for_disk_entries(&edge, 2).await;
        }
    }
    assert_eq!(stat(&edge.stats().await, "disk", "sent_bytes"), sent);
    assert_eq!(origin.hits(), 2);
}

/// Requests pipelined on one connection, each sent from the file, come back whole and in
/// order: the file ranges queued on a connection are sent in the order of its responses.
#[tokio::test]
async fn pipelined_requests_sent_from_files_come_back_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let big = pattern(MIB, 14);
    let mid = pattern(100 * KIB, 15);
    let (origin, edge) = two_objects_stored(dir.path(), &big, &mid).await;
    // The first read of a process is a recheck, answered from memory: take it first.
    get_hit(&edge, "/big.bin", "memory", &big).await;
    let before = stat(&edge.stats().await, "disk", "sent_bytes");

    let mut tcp = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
    let request =
        |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nhost: {HOST}\r\n{extra}\r\n");
    let all = [
        request("/big.bin", ""),
        request("/small.bin", ""),
        request(
            "/big.bin",
            "range: bytes=500000-699999\r\nconnection: close\r\n",
        ),
    ]
    .concat();
    tcp.write_all(all.as_bytes()).await.unwrap();
    let mut data = Vec::new();
    tcp.read_to_end(&mut data).await.unwrap();

    let mut rest = &data[..];
    for (status, want) in [
        ("HTTP/1.1 200 OK", &big[..]),
        ("HTTP/1.1 200 OK", &mid[..]),
        ("HTTP/1.1 206 Partial Content", &big[500_000..700_000]),
    ] {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = std::str::from_utf8(&rest[..end]).unwrap();
        assert!(head.starts_with(status), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .expect("content-length")
            .parse()
            .unwrap();
        let body = &rest[end + 4..end + 4 + len];
        assert!(body == want, "a pipelined body differs ({status})");
        rest = &rest[end + 4 + len..];
    }
    assert!(
        rest.is_empty(),
        "{} bytes after the last response",
        rest.len()
    );
    assert_eq!(
        stat(&edge.stats().await, "disk", "sent_bytes") - before,
        (MIB + 100 * KIB + 200_000) as u64
    );
    assert_eq!(origin.hits(), 2);
}

/// The recheck that falls on a large range verifies the blocks holding that range, not the
/// whole file: seeking through a large video does not read all of it again.
#[tokio::test]
async fn a_recheck_on_a_large_range_reads_only_its_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let (body, origin, edge) = disk_only_entry(dir.path(), 16).await;
    // The first read of a process is a recheck: the range is read as without `sendfile`,
    // and the one 256 KiB block holding it is verified on the blocking pool.
    for sent in [0, 100_000] {
        let r = get(&edge, "/big.bin", &[("range", "bytes=300000-399999")]).await;
        assert_eq!(r.status(), 206);
        assert!(r.bytes().await.unwrap() == body[300_000..400_000]);
        wait_for(&edge, "the range read and its block verified", |s| {
            s["disk"]["read_bytes"] == 100_000 + 256 * KIB as u64 && s["disk"]["sent_bytes"] == sent
        })
        .await;
    }
    assert_eq!(origin.hits(), 1);
}
