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

#[tokio::test]
async fn admin_mutations_need_the_token_when_one_is_set() {
    let origin =
        TestOrigin::start(|_, n| resp(200, &[("cache-control", "max-age=60")], format!("v{n}")))
            .await;
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.admin_token = Some(edgecache_edge::config::Secret("s3cret-admin".into()));
    })
    .await;
    assert_eq!(edge.get("/a").await.text().await.unwrap(), "v0");
    let purge = |auth: Option<&'static str>| {
        let mut req = edge
            .client
            .post(edge.admin_url("/purge"))
            .header("content-type", "application/json")
            .body(r#"{"urls":["/a"]}"#);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        req.send()
    };
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret-admi"),
        Some("s3cret-admin"),
    ] {
        let r = purge(auth).await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        assert_eq!(header(&r, "www-authenticate"), "Bearer");
        assert!(r.text().await.unwrap().contains("error"));
    }
    let r = edge
        .client
        .post(edge.admin_url("/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Nothing was purged: the next client still gets the stored copy.
    let hit = edge.get("/a").await;
    assert!(header(&hit, "cache-status").contains("; hit"));
    assert_eq!(hit.text().await.unwrap(), "v0");
    assert_eq!(edge.stats().await["purge"]["applied"], 0);
    // Reads stay open.
    assert_eq!(admin_get(&edge, "/metrics").await.0, 200);

    let r = purge(Some("Bearer s3cret-admin")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(edge.get("/a").await.text().await.unwrap(), "v1");
    assert_eq!(origin.hits(), 2);
}
