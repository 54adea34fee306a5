//! Purges across restarts: a PoP that was down, an unreachable purge API, a restarted one.

mod support;

use std::time::{Duration, Instant};

use edgecache_purge_api::{PurgeClient, PurgeRequest, PurgeStatus};
use support::purge::{PurgeService, follower};
use support::{TestEdge, TestOrigin, header, resp};
use tokio::net::TcpListener;

/// The `Host` of every request: it is part of the cache key, and a restarted edge listens on
/// a new port, so its disk tier's keys match only through a fixed `Host`.
const HOST: &str = "cdn.test";

/// Polls `/stats` until `ready` holds (at most 10 s) and returns the stats that satisfied it.
async fn wait_for_stats(
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the edge has caught up with the purge log at `seq`.
async fn wait_caught_up(edge: &TestEdge, seq: u64) -> serde_json::Value {
    wait_for_stats(edge, &format!("caught up at seq {seq}"), |s| {
        s["purge"]["caught_up"] == true && s["purge"]["last_seq"] == seq
    })
    .await
}

/// Polls the purge's status until every PoP in `pops` has applied it.
async fn wait_applied(client: &PurgeClient, id: &str, pops: &[&str]) -> PurgeStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = client.status(id).await.unwrap();
        let applied = |name: &str| status.pops.iter().any(|p| p.name == name && p.applied);
        if pops.iter().all(|p| applied(p)) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "not applied by {pops:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /readyz` on the edge's admin listener: status and body.
async fn readyz(edge: &TestEdge) -> (u16, String) {
    let r = edge
        .client
        .get(edge.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// An origin answering `PATH #N` (N: its hit number), fresh for an hour.
async fn numbered_origin() -> TestOrigin {
    TestOrigin::start(|seen, n| {
        resp(
            200,
            &[("cache-control", "max-age=3600")],
            format!("{} #{n}", seen.uri),
        )
    })
    .await
}

async fn get(edge: &TestEdge, path: &str) -> reqwest::Response {
    edge.get_with(path, &[("host", HOST)]).await
}

/// GETs `path` and checks it went to the origin and was stored; returns the body.
async fn expect_miss(edge: &TestEdge, pop: &str, path: &str) -> String {
    let r = get(edge, path).await;
    assert_eq!(r.status(), 200, "{pop} {path}");
    assert_eq!(
        header(&r, "cache-status"),
        format!("edgecache-{pop}; fwd=uri-miss; fwd-status=200; stored"),
        "{pop} {path}"
    );
    let body = r.text().await.unwrap();
    assert!(
        body.starts_with(&format!("{path} #")),
        "{pop} {path}: {body}"
    );
    body
}

/// GETs `path` and checks it is a fresh hit from `tier` with exactly `body`.
async fn expect_hit(edge: &TestEdge, pop: &str, path: &str, tier: &str, body: &str) {
    let r = get(edge, path).await;
    assert_eq!(r.status(), 200, "{pop} {path}");
    let status = header(&r, "cache-status").to_owned();
    assert!(
        status.starts_with(&format!("edgecache-{pop}; hit; ttl="))
            && status.ends_with(&format!("; detail={tier}")),
        "{pop} {path}: {status}"
    );
    assert_eq!(r.text().await.unwrap(), body, "{pop} {path}");
}

fn origin_saw(origin: &TestOrigin, uri: &str) -> usize {
    origin.seen().iter().filter(|s| s.uri == uri).count()
}

fn purge_urls(urls: &[&str]) -> PurgeRequest {
    PurgeRequest {
        urls: urls.iter().map(|u| (*u).to_owned()).collect(),
        ..PurgeRequest::default()
    }
}

#[tokio::test]
async fn purge_reaches_a_pop_that_was_down_before_it_serves() {
    let data = tempfile::tempdir().unwrap();
    let api = PurgeService::start(data.path()).await;
    let client = api.client();
    let origin = numbered_origin().await;
    let live = [
        follower(&origin, &api.url, "live-1", None).await,
        follower(&origin, &api.url, "live-2", None).await,
    ];
    let disk = tempfile::tempdir().unwrap();
    let down = follower(&origin, &api.url, "down", Some(disk.path())).await;
    for edge in live.iter().chain([&down]) {
        wait_caught_up(edge, 0).await;
    }
    let mut live_bodies = Vec::new();
    for (edge, pop) in live.iter().zip(["live-1", "live-2"]) {
        live_bodies.push(expect_miss(edge, pop, "/a.js").await);
    }
    let stale = expect_miss(&down, "down", "/a.js").await;
    let kept = expect_miss(&down, "down", "/b.js").await;
    wait_for_stats(&down, "2 disk entries", |s| s["disk"]["entries"] == 2).await;
    down.stop().await;

    let accepted = client.purge(&purge_urls(&["/a.js"])).await.unwrap();
    assert_eq!(accepted.seq, 1);
    let status = wait_applied(&client, &accepted.id, &["live-1", "live-2"]).await;
    let down_progress = status.pops.iter().find(|p| p.name == "down").unwrap();
    assert!(!down_progress.applied, "{status:?}");
    for ((edge, pop), old) in live.iter().zip(["live-1", "live-2"]).zip(&live_bodies) {
        assert_ne!(&expect_miss(edge, pop, "/a.js").await, old);
    }

    // Back on the same disk, under the same name. Whether or not it has caught up yet, the
    // purged copy on its disk is never served: the first request goes to the origin.
    let back = follower(&origin, &api.url, "down", Some(disk.path())).await;
    let before = origin.hits();
    let fresh = expect_miss(&back, "down", "/a.js").await;
    assert_ne!(fresh, stale);
    assert_eq!(origin.hits(), before + 1);
    let stats = wait_caught_up(&back, accepted.seq).await;
    assert_eq!(stats["purge"]["applied"], 1, "{stats}");
    assert_eq!(readyz(&back).await, (200, "ready\n".to_owned()));
    // Only what was purged: the rest of the disk tier is still served.
    expect_hit(&back, "down", "/b.js", "disk", &kept).await;
    assert_eq!(origin_saw(&origin, "/a.js"), 3 + 2 + 1);
    assert_eq!(origin_saw(&origin, "/b.js"), 1);

    let status = client
        .wait_complete(&accepted.id, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(status.pops.iter().all(|p| p.applied), "{status:?}");
    back.stop().await;
    for edge in live {
        edge.stop().await;
    }
    api.stop().await;
}

#[tokio::test]
async fn with_the_purge_api_unreachable_a_restarted_edge_is_not_ready_and_skips_its_disk() {
    let origin = numbered_origin().await;
    let disk = tempfile::tempdir().unwrap();
    let dir = disk.path().to_path_buf();
    let first = TestEdge::start_with(&origin.url(), move |cfg| {
        cfg.pop = "island".into();
        cfg.disk.dir = Some(dir);
    })
    .await;
    let old = expect_miss(&first, "island", "/a.js").await;
    wait_for_stats(&first, "1 disk entry", |s| s["disk"]["entries"] == 1).await;
    first.stop().await;

    // A port nothing listens on any more.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let restarted = follower(&origin, &api, "island", Some(disk.path())).await;
    let (code, body) = readyz(&restarted).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("not ready"), "{body}");
    let stats = restarted.stats().await;
    assert_eq!(stats["purge"]["caught_up"], false, "{stats}");
    assert_eq!(stats["disk"]["entries"], 1, "{stats}");

    // The disk copy may have been purged while the edge was down: the origin is asked.
    let new = expect_miss(&restarted, "island", "/a.js").await;
    assert_ne!(new, old);
    assert_eq!(origin.hits(), 2);
    assert_eq!(readyz(&restarted).await.0, 503);
    restarted.stop().await;
}

#[tokio::test]
async fn the_purge_log_survives_an_api_restart() {
    let data = tempfile::tempdir().unwrap();
    let origin = numbered_origin().await;
    let disk = tempfile::tempdir().unwrap();

    let api = PurgeService::start(data.path()).await;
    let edge = follower(&origin, &api.url, "solo", Some(disk.path())).await;
    wait_caught_up(&edge, 0).await;
    let mut bodies = Vec::new();
    for path in ["/one.js", "/two.js", "/three.js"] {
        bodies.push(expect_miss(&edge, "solo", path).await);
    }
    wait_for_stats(&edge, "3 disk entries", |s| s["disk"]["entries"] == 3).await;
    edge.stop().await;
    let first = api.client().purge(&purge_urls(&["/one.js"])).await.unwrap();
    assert_eq!(first.seq, 1);
    api.stop().await;

    // Same data dir, another port.
    let api = PurgeService::start(data.path()).await;
    let client = api.client();
    let status = client.status(&first.id).await.unwrap();
    assert_eq!((status.id.as_str(), status.seq), (first.id.as_str(), 1));
    assert_eq!(status.request, purge_urls(&["/one.js"]));
    let second = client.purge(&purge_urls(&["/two.js"])).await.unwrap();
    assert_eq!(second.seq, 2);
    assert_ne!(second.id, first.id);
    let log = client.poll(0, Duration::ZERO).await.unwrap();
    let seqs: Vec<u64> = log.purges.iter().map(|p| p.seq).collect();
    assert_eq!((seqs, log.last_seq), (vec![1, 2], 2));

    // An edge that follows the restarted API applies both before serving.
    let edge = follower(&origin, &api.url, "solo", Some(disk.path())).await;
    let stats = wait_caught_up(&edge, 2).await;
    assert_eq!(stats["purge"]["applied"], 2, "{stats}");
    for (id, path, old) in [
        (&first.id, "/one.js", &bodies[0]),
        (&second.id, "/two.js", &bodies[1]),
    ] {
        let status = client
            .wait_complete(id, Duration::from_secs(10))
            .await
            .unwrap();
        let solo = status.pops.iter().find(|p| p.name == "solo").unwrap();
        assert!(solo.applied && solo.live, "{status:?}");
        assert_ne!(&expect_miss(&edge, "solo", path).await, old);
    }
    expect_hit(&edge, "solo", "/three.js", "disk", &bodies[2]).await;
    assert_eq!(origin.hits(), 3 + 2);
    edge.stop().await;
    api.stop().await;
}

#[tokio::test]
async fn an_edge_that_starts_after_purges_is_counted_as_having_applied_them() {
    let data = tempfile::tempdir().unwrap();
    let api = PurgeService::start(data.path()).await;
    let client = api.client();
    let first = client.purge(&purge_urls(&["/one.js"])).await.unwrap();
    let second = client.purge(&purge_urls(&["/two.js"])).await.unwrap();
    let origin = numbered_origin().await;

    // A memory-only edge has nothing a past purge could name, but the purge API must still
    // see it at the log's end, or those purges never complete.
    let edge = follower(&origin, &api.url, "late", None).await;
    wait_caught_up(&edge, second.seq).await;
    assert_eq!(readyz(&edge).await.0, 200);
    for id in [&first.id, &second.id] {
        let status = client
            .wait_complete(id, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{e}: {e:?}"));
        let late = status.pops.iter().find(|p| p.name == "late").unwrap();
        assert!(late.applied && late.live, "{status:?}");
    }
    let pops = client.pops().await.unwrap();
    assert_eq!(pops.len(), 1, "{pops:?}");
    assert_eq!(
        (pops[0].last_applied_seq, pops[0].behind),
        (2, 0),
        "{pops:?}"
    );
    let body = expect_miss(&edge, "late", "/one.js").await;
    expect_hit(&edge, "late", "/one.js", "memory", &body).await;
    edge.stop().await;
    api.stop().await;
}
