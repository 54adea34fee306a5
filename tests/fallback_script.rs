//! The browser fallback script is served by the origin and by every edge.

mod support;

use support::{TestEdge, TestOrigin, header, resp};

#[tokio::test]
async fn origin_and_edge_serve_fallback_js() {
    let site = tempfile::tempdir().unwrap();
    let origin =
        edgecache_origin::Origin::new(edgecache_origin::OriginConfig::new(site.path())).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, origin.router()).await.unwrap() });
    let client = support::client();
    let r = client
        .get(format!(
            "http://{addr}{}",
            edgecache_origin::FALLBACK_JS_PATH
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("application/javascript"));
    assert_eq!(r.text().await.unwrap(), edgecache_origin::FALLBACK_JS);

    // The edge answers it itself, without asking its origin.
    let other = TestOrigin::start(|_, _| resp(500, &[], "origin must not be asked")).await;
    let edge = TestEdge::start(&other.url()).await;
    let r = edge.get(edgecache_origin::FALLBACK_JS_PATH).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "cache-status").contains("detail=built-in"));
    assert_eq!(r.text().await.unwrap(), edgecache_origin::FALLBACK_JS);
    assert_eq!(other.hits(), 0);
}
