//! Revalidation of stored responses with the origin: validators sent, 304s applied.

mod support;

use support::{TestEdge, TestOrigin, header, resp};

const LAST_MODIFIED: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

/// The value of request header `name` in the origin's `n`th request.
fn seen_header(origin: &TestOrigin, n: usize, name: &str) -> Option<String> {
    origin.seen()[n]
        .headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn stale_entry_is_revalidated_with_if_none_match_and_refreshed_by_304() {
    // Age 100 against max-age 60: stale on arrival.
    let origin = TestOrigin::start(|_, n| match n {
        0 => resp(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("age", "100"),
                ("etag", "\"v1\""),
                ("x-version", "1"),
            ],
            "original",
        ),
        _ => resp(
            304,
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("x-version", "2"),
            ],
            "",
        ),
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;

    let r = edge.get("/etag").await;
    assert_eq!(header(&r, "x-version"), "1");
    assert_eq!(r.text().await.unwrap(), "original");
    assert_eq!(seen_header(&origin, 0, "if-none-match"), None);

    let r = edge.get("/etag").await;
    assert_eq!(r.status(), 200);
    let status = header(&r, "cache-status").to_owned();
    assert!(
        status.starts_with("edgecache-test; fwd=stale; fwd-status=304; ttl=")
            && status.ends_with("; stored"),
        "{status}"
    );
    assert_eq!(r.text().await.unwrap(), "original");
    assert_eq!(origin.hits(), 2);
    assert_eq!(
        seen_header(&origin, 1, "if-none-match").as_deref(),
        Some("\"v1\"")
    );

    // The 304 made it fresh again and replaced the headers it carried.
    let r = edge.get("/etag").await;
    assert_eq!(r.status(), 200);
    let status = header(&r, "cache-status");
    assert!(status.starts_with("edgecache-test; hit; ttl="), "{status}");
    assert_eq!(header(&r, "x-version"), "2");
    assert_eq!(header(&r, "etag"), "\"v1\"");
    assert!(header(&r, "age").parse::<u64>().unwrap() < 60);
    assert_eq!(r.text().await.unwrap(), "original");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn stale_entry_with_last_modified_is_revalidated_with_if_modified_since() {
    let origin = TestOrigin::start(|_, n| match n {
        0 => resp(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("age", "100"),
                ("last-modified", LAST_MODIFIED),
            ],
            "dated",
        ),
        _ => resp(304, &[("cache-control", "max-age=60")], ""),
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/lm").await;

    let r = edge.get("/lm").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "cache-status").contains("fwd=stale; fwd-status=304"));
    assert_eq!(r.text().await.unwrap(), "dated");
    assert_eq!(
        seen_header(&origin, 1, "if-modified-since").as_deref(),
        Some(LAST_MODIFIED)
    );
    assert_eq!(seen_header(&origin, 1, "if-none-match"), None);

    let r = edge.get("/lm").await;
    assert!(header(&r, "cache-status").contains("; hit;"));
    assert_eq!(r.text().await.unwrap(), "dated");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn no_cache_response_is_revalidated_on_every_use() {
    let origin = TestOrigin::start(|_, n| match n {
        0 => resp(
            200,
            &[("cache-control", "no-cache"), ("etag", "\"nc\"")],
            "checked",
        ),
        _ => resp(
            304,
            &[("cache-control", "no-cache"), ("etag", "\"nc\"")],
            "",
        ),
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    let r = edge.get("/nc").await;
    assert!(header(&r, "cache-status").ends_with("; stored"));

    for n in 1..4 {
        let r = edge.get("/nc").await;
        assert_eq!(r.status(), 200);
        let status = header(&r, "cache-status").to_owned();
        assert!(status.contains("fwd=stale; fwd-status=304"), "{status}");
        assert_eq!(r.text().await.unwrap(), "checked");
        assert_eq!(origin.hits(), n + 1);
        assert_eq!(
            seen_header(&origin, n, "if-none-match").as_deref(),
            Some("\"nc\"")
        );
    }
}

/// An origin whose first answer is fresh for 10 minutes and that answers 304 afterwards.
async fn fresh_then_304(age: &'static str) -> TestOrigin {
    TestOrigin::start(move |_, n| match n {
        0 => resp(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("age", age),
                ("etag", "\"f\""),
            ],
            "fresh",
        ),
        _ => resp(
            304,
            &[("cache-control", "max-age=600"), ("etag", "\"f\"")],
            "",
        ),
    })
    .await
}

#[tokio::test]
async fn request_no_cache_forces_revalidation() {
    let origin = fresh_then_304("0").await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/rnc").await;
    assert!(header(&edge.get("/rnc").await, "cache-status").contains("; hit;"));
    assert_eq!(origin.hits(), 1);

    for (name, value) in [("cache-control", "no-cache"), ("pragma", "no-cache")] {
        let r = edge.get_with("/rnc", &[(name, value)]).await;
        assert_eq!(r.status(), 200);
        let status = header(&r, "cache-status").to_owned();
        assert!(
            status.contains("fwd=request; fwd-status=304"),
            "{name}: {status}"
        );
        assert_eq!(r.text().await.unwrap(), "fresh");
    }
    assert_eq!(origin.hits(), 3);
    assert_eq!(
        seen_header(&origin, 1, "if-none-match").as_deref(),
        Some("\"f\"")
    );
    assert_eq!(
        seen_header(&origin, 2, "if-none-match").as_deref(),
        Some("\"f\"")
    );
}

#[tokio::test]
async fn request_max_age_0_forces_revalidation_of_an_aged_entry() {
    // Fresh for ten minutes but already 30 seconds old.
    let origin = fresh_then_304("30").await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/ma0").await;

    let r = edge
        .get_with("/ma0", &[("cache-control", "max-age=0")])
        .await;
    assert_eq!(r.status(), 200);
    let status = header(&r, "cache-status").to_owned();
    assert!(status.contains("fwd=request; fwd-status=304"), "{status}");
    assert_eq!(r.text().await.unwrap(), "fresh");
    assert_eq!(
        seen_header(&origin, 1, "if-none-match").as_deref(),
        Some("\"f\"")
    );

    // A looser limit is met by the refreshed entry.
    let r = edge
        .get_with("/ma0", &[("cache-control", "max-age=20")])
        .await;
    assert!(header(&r, "cache-status").contains("; hit;"));
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn only_if_cached_on_a_miss_is_504() {
    let origin = TestOrigin::start(|_, _| resp(200, &[("cache-control", "max-age=60")], "x")).await;
    let edge = TestEdge::start(&origin.url()).await;
    let r = edge
        .get_with("/oic", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(r.status(), 504);
    assert_eq!(
        header(&r, "cache-status"),
        "edgecache-test; fwd=uri-miss; detail=only-if-cached"
    );
    assert_eq!(origin.hits(), 0);

    edge.get("/oic").await;
    let r = edge
        .get_with("/oic", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "cache-status").contains("; hit;"));
    assert_eq!(r.text().await.unwrap(), "x");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn full_response_replaces_a_stale_entry() {
    let origin = TestOrigin::start(|_, n| match n {
        0 => resp(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("age", "100"),
                ("etag", "\"old\""),
            ],
            "old body",
        ),
        _ => resp(
            200,
            &[("cache-control", "max-age=60"), ("etag", "\"new\"")],
            "new body",
        ),
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/replace").await;

    let r = edge.get("/replace").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "cache-status"),
        "edgecache-test; fwd=stale; fwd-status=200; stored"
    );
    assert_eq!(header(&r, "etag"), "\"new\"");
    assert_eq!(r.text().await.unwrap(), "new body");
    assert_eq!(
        seen_header(&origin, 1, "if-none-match").as_deref(),
        Some("\"old\"")
    );

    let r = edge.get("/replace").await;
    assert!(header(&r, "cache-status").contains("; hit;"));
    assert_eq!(header(&r, "etag"), "\"new\"");
    assert_eq!(r.text().await.unwrap(), "new body");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn a_304_for_another_etag_is_followed_by_a_full_fetch() {
    let origin = TestOrigin::start(|_, n| match n {
        0 => resp(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("age", "100"),
                ("etag", "\"a\""),
            ],
            "version a",
        ),
        1 => resp(
            304,
            &[("cache-control", "max-age=60"), ("etag", "\"b\"")],
            "",
        ),
        _ => resp(
            200,
            &[("cache-control", "max-age=60"), ("etag", "\"b\"")],
            "version b",
        ),
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    edge.get("/other-etag").await;

    let r = edge.get("/other-etag").await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "etag"), "\"b\"");
    assert_eq!(r.text().await.unwrap(), "version b");
    assert_eq!(origin.hits(), 3);
    assert_eq!(seen_header(&origin, 2, "if-none-match"), None);

    let r = edge.get("/other-etag").await;
    assert!(header(&r, "cache-status").contains("; hit;"));
    assert_eq!(r.text().await.unwrap(), "version b");
    assert_eq!(origin.hits(), 3);
}

#[tokio::test]
async fn client_validators_are_not_sent_to_the_origin() {
    let origin = TestOrigin::start(|_, _| {
        resp(
            200,
            &[("cache-control", "max-age=60"), ("etag", "\"s\"")],
            "state",
        )
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    // A client's If-None-Match on a miss must not turn the origin's answer into a 304 the
    // cache cannot store; the edge fetches the whole object and answers the client itself.
    let r = edge.get_with("/cv", &[("if-none-match", "\"s\"")]).await;
    assert_eq!(r.status(), 304);
    assert_eq!(seen_header(&origin, 0, "if-none-match"), None);
    let r = edge.get("/cv").await;
    assert!(header(&r, "cache-status").contains("; hit;"));
    assert_eq!(r.text().await.unwrap(), "state");
    assert_eq!(origin.hits(), 1);
}
