//! The basics of a shared cache: what is stored, for how long, and what the client sees.

mod support;

use support::{TestEdge, TestOrigin, header, resp};

#[tokio::test]
async fn second_request_is_a_hit() {
    let origin =
        TestOrigin::start(|_, _| resp(200, &[("cache-control", "max-age=60")], "hello")).await;
    let edge = TestEdge::start(&origin.url()).await;

    let first = edge.get("/a.js").await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        header(&first, "cache-status"),
        "edgecache-test; fwd=uri-miss; fwd-status=200; stored"
    );
    assert_eq!(first.text().await.unwrap(), "hello");

    let second = edge.get("/a.js").await;
    assert_eq!(second.status(), 200);
    let status = header(&second, "cache-status").to_owned();
    assert!(status.starts_with("edgecache-test; hit; ttl="), "{status}");
    assert!(header(&second, "age").parse::<u64>().unwrap() <= 1);
    assert_eq!(second.text().await.unwrap(), "hello");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn no_store_and_private_are_not_cached() {
    let origin = TestOrigin::start(|s, _| {
        let cc = if s.uri.contains("private") {
            "private, max-age=60"
        } else {
            "no-store"
        };
        resp(200, &[("cache-control", cc)], "x")
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    for path in ["/no-store", "/private"] {
        for _ in 0..2 {
            let r = edge.get(path).await;
            assert_eq!(r.status(), 200);
            assert!(header(&r, "cache-status").contains("fwd=uri-miss"));
        }
    }
    assert_eq!(origin.hits(), 4);
}

#[tokio::test]
async fn age_from_upstream_counts_against_freshness() {
    // Age 100 against max-age 60: already stale on arrival, so the next request revalidates.
    let origin = TestOrigin::start(|_, _| {
        resp(200, &[("cache-control", "max-age=60"), ("age", "100")], "x")
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    let r = edge.get("/stale-on-arrival").await;
    assert_eq!(header(&r, "age"), "100");
    edge.get("/stale-on-arrival").await;
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn query_order_and_tracking_parameters_share_a_key() {
    let origin = TestOrigin::start(|_, _| resp(200, &[("cache-control", "max-age=60")], "x")).await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/p?b=2&a=1").await;
    let r = edge.get("/p?a=1&b=2&utm_source=mail").await;
    assert!(header(&r, "cache-status").contains("hit"));
    assert_eq!(origin.hits(), 1);
    let r = edge.get("/p?a=1&b=3").await;
    assert!(header(&r, "cache-status").contains("uri-miss"));
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn heuristic_freshness_from_last_modified() {
    let origin = TestOrigin::start(|_, _| {
        resp(
            200,
            &[("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT")],
            "x",
        )
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/h").await;
    let r = edge.get("/h").await;
    assert!(header(&r, "cache-status").contains("; hit"));
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn redirect_without_freshness_is_not_cached() {
    let origin = TestOrigin::start(|_, _| resp(302, &[("location", "/elsewhere")], "")).await;
    let edge = TestEdge::start(&origin.url()).await;
    for _ in 0..2 {
        let r = edge.get("/r").await;
        assert_eq!(r.status(), 302);
        assert!(header(&r, "cache-status").contains("detail=no-freshness"));
    }
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn not_found_is_cached_heuristically_only_with_validator() {
    let origin =
        TestOrigin::start(|_, _| resp(404, &[("cache-control", "max-age=30")], "gone")).await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/missing").await;
    let r = edge.get("/missing").await;
    assert_eq!(r.status(), 404);
    assert!(header(&r, "cache-status").contains("; hit"));
    assert_eq!(r.text().await.unwrap(), "gone");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn fields_named_by_qualified_no_cache_are_not_reused() {
    let origin = TestOrigin::start(|_, _| {
        resp(
            200,
            &[
                ("cache-control", "max-age=60, no-cache=\"x-session\""),
                ("x-session", "secret"),
                ("x-public", "1"),
            ],
            "x",
        )
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    let first = edge.get("/q").await;
    assert_eq!(header(&first, "x-session"), "secret");
    let second = edge.get("/q").await;
    assert!(header(&second, "cache-status").contains("; hit"));
    assert_eq!(header(&second, "x-session"), "");
    assert_eq!(header(&second, "x-public"), "1");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn invalid_status_codes_are_not_stored() {
    let origin =
        TestOrigin::start(|_, _| resp(999, &[("cache-control", "max-age=60")], "odd")).await;
    let edge = TestEdge::start(&origin.url()).await;
    for _ in 0..2 {
        let r = edge.get("/odd").await;
        assert_eq!(r.status().as_u16(), 999);
    }
    assert_eq!(origin.hits(), 2);
}
