//! `Vary`: several stored variants per URL, `Vary: *`, and normalised header values.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{Seen, TestEdge, TestOrigin, header, resp};

/// An origin that answers with a body naming the request's `Accept-Encoding`.
fn by_encoding(s: &Seen, _: usize) -> axum::response::Response {
    let ae = s
        .headers
        .get("accept-encoding")
        .map_or("none", |v| v.to_str().unwrap());
    resp(
        200,
        &[("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
        format!("body for {ae}"),
    )
}

/// GET with an optional `Accept-Encoding`; returns (Cache-Status, body).
async fn get_ae(edge: &TestEdge, path: &str, ae: Option<&str>) -> (String, String) {
    let r = match ae {
        Some(v) => edge.get_with(path, &[("accept-encoding", v)]).await,
        None => edge.get(path).await,
    };
    assert_eq!(r.status(), 200);
    let status = header(&r, "cache-status").to_owned();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn each_accept_encoding_variant_is_served_from_cache() {
    let origin = TestOrigin::start(by_encoding).await;
    let edge = TestEdge::start(&origin.url()).await;

    for ae in [Some("gzip"), Some("br"), None] {
        let (_, body) = get_ae(&edge, "/v.js", ae).await;
        assert_eq!(body, format!("body for {}", ae.unwrap_or("none")));
    }
    assert_eq!(origin.hits(), 3);

    // Every variant is still there, side by side.
    for _ in 0..2 {
        for ae in [Some("br"), None, Some("gzip")] {
            let (status, body) = get_ae(&edge, "/v.js", ae).await;
            assert!(status.starts_with("edgecache-test; hit; ttl="), "{status}");
            assert_eq!(body, format!("body for {}", ae.unwrap_or("none")));
        }
    }
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn a_new_variant_is_a_vary_miss() {
    let origin = TestOrigin::start(by_encoding).await;
    let edge = TestEdge::start(&origin.url()).await;

    let (status, _) = get_ae(&edge, "/v.css", Some("gzip")).await;
    assert_eq!(
        status,
        "edgecache-test; fwd=uri-miss; fwd-status=200; stored"
    );
    let (status, body) = get_ae(&edge, "/v.css", Some("br")).await;
    assert_eq!(
        status,
        "edgecache-test; fwd=vary-miss; fwd-status=200; stored"
    );
    assert_eq!(body, "body for br");
    let (status, _) = get_ae(&edge, "/v.css", None).await;
    assert_eq!(
        status,
        "edgecache-test; fwd=vary-miss; fwd-status=200; stored"
    );
    assert_eq!(origin.hits(), 3);
    // The origin saw each client's own value, not the first one's.
    let seen: Vec<Option<String>> = origin
        .seen()
        .iter()
        .map(|s| {
            s.headers
                .get("accept-encoding")
                .map(|v| v.to_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(seen, [Some("gzip".into()), Some("br".into()), None]);
}

#[tokio::test]
async fn vary_star_is_never_reused() {
    let origin = TestOrigin::start(|_, n| {
        resp(
            200,
            &[("cache-control", "max-age=60"), ("vary", "*")],
            format!("response {n}"),
        )
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    for n in 0..3 {
        let r = edge.get_with("/star", &[("accept-encoding", "gzip")]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            header(&r, "cache-status"),
            "edgecache-test; fwd=uri-miss; fwd-status=200; detail=vary-star"
        );
        assert_eq!(r.text().await.unwrap(), format!("response {n}"));
    }
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn whitespace_in_vary_values_is_normalised() {
    let origin = TestOrigin::start(by_encoding).await;
    let edge = TestEdge::start(&origin.url()).await;

    let (status, body) = get_ae(&edge, "/ws", Some("gzip, br")).await;
    assert!(status.contains("fwd=uri-miss"), "{status}");
    assert_eq!(body, "body for gzip, br");
    for same in ["gzip,br", "gzip ,  br", " gzip,br "] {
        let (status, body) = get_ae(&edge, "/ws", Some(same)).await;
        assert!(
            status.starts_with("edgecache-test; hit;"),
            "{same:?}: {status}"
        );
        assert_eq!(body, "body for gzip, br");
    }
    assert_eq!(origin.hits(), 1);

    // A different list is a different variant.
    let (status, _) = get_ae(&edge, "/ws", Some("gzip")).await;
    assert!(status.contains("fwd=vary-miss"), "{status}");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn variants_by_several_headers_need_all_values_to_match() {
    let origin = TestOrigin::start(|s, _| {
        let v = |n: &str| {
            s.headers
                .get(n)
                .map_or("-", |v| v.to_str().unwrap())
                .to_owned()
        };
        resp(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("vary", "Accept-Encoding, Accept-Language"),
            ],
            format!("{}/{}", v("accept-encoding"), v("accept-language")),
        )
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    let get = |ae: &'static str, al: &'static str| {
        let edge = &edge;
        async move {
            let r = edge
                .get_with(
                    "/multi",
                    &[("accept-encoding", ae), ("accept-language", al)],
                )
                .await;
            let status = header(&r, "cache-status").to_owned();
            (status, r.text().await.unwrap())
        }
    };
    assert_eq!(get("gzip", "en").await.1, "gzip/en");
    let (status, body) = get("gzip", "fr").await;
    assert!(status.contains("fwd=vary-miss"), "{status}");
    assert_eq!(body, "gzip/fr");
    let (status, body) = get("gzip", "en").await;
    assert!(status.contains("; hit;"), "{status}");
    assert_eq!(body, "gzip/en");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn a_waiter_with_another_variant_is_not_given_the_leaders_response() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let origin = TestOrigin::start_gated(by_encoding, gate.clone()).await;
    let edge = TestEdge::start(&origin.url()).await;

    let spawn_get = |ae: &'static str| {
        let client = edge.client.clone();
        let url = edge.url("/together");
        tokio::spawn(async move {
            let r = client
                .get(url)
                .header("accept-encoding", ae)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        })
    };
    let gzip = spawn_get("gzip");
    // Let the first request become the fetch's leader before the second one arrives.
    wait_for_origin_hits(&origin, 1).await;
    let br = spawn_get("br");
    let deadline = Instant::now() + Duration::from_secs(5);
    while edge.stats().await["collapsed_requests"] != 1 {
        assert!(
            Instant::now() < deadline,
            "second request never joined the fetch"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gate.add_permits(1000);

    assert_eq!(gzip.await.unwrap(), "body for gzip");
    assert_eq!(br.await.unwrap(), "body for br");
    assert_eq!(origin.hits(), 2);
}

async fn wait_for_origin_hits(origin: &TestOrigin, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.hits() < n {
        assert!(
            Instant::now() < deadline,
            "origin saw {} requests",
            origin.hits()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
