//! The admin listener: health, readiness, JSON stats and Prometheus metrics.

mod support;

use support::{TestEdge, TestOrigin, header, resp};

async fn admin_get(edge: &TestEdge, path: &str) -> (u16, String, String) {
    let r = edge.client.get(edge.admin_url(path)).send().await.unwrap();
    let content_type = header(&r, "content-type").to_owned();
    (r.status().as_u16(), content_type, r.text().await.unwrap())
}

/// An edge that has served one miss and one hit.
async fn after_miss_and_hit() -> (TestOrigin, TestEdge) {
    let origin = TestOrigin::start(|_, _| resp(200, &[("cache-control", "max-age=60")], "x")).await;
    let edge = TestEdge::start(&origin.url()).await;
    assert!(header(&edge.get("/s").await, "cache-status").contains("fwd=uri-miss"));
    assert!(header(&edge.get("/s").await, "cache-status").contains("; hit;"));
    (origin, edge)
}

#[tokio::test]
async fn healthz_and_readyz_are_ok() {
    let origin = TestOrigin::start(|_, _| resp(200, &[], "")).await;
    let edge = TestEdge::start(&origin.url()).await;
    for path in ["/healthz", "/readyz"] {
        let (code, _, body) = admin_get(&edge, path).await;
        assert_eq!(code, 200, "{path}");
        assert!(!body.trim().is_empty(), "{path}");
    }
    assert_eq!(origin.hits(), 0);
    let (code, _, _) = admin_get(&edge, "/nope").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn stats_count_hits_misses_and_origin_fetches() {
    let (origin, edge) = after_miss_and_hit().await;
    let (code, content_type, body) = admin_get(&edge, "/stats").await;
    assert_eq!(code, 200);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stats["pop"], "test", "{stats}");
    assert_eq!(stats["requests"]["hit"], 1, "{stats}");
    assert_eq!(stats["requests"]["miss"], 1, "{stats}");
    assert_eq!(stats["requests_total"], 2, "{stats}");
    assert_eq!(stats["hit_ratio"], 0.5, "{stats}");
    assert_eq!(stats["origin_fetches"], 1, "{stats}");
    assert_eq!(stats["collapsed_requests"], 0, "{stats}");
    assert_eq!(stats["memory"]["entries"], 1, "{stats}");
    assert!(stats["memory"]["bytes"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_requests_and_fetch_times() {
    let (_origin, edge) = after_miss_and_hit().await;
    let (code, content_type, text) = admin_get(&edge, "/metrics").await;
    assert_eq!(code, 200);
    assert!(content_type.contains("text"), "{content_type}");

    let value_of = |cache: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("edgecache_requests_total{")
                    && l.contains(&format!("cache=\"{cache}\""))
            })
            .unwrap_or_else(|| panic!("no {cache} line in\n{text}"));
        assert!(line.contains("pop=\"test\""), "{line}");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value_of("hit"), 1.0);
    assert_eq!(value_of("miss"), 1.0);
    assert_eq!(value_of("stale_hit"), 0.0);

    let count = text
        .lines()
        .find(|l| l.starts_with("edgecache_origin_fetch_seconds_count"))
        .unwrap_or_else(|| panic!("no fetch histogram in\n{text}"));
    assert_eq!(count.rsplit(' ').next().unwrap(), "1", "{count}");
    assert!(text.contains("edgecache_origin_fetch_seconds_bucket{"));
    assert!(text.contains("# TYPE edgecache_origin_fetch_seconds histogram"));
}
