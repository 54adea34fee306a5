//! Client conditionals, ranges and HEAD answered from a cached object, without the origin.

mod support;

use support::{TestEdge, TestOrigin, header, resp};

const BODY: &str = "abcdefghijklmnopqrstuvwxyz";
const ETAG: &str = "\"v1\"";
const LAST_MODIFIED: &str = "Mon, 01 Jan 2024 00:00:00 GMT";

/// An origin serving `BODY` with validators, and an edge that has already cached it.
async fn warm(path: &str) -> (TestOrigin, TestEdge) {
    let origin = TestOrigin::start(|_, _| {
        resp(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("etag", ETAG),
                ("last-modified", LAST_MODIFIED),
                ("content-type", "text/plain"),
            ],
            BODY,
        )
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    let r = edge.get(path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), BODY);
    assert_eq!(origin.hits(), 1);
    (origin, edge)
}

fn assert_hit(r: &reqwest::Response) {
    let status = header(r, "cache-status");
    assert!(status.starts_with("edgecache-test; hit; ttl="), "{status}");
}

#[tokio::test]
async fn if_none_match_with_the_stored_etag_gets_304_from_cache() {
    let (origin, edge) = warm("/inm").await;
    for inm in [ETAG, "\"x\", \"v1\"", "W/\"v1\"", "*"] {
        let r = edge.get_with("/inm", &[("if-none-match", inm)]).await;
        assert_eq!(r.status(), 304, "{inm}");
        assert_hit(&r);
        assert_eq!(header(&r, "etag"), ETAG);
        assert_eq!(header(&r, "cache-control"), "max-age=600");
        assert_eq!(r.bytes().await.unwrap().len(), 0);
    }
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn if_none_match_with_another_etag_gets_the_full_body() {
    let (origin, edge) = warm("/inm-other").await;
    let r = edge
        .get_with("/inm-other", &[("if-none-match", "\"v0\"")])
        .await;
    assert_eq!(r.status(), 200);
    assert_hit(&r);
    assert_eq!(header(&r, "etag"), ETAG);
    assert_eq!(r.text().await.unwrap(), BODY);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn if_modified_since_gets_304_unless_modified_after_it() {
    let (origin, edge) = warm("/ims").await;
    for ims in [LAST_MODIFIED, "Tue, 02 Jan 2024 00:00:00 GMT"] {
        let r = edge.get_with("/ims", &[("if-modified-since", ims)]).await;
        assert_eq!(r.status(), 304, "{ims}");
        assert_hit(&r);
        assert_eq!(header(&r, "last-modified"), LAST_MODIFIED);
        assert_eq!(r.bytes().await.unwrap().len(), 0);
    }
    let r = edge
        .get_with(
            "/ims",
            &[("if-modified-since", "Sun, 31 Dec 2023 00:00:00 GMT")],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), BODY);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn if_match_with_another_etag_is_412() {
    let (origin, edge) = warm("/im").await;
    let r = edge.get_with("/im", &[("if-match", "\"v0\"")]).await;
    assert_eq!(r.status(), 412);
    assert!(header(&r, "cache-status").starts_with("edgecache-test; hit"));
    assert!(!r.text().await.unwrap().contains(BODY));

    let r = edge.get_with("/im", &[("if-match", ETAG)]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), BODY);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn single_range_is_206_with_content_range() {
    let (origin, edge) = warm("/range").await;
    let r = edge.get_with("/range", &[("range", "bytes=0-3")]).await;
    assert_eq!(r.status(), 206);
    assert_hit(&r);
    assert_eq!(header(&r, "content-range"), "bytes 0-3/26");
    assert_eq!(header(&r, "content-length"), "4");
    assert_eq!(r.text().await.unwrap(), "abcd");

    let r = edge.get_with("/range", &[("range", "bytes=-3")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range"), "bytes 23-25/26");
    assert_eq!(r.text().await.unwrap(), "xyz");

    let r = edge.get_with("/range", &[("range", "bytes=20-")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range"), "bytes 20-25/26");
    assert_eq!(r.text().await.unwrap(), "uvwxyz");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn multiple_ranges_are_multipart_byteranges() {
    let (origin, edge) = warm("/multi").await;
    let r = edge.get_with("/multi", &[("range", "bytes=0-1,5-7")]).await;
    assert_eq!(r.status(), 206);
    assert_hit(&r);
    let content_type = header(&r, "content-type").to_owned();
    let boundary = content_type
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("content-type {content_type}"))
        .to_owned();
    assert!(header(&r, "content-range").is_empty());
    let length: usize = header(&r, "content-length").parse().unwrap();
    let body = r.text().await.unwrap();
    assert_eq!(body.len(), length);
    let first = format!(
        "--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/26\r\n\r\nab\r\n"
    );
    let second = format!(
        "--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 5-7/26\r\n\r\nfgh\r\n"
    );
    let first_at = body
        .find(&first)
        .unwrap_or_else(|| panic!("no first part in {body:?}"));
    let second_at = body
        .find(&second)
        .unwrap_or_else(|| panic!("no second part in {body:?}"));
    assert!(first_at < second_at);
    assert!(body.ends_with(&format!("--{boundary}--\r\n")), "{body:?}");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn unsatisfiable_range_is_416_with_the_length() {
    let (origin, edge) = warm("/416").await;
    let r = edge.get_with("/416", &[("range", "bytes=100-200")]).await;
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range"), "bytes */26");
    assert!(header(&r, "cache-status").starts_with("edgecache-test; hit"));
    assert!(!r.text().await.unwrap().contains(BODY));
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn if_range_with_another_etag_gets_the_full_body() {
    let (origin, edge) = warm("/if-range").await;
    let r = edge
        .get_with(
            "/if-range",
            &[("range", "bytes=0-3"), ("if-range", "\"v0\"")],
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-range").is_empty());
    assert_eq!(r.text().await.unwrap(), BODY);

    let r = edge
        .get_with("/if-range", &[("range", "bytes=0-3"), ("if-range", ETAG)])
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.text().await.unwrap(), "abcd");

    let r = edge
        .get_with(
            "/if-range",
            &[("range", "bytes=0-3"), ("if-range", LAST_MODIFIED)],
        )
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.text().await.unwrap(), "abcd");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn head_from_cache_has_content_length_and_no_body() {
    let (origin, edge) = warm("/head").await;
    let r = edge.client.head(edge.url("/head")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_hit(&r);
    assert_eq!(header(&r, "content-length"), "26");
    assert_eq!(header(&r, "etag"), ETAG);
    assert_eq!(r.bytes().await.unwrap().len(), 0);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn range_on_a_cold_object_is_cut_from_one_origin_fetch() {
    let origin = TestOrigin::start(|_, _| {
        resp(
            200,
            &[("cache-control", "max-age=600"), ("etag", ETAG)],
            BODY,
        )
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;

    let r = edge.get_with("/cold", &[("range", "bytes=2-5")]).await;
    assert_eq!(r.status(), 206);
    assert!(header(&r, "cache-status").contains("fwd=uri-miss"));
    assert_eq!(header(&r, "content-range"), "bytes 2-5/26");
    assert_eq!(r.text().await.unwrap(), "cdef");
    assert_eq!(origin.hits(), 1);
    // The edge fetched the whole object, not the client's range.
    assert!(origin.seen()[0].headers.get("range").is_none());

    let r = edge.get("/cold").await;
    assert_hit(&r);
    assert_eq!(r.text().await.unwrap(), BODY);
    let r = edge.get_with("/cold", &[("range", "bytes=24-")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.text().await.unwrap(), "yz");
    assert_eq!(origin.hits(), 1);
}

/// The range waits for the fetch's body to end, but the object is stored a moment later;
/// on a multi-threaded runtime the lookup can run in between and miss it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]

async fn cold_range_requests_are_always_206() {
    let origin =
        TestOrigin::start(|_, _| resp(200, &[("cache-control", "max-age=600")], BODY)).await;
    let edge = TestEdge::start(&origin.url()).await;
    let mut full = 0;
    for i in 0..500 {
        let r = edge
            .get_with(&format!("/cold-{i}"), &[("range", "bytes=2-5")])
            .await;
        if r.status() != 206 {
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), BODY);
            full += 1;
        }
    }
    assert_eq!(full, 0, "{full} of 500 cold ranges got the whole object");
    assert_eq!(origin.hits(), 500);
}
