//! Methods other than GET and HEAD pass through, and unsafe ones invalidate (RFC 9111 §4.4).

mod support;

use std::sync::{Arc, Mutex};

use axum::body::{Bytes, to_bytes};
use axum::extract::Request;
use axum::response::Response;
use http::{HeaderMap, Method};
use support::{TestEdge, header, resp};
use tokio::net::TcpListener;

/// A request as the origin saw it, body included.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    path: String,
    body: Bytes,
}

/// An origin that records request bodies: `TestOrigin` does not keep them.
struct BodyOrigin {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl BodyOrigin {
    /// GETs are cacheable and numbered per path (`/a#0`, `/a#1`); other methods get
    /// `answer(method, path, headers)`.
    async fn start(answer: fn(&Method, &str, &HeaderMap) -> Response) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = received.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let log = log.clone();
            async move {
                let method = req.method().clone();
                let path = req.uri().path().to_owned();
                let headers = req.headers().clone();
                let body = to_bytes(req.into_body(), 1 << 20).await.unwrap();
                let mut log = log.lock().unwrap();
                let earlier = log
                    .iter()
                    .filter(|r| r.method == method && r.path == path)
                    .count();
                log.push(Received {
                    method: method.clone(),
                    path: path.clone(),
                    body,
                });
                if method == Method::GET {
                    resp(
                        200,
                        &[("cache-control", "max-age=600")],
                        format!("{path}#{earlier}"),
                    )
                } else {
                    answer(&method, &path, &headers)
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn gets(&self) -> usize {
        self.received()
            .iter()
            .filter(|r| r.method == Method::GET)
            .count()
    }
}

fn ok_201(_: &Method, _: &str, _: &HeaderMap) -> Response {
    resp(201, &[("content-type", "text/plain")], "done")
}

/// GETs `path` and returns (Cache-Status, body).
async fn get(edge: &TestEdge, path: &str) -> (String, String) {
    let r = edge.get(path).await;
    assert_eq!(r.status(), 200);
    let status = header(&r, "cache-status").to_owned();
    (status, r.text().await.unwrap())
}

/// Caches `path` and checks the second GET is a hit.
async fn cache(edge: &TestEdge, path: &str) {
    let (status, body) = get(edge, path).await;
    assert!(status.contains("fwd=uri-miss"), "{status}");
    let (status, again) = get(edge, path).await;
    assert!(status.contains("; hit;"), "{status}");
    assert_eq!(again, body);
}

#[tokio::test]
async fn unsafe_methods_pass_through_with_their_body_and_invalidate_the_url() {
    let origin = BodyOrigin::start(ok_201).await;
    let edge = TestEdge::start(&origin.url).await;

    cache(&edge, "/doc").await;
    for (i, method) in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH]
        .into_iter()
        .enumerate()
    {
        let (status, body) = get(&edge, "/doc").await;
        assert!(status.contains("; hit;"), "before {method}: {status}");
        assert_eq!(body, format!("/doc#{i}"));
        let payload = format!("{method} payload \u{1F600}").into_bytes();
        let r = edge
            .client
            .request(method.clone(), edge.url("/doc"))
            .body(payload.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{method}");
        assert_eq!(
            header(&r, "cache-status"),
            "edgecache-test; fwd=bypass; fwd-status=201"
        );
        assert_eq!(r.text().await.unwrap(), "done");
        let last = origin.received().last().cloned().unwrap();
        assert_eq!((last.method, last.path.as_str()), (method.clone(), "/doc"));
        assert_eq!(last.body, payload, "{method} body");

        // The write dropped the cached copy: the next GET goes to the origin.
        let (status, body) = get(&edge, "/doc").await;
        assert!(status.contains("fwd=uri-miss"), "after {method}: {status}");
        assert_eq!(body, format!("/doc#{}", i + 1));
    }
    assert_eq!(origin.gets(), 5);
}

#[tokio::test]
async fn location_and_content_location_of_a_write_are_invalidated() {
    let origin = BodyOrigin::start(|_, _, _| {
        resp(
            201,
            &[
                ("location", "/items/7"),
                ("content-location", "/items/latest?view=full"),
            ],
            "",
        )
    })
    .await;
    let edge = TestEdge::start(&origin.url).await;
    for path in ["/items", "/items/7", "/items/latest?view=full", "/items/8"] {
        cache(&edge, path).await;
    }

    let r = edge
        .client
        .post(edge.url("/items"))
        .body("new")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    for path in ["/items", "/items/7", "/items/latest?view=full"] {
        let (status, _) = get(&edge, path).await;
        assert!(status.contains("fwd=uri-miss"), "{path}: {status}");
    }
    // An unrelated URL is untouched.
    let (status, body) = get(&edge, "/items/8").await;
    assert!(status.contains("; hit;"), "{status}");
    assert_eq!(body, "/items/8#0");
}

#[tokio::test]
async fn absolute_location_is_invalidated_only_on_the_same_host() {
    let origin = BodyOrigin::start(|_, _, headers| {
        // The edge passes the client's Host on; name the edge itself in an absolute URL.
        let host = headers["x-forwarded-host"].to_str().unwrap();
        let here = format!("http://{host}/abs");
        resp(
            204,
            &[
                ("location", &here),
                ("content-location", "http://elsewhere.test/abs2"),
            ],
            "",
        )
    })
    .await;
    let edge = TestEdge::start(&origin.url).await;
    for path in ["/abs", "/abs2", "/write"] {
        cache(&edge, path).await;
    }

    let r = edge
        .client
        .put(edge.url("/write"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for (path, expected) in [
        ("/write", "fwd=uri-miss"),
        ("/abs", "fwd=uri-miss"),
        ("/abs2", "; hit;"),
    ] {
        let (status, _) = get(&edge, path).await;
        assert!(status.contains(expected), "{path}: {status}");
    }
}

#[tokio::test]
async fn a_failed_write_does_not_invalidate() {
    let origin = BodyOrigin::start(|_, _, _| resp(500, &[("location", "/kept/2")], "nope")).await;
    let edge = TestEdge::start(&origin.url).await;
    cache(&edge, "/kept").await;
    cache(&edge, "/kept/2").await;

    let r = edge
        .client
        .post(edge.url("/kept"))
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(r.text().await.unwrap(), "nope");
    let last = origin.received().last().cloned().unwrap();
    assert_eq!((last.method, &last.body[..]), (Method::POST, &b"data"[..]));

    for path in ["/kept", "/kept/2"] {
        let (status, body) = get(&edge, path).await;
        assert!(status.contains("; hit;"), "{path}: {status}");
        assert_eq!(body, format!("{path}#0"));
    }
    assert_eq!(origin.gets(), 2);
}

#[tokio::test]
async fn options_passes_through_and_does_not_invalidate() {
    let origin =
        BodyOrigin::start(|_, _, _| resp(204, &[("allow", "GET, HEAD, OPTIONS")], "")).await;
    let edge = TestEdge::start(&origin.url).await;
    cache(&edge, "/opt").await;

    let r = edge
        .client
        .request(Method::OPTIONS, edge.url("/opt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "allow"), "GET, HEAD, OPTIONS");
    assert!(header(&r, "cache-status").contains("fwd=bypass"));
    let last = origin.received().last().cloned().unwrap();
    assert_eq!((last.method, last.path.as_str()), (Method::OPTIONS, "/opt"));

    let (status, body) = get(&edge, "/opt").await;
    assert!(status.contains("; hit;"), "{status}");
    assert_eq!(body, "/opt#0");
    assert_eq!(origin.gets(), 1);
}
