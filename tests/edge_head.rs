//! HEAD requests: answered from stored GET responses, forwarded as HEAD otherwise, and a
//! HEAD response freshens the stored response it describes (RFC 9111 §4.3.5).

mod support;

use http::Method;
use support::{TestEdge, TestOrigin, header, resp};

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let origin =
        TestOrigin::start(|_, _| resp(200, &[("cache-control", "max-age=60")], "12345")).await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/f").await.bytes().await.unwrap();
    let r = edge.client.head(edge.url("/f")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), "5");
    assert!(header(&r, "cache-status").contains("; hit"));
    assert!(r.bytes().await.unwrap().is_empty());
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn head_miss_goes_to_the_origin_as_head_and_is_not_stored() {
    let origin =
        TestOrigin::start(|_, _| resp(200, &[("cache-control", "max-age=60")], "12345")).await;
    let edge = TestEdge::start(&origin.url()).await;
    let r = edge.client.head(edge.url("/h")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(origin.seen()[0].method, Method::HEAD);
    let g = edge.get("/h").await;
    assert!(header(&g, "cache-status").contains("fwd=uri-miss"));
    assert_eq!(g.text().await.unwrap(), "12345");
    assert_eq!(origin.seen()[1].method, Method::GET);
}

#[tokio::test]
async fn head_response_freshens_the_stored_get() {
    // The stored GET is stale on arrival; the HEAD answer carries new freshness and a new
    // header, which the next GET is served with, from the cache.
    let origin = TestOrigin::start(|s, _| {
        if s.method == Method::HEAD {
            resp(
                200,
                &[
                    ("cache-control", "max-age=600"),
                    ("etag", "\"v1\""),
                    ("x-version", "2"),
                    ("content-length", "4"),
                ],
                "",
            )
        } else {
            resp(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("age", "100"),
                    ("etag", "\"v1\""),
                    ("x-version", "1"),
                ],
                "body",
            )
        }
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/x").await.bytes().await.unwrap();
    let h = edge.client.head(edge.url("/x")).send().await.unwrap();
    assert_eq!(header(&h, "x-version"), "2");
    let g = edge.get("/x").await;
    assert!(
        header(&g, "cache-status").contains("; hit"),
        "{}",
        header(&g, "cache-status")
    );
    assert_eq!(header(&g, "x-version"), "2");
    assert_eq!(g.text().await.unwrap(), "body");
    assert_eq!(origin.hits(), 2);
}
