//! Targeted cache-control fields (RFC 9213): `CDN-Cache-Control`, `Edgecache-Cache-Control`.

mod support;

use support::{TestEdge, TestOrigin, header, resp};

/// An origin sending `headers` with a body numbered by hit.
async fn origin_with(headers: &'static [(&'static str, &'static str)]) -> TestOrigin {
    TestOrigin::start(move |_, n| resp(200, headers, format!("response {n}"))).await
}

#[tokio::test]
async fn cdn_cache_control_max_age_caches_despite_cache_control_no_store() {
    let origin = origin_with(&[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=60"),
    ])
    .await;
    let edge = TestEdge::start(&origin.url()).await;

    let r = edge.get("/cdn").await;
    assert_eq!(
        header(&r, "cache-status"),
        "edgecache-test; fwd=uri-miss; fwd-status=200; stored"
    );
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert_eq!(r.text().await.unwrap(), "response 0");

    let r = edge.get("/cdn").await;
    let status = header(&r, "cache-status").to_owned();
    assert!(status.starts_with("edgecache-test; hit; ttl="), "{status}");
    let ttl: i64 = status
        .split("ttl=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((55..=60).contains(&ttl), "{status}");
    // Browsers still get the origin's own instructions.
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert_eq!(r.text().await.unwrap(), "response 0");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn cdn_cache_control_travels_on_and_edgecache_cache_control_does_not() {
    // README: `CDN-Cache-Control` may also target a CDN further downstream, so it is
    // forwarded; `Edgecache-Cache-Control` is for this edge alone.
    let origin = origin_with(&[
        ("cache-control", "no-store"),
        ("cdn-cache-control", "max-age=60"),
        ("edgecache-cache-control", "max-age=30"),
    ])
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    for _ in 0..2 {
        let r = edge.get("/targeted-headers").await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "cache-control"), "no-store");
        assert_eq!(header(&r, "cdn-cache-control"), "max-age=60");
        assert_eq!(
            header(&r, "edgecache-cache-control"),
            "",
            "miss and hit alike"
        );
    }
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn edgecache_cache_control_wins_over_cdn_cache_control() {
    let origin = origin_with(&[
        ("cache-control", "max-age=60"),
        ("cdn-cache-control", "max-age=60"),
        ("edgecache-cache-control", "no-store"),
    ])
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    for n in 0..3 {
        let r = edge.get("/ecc-no-store").await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "cache-status"),
            "edgecache-test; fwd=uri-miss; fwd-status=200; detail=no-store"
        );
        assert_eq!(header(&r, "edgecache-cache-control"), "");
        assert_eq!(r.text().await.unwrap(), format!("response {n}"));
    }
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn edgecache_cache_control_max_age_sets_the_edge_lifetime_and_is_not_sent() {
    let origin = origin_with(&[
        ("cache-control", "max-age=5"),
        ("cdn-cache-control", "no-store"),
        ("edgecache-cache-control", "max-age=3600"),
    ])
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/ecc").await;
    let r = edge.get("/ecc").await;
    let status = header(&r, "cache-status").to_owned();
    let ttl: i64 = status
        .split("ttl=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        status.starts_with("edgecache-test; hit; ttl=") && ttl > 3500,
        "{status}"
    );
    assert_eq!(header(&r, "cache-control"), "max-age=5");
    assert_eq!(header(&r, "edgecache-cache-control"), "");
    assert_eq!(r.text().await.unwrap(), "response 0");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn cdn_cache_control_no_store_wins_over_cache_control_max_age() {
    let origin = origin_with(&[
        ("cache-control", "max-age=60"),
        ("cdn-cache-control", "no-store"),
    ])
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    for n in 0..3 {
        let r = edge.get("/cdn-no-store").await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "cache-status"),
            "edgecache-test; fwd=uri-miss; fwd-status=200; detail=no-store"
        );
        assert_eq!(header(&r, "cache-control"), "max-age=60");
        assert_eq!(r.text().await.unwrap(), format!("response {n}"));
    }
    assert_eq!(origin.hits(), 3);
}
