//! Serving stale content (RFC 5861): while revalidating, and when the origin fails.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgecache_edge::config::HumanDuration;
use support::{TestEdge, TestOrigin, header, resp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An origin that answers exactly one request with `response` (raw HTTP/1.1, connection
/// closed) and then closes its port, so later requests are refused: an origin gone down.
async fn origin_that_dies_after(response: String) -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.unwrap();
        drop(listener);
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "client closed before sending a request");
            request.extend_from_slice(&buf[..n]);
        }
        conn.write_all(response.as_bytes()).await.unwrap();
        conn.shutdown().await.unwrap();
    });
    (url, task)
}

fn raw_200(cache_control: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncache-control: {cache_control}\r\nage: 5\r\netag: \"d\"\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// An edge whose own stale-on-error window (`cache.stale_if_error`, 1 day by default) is
/// off, so only the response's `stale-if-error` may let a stale copy stand in.
async fn strict_edge(origin_url: &str) -> TestEdge {
    TestEdge::start_with(origin_url, |cfg| {
        cfg.cache.stale_if_error = HumanDuration(Duration::ZERO);
    })
    .await
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn stale_entry_is_served_while_revalidating() {
    // One permit lets the first fetch through; taking it back holds the revalidation.
    let gate = Arc::new(tokio::sync::Semaphore::new(1));
    let origin = TestOrigin::start_gated(
        |_, n| {
            let body = if n == 0 { "old" } else { "new" };
            let cc = if n == 0 {
                "max-age=1, stale-while-revalidate=600"
            } else {
                "max-age=600"
            };
            resp(200, &[("cache-control", cc), ("age", "5")], body)
        },
        gate.clone(),
    )
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    assert_eq!(edge.get("/swr").await.text().await.unwrap(), "old");
    gate.acquire().await.unwrap().forget();

    // Answered at once from the stale entry, though the origin is not answering.
    let r = edge.get("/swr").await;
    assert_eq!(r.status(), 200);
    let status = header(&r, "cache-status").to_owned();
    assert!(
        status.starts_with("edgecache-test; hit; ttl=-") && status.ends_with("; detail=memory"),
        "{status}"
    );
    assert_eq!(r.text().await.unwrap(), "old");
    wait_until("the background revalidation", || origin.hits() == 2).await;

    // While it is held, more requests get the stale entry and start no second fetch.
    let r = edge.get("/swr").await;
    assert_eq!(r.text().await.unwrap(), "old");
    assert_eq!(origin.hits(), 2);

    gate.add_permits(1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = edge.get("/swr").await;
        assert_eq!(r.status(), 200);
        let status = header(&r, "cache-status").to_owned();
        let body = r.text().await.unwrap();
        if body == "new" {
            assert!(status.starts_with("edgecache-test; hit; ttl="), "{status}");
            assert!(!status.contains("stale"), "{status}");
            break;
        }
        assert_eq!(body, "old");
        assert!(
            Instant::now() < deadline,
            "the revalidated body never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn past_the_stale_while_revalidate_window_the_client_waits_for_the_origin() {
    let origin = TestOrigin::start(|_, n| {
        let cc = "max-age=1, stale-while-revalidate=2";
        resp(
            200,
            &[("cache-control", cc), ("age", "5"), ("etag", "\"w\"")],
            format!("v{n}"),
        )
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/swr-past").await;
    let r = edge.get("/swr-past").await;
    assert!(header(&r, "cache-status").contains("fwd=stale; fwd-status=200"));
    assert_eq!(r.text().await.unwrap(), "v1");
    assert_eq!(origin.hits(), 2);
}

/// An origin that serves a stale-on-arrival "old" body first, then answers 500.
async fn then_500(cache_control: &'static str) -> TestOrigin {
    TestOrigin::start(move |_, n| match n {
        0 => resp(
            200,
            &[
                ("cache-control", cache_control),
                ("age", "5"),
                ("etag", "\"e\""),
            ],
            "old",
        ),
        _ => resp(500, &[("content-type", "text/plain")], "origin broke"),
    })
    .await
}

#[tokio::test]
async fn stale_if_error_serves_the_stale_body_when_the_origin_answers_500() {
    let origin = then_500("max-age=1, stale-if-error=600").await;
    let edge = strict_edge(&origin.url()).await;
    edge.get("/sie").await;

    for n in 2..4 {
        let r = edge.get("/sie").await;
        assert_eq!(r.status(), 200);
        let status = header(&r, "cache-status").to_owned();
        assert!(
            status.starts_with("edgecache-test; hit; fwd=stale; fwd-status=500; ttl=-"),
            "{status}"
        );
        assert!(status.ends_with("; detail=origin-error"), "{status}");
        assert_eq!(r.text().await.unwrap(), "old");
        // Each use of the stale entry still asks the origin first.
        assert_eq!(origin.hits(), n);
    }
}

#[tokio::test]
async fn stale_if_error_serves_the_stale_body_when_the_origin_is_down() {
    let (url, origin) =
        origin_that_dies_after(raw_200("max-age=1, stale-if-error=600", "old")).await;
    let edge = strict_edge(&url).await;
    assert_eq!(edge.get("/down").await.text().await.unwrap(), "old");
    origin.await.unwrap();

    let r = edge.get("/down").await;
    assert_eq!(r.status(), 200);
    let status = header(&r, "cache-status").to_owned();
    assert!(
        status.starts_with("edgecache-test; hit; fwd=stale; ttl=-"),
        "{status}"
    );
    assert!(status.ends_with("; detail=origin-unreachable"), "{status}");
    assert_eq!(r.text().await.unwrap(), "old");
}

#[tokio::test]
async fn without_stale_if_error_a_500_reaches_the_client() {
    let origin = then_500("max-age=1").await;
    let edge = strict_edge(&origin.url()).await;
    edge.get("/no-sie").await;

    let r = edge.get("/no-sie").await;
    assert_eq!(r.status(), 500, "{}", header(&r, "cache-status"));
    assert_eq!(
        header(&r, "cache-status"),
        "edgecache-test; fwd=stale; fwd-status=500; detail=no-freshness"
    );
    assert_eq!(r.text().await.unwrap(), "origin broke");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn without_stale_if_error_an_unreachable_origin_is_502() {
    let (url, origin) = origin_that_dies_after(raw_200("max-age=1", "old")).await;
    let edge = strict_edge(&url).await;
    assert_eq!(edge.get("/down-no-sie").await.text().await.unwrap(), "old");
    origin.await.unwrap();

    let r = edge.get("/down-no-sie").await;
    assert_eq!(r.status(), 502, "{}", header(&r, "cache-status"));
    assert_eq!(
        header(&r, "cache-status"),
        "edgecache-test; fwd=stale; detail=origin-unreachable"
    );
    assert!(!r.text().await.unwrap().contains("old"));
}

#[tokio::test]
async fn must_revalidate_forbids_stale_even_with_stale_if_error() {
    let origin =
        then_500("max-age=1, must-revalidate, stale-if-error=600, stale-while-revalidate=600")
            .await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/mr").await;

    let r = edge.get("/mr").await;
    assert_eq!(r.status(), 500);
    let status = header(&r, "cache-status").to_owned();
    assert!(status.contains("fwd=stale; fwd-status=500"), "{status}");
    assert!(!status.contains("hit"), "{status}");
    assert_eq!(r.text().await.unwrap(), "origin broke");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn by_default_a_stale_copy_stands_in_for_a_failing_origin_for_a_day() {
    // No stale-if-error from the origin: the edge's own window (README: `stale_if_error`).
    let origin = then_500("max-age=1").await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/default-window").await;

    let r = edge.get("/default-window").await;
    assert_eq!(r.status(), 200);
    let status = header(&r, "cache-status").to_owned();
    assert!(
        status.starts_with("edgecache-test; hit; fwd=stale; fwd-status=500; ttl=-"),
        "{status}"
    );
    assert!(status.ends_with("; detail=origin-error"), "{status}");
    assert_eq!(r.text().await.unwrap(), "old");
    assert_eq!(origin.hits(), 2);

    // Past the window the origin's answer goes through.
    let origin = then_500("max-age=1").await;
    let edge = TestEdge::start_with(&origin.url(), |cfg| {
        cfg.cache.stale_if_error = HumanDuration(Duration::from_secs(3));
    })
    .await;
    edge.get("/default-window").await;
    let r = edge.get("/default-window").await;
    assert_eq!(r.status(), 500, "{}", header(&r, "cache-status"));
    assert_eq!(r.text().await.unwrap(), "origin broke");
}
