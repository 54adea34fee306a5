//! Request coalescing: concurrent misses for one key share one origin fetch, unless the
//! response may not be shared.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use support::{TestEdge, TestOrigin, header, resp};
use tokio::sync::Semaphore;

/// Starts `n` concurrent GETs of `path`; each yields (status, Cache-Status, body).
fn spawn_gets(
    edge: &TestEdge,
    path: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(u16, String, bytes::Bytes)>> {
    (0..n)
        .map(|_| {
            let client = edge.client.clone();
            let url = edge.url(path);
            tokio::spawn(async move {
                let r = client.get(url).send().await.unwrap();
                let status = header(&r, "cache-status").to_owned();
                (r.status().as_u16(), status, r.bytes().await.unwrap())
            })
        })
        .collect()
}

#[tokio::test]
async fn concurrent_misses_make_one_origin_request() {
    const SIZE: usize = 256 * 1024;
    let body: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let expected = body.clone();
    let gate = Arc::new(Semaphore::new(0));
    let origin = TestOrigin::start_gated(
        move |_, _| resp(200, &[("cache-control", "max-age=60")], body.clone()),
        gate.clone(),
    )
    .await;
    let edge = TestEdge::start(&origin.url()).await;

    let requests = spawn_gets(&edge, "/big.bin", 50);
    edge.wait_for_collapsed(49).await;
    assert_eq!(origin.hits(), 1);
    gate.add_permits(1000);

    let mut collapsed = 0;
    for request in requests {
        let (code, status, got) = request.await.unwrap();
        assert_eq!(code, 200, "{status}");
        assert!(status.contains("fwd=uri-miss; fwd-status=200"), "{status}");
        if status.contains("collapsed") {
            collapsed += 1;
        }
        assert_eq!(got.len(), SIZE);
        assert!(got == expected, "body differs from the origin's");
    }
    assert_eq!(collapsed, 49);
    assert_eq!(origin.hits(), 1);

    // And the object was stored whole.
    let r = edge.get("/big.bin").await;
    assert!(header(&r, "cache-status").contains("; hit;"));
    assert!(r.bytes().await.unwrap() == expected);
    assert_eq!(origin.hits(), 1);
    assert_eq!(edge.stats().await["origin_fetches"], 1);
}

#[tokio::test]
async fn an_uncacheable_response_is_not_shared() {
    let gate = Arc::new(Semaphore::new(0));
    let origin = TestOrigin::start_gated(
        |_, n| {
            resp(
                200,
                &[("cache-control", "private")],
                format!("for request {n}"),
            )
        },
        gate.clone(),
    )
    .await;
    let edge = TestEdge::start(&origin.url()).await;

    let requests = spawn_gets(&edge, "/private", 5);
    edge.wait_for_collapsed(4).await;
    gate.add_permits(1000);

    let mut bodies = BTreeSet::new();
    for request in requests {
        let (code, status, got) = request.await.unwrap();
        assert_eq!(code, 200, "{status}");
        assert!(!status.contains("stored"), "{status}");
        bodies.insert(String::from_utf8(got.to_vec()).unwrap());
    }
    let expected: BTreeSet<String> = (0..5).map(|n| format!("for request {n}")).collect();
    assert_eq!(
        bodies, expected,
        "every request got its own origin response"
    );
    assert_eq!(origin.hits(), 5);

    // Nothing was stored either.
    let r = edge.get("/private").await;
    assert!(header(&r, "cache-status").contains("fwd=uri-miss"));
    assert_eq!(r.text().await.unwrap(), "for request 5");
}
