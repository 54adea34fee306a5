//! Origin failures with nothing cached: `502` / `504` with a `Cache-Status` saying why.

mod support;

use std::sync::Arc;
use std::time::Duration;

use edgecache_edge::config::HumanDuration;
use support::{TestEdge, TestOrigin, header, resp};

/// An address on which nothing listens: bound, then released.
async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn unreachable_origin_is_502_with_origin_unreachable() {
    let edge = TestEdge::start(&closed_port_url().await).await;
    for _ in 0..2 {
        let r = edge.get("/down").await;
        assert_eq!(r.status(), 502);
        assert_eq!(
            header(&r, "cache-status"),
            "edgecache-test; fwd=uri-miss; detail=origin-unreachable"
        );
        assert!(header(&r, "content-type").starts_with("text/plain"));
        assert_eq!(header(&r, "cache-control"), "no-store");
        let body = r.text().await.unwrap();
        assert!(body.starts_with("502 Bad Gateway"), "{body:?}");
        assert!(body.contains("origin-unreachable"), "{body:?}");
    }
    let stats = edge.stats().await;
    assert_eq!(stats["requests"]["error"], 2, "{stats}");
}

#[tokio::test]
async fn unreachable_origin_on_head_and_post_is_502_too() {
    let edge = TestEdge::start(&closed_port_url().await).await;
    let r = edge.client.head(edge.url("/h")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(header(&r, "cache-status").ends_with("detail=origin-unreachable"));

    let r = edge
        .client
        .post(edge.url("/p"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        header(&r, "cache-status"),
        "edgecache-test; fwd=bypass; detail=origin-unreachable"
    );
}

#[tokio::test]
async fn origin_slower_than_the_first_byte_timeout_is_504() {
    // The gate is never opened: the origin accepts the request and never answers.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let origin = TestOrigin::start_gated(|_, _| resp(200, &[], "too late"), gate).await;
    let edge = TestEdge::start_with(&origin.url(), |cfg| {
        cfg.timeouts.first_byte = HumanDuration(Duration::from_millis(200));
    })
    .await;

    let r = edge.get("/slow").await;
    assert_eq!(r.status(), 504);
    assert_eq!(
        header(&r, "cache-status"),
        "edgecache-test; fwd=uri-miss; detail=origin-timeout"
    );
    assert!(header(&r, "content-type").starts_with("text/plain"));
    let body = r.text().await.unwrap();
    assert!(body.starts_with("504 Gateway Timeout"), "{body:?}");
    assert!(!body.contains("too late"));
    assert_eq!(origin.hits(), 1);
}
