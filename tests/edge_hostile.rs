//! The edge against hostile clients and misbehaving origins. Each attack is followed by an
//! innocent client: what it receives, and what the origin saw, show that nothing was
//! smuggled, poisoned, shared or marked failing.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgecache_edge::config::{OriginEntry, SetCookie};
use http::HeaderMap;
use support::hostile::{
    self, RawOrigin, RawResponse, naming, only_response, raw_exchange, raw_exchange_n, responses,
    responses_to,
};
use support::{TestEdge, TestOrigin, header, resp};
use tokio::sync::Semaphore;

/// True when a `Cache-Status` says the response came from the cache.
fn is_hit(cache_status: &str) -> bool {
    cache_status.contains("; hit")
}

/// A raw GET of `target` with the Host an innocent reqwest client sends, closing after.
fn get_bytes(edge: &TestEdge, target: &str) -> Vec<u8> {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        edge.addr
    )
    .into_bytes()
}

/// A raw GET of `target` (for targets reqwest would normalise itself).
async fn raw_get(edge: &TestEdge, target: &str) -> RawResponse {
    only_response(&raw_exchange(edge.addr, &get_bytes(edge, target)).await)
}

/// An innocent GET of `path` that must be answered 200 with `body`; returns its
/// `Cache-Status`.
async fn innocent_get(edge: &TestEdge, path: &str, body: &str) -> String {
    let r = edge.get(path).await;
    assert_eq!(r.status(), 200, "innocent GET {path}");
    let status = header(&r, "cache-status").to_owned();
    assert_eq!(r.text().await.unwrap(), body, "innocent GET {path}");
    status
}

/// Waits, checking every few milliseconds for at most 5 s, until `done` holds.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + hostile::BOUND;
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `POST /purge` on the edge's admin listener.
async fn purge(edge: &TestEdge, json: &str) {
    let r = support::client()
        .post(edge.admin_url("/purge"))
        .header("content-type", "application/json")
        .body(json.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{json}: {}", r.text().await.unwrap());
}

/// Every value of `name` the origin saw, joined with ", ".
fn values(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- Request smuggling: a body on a method that has none ---------------------------------

/// Sends `attack` (a request with a body, pipelined with a request for /victim.js whose
/// header holds an /evil.js request line), then checks that only 400s came back, that the
/// origin saw nothing, and that an innocent client gets /victim.js, then a hit of it.
async fn assert_smuggling_refused(attack_head: &str, framed_body: &str, method: &str) {
    let origin = RawOrigin::start(hostile::cacheable).await;
    let edge = TestEdge::start(&origin.url()).await;
    let host = edge.addr;
    let attack = format!(
        "{}{framed_body}GET /victim.js HTTP/1.1\r\nHost: {host}\r\nX: GET /evil.js HTTP/1.1\r\n\r\n",
        attack_head.replace("{host}", &host.to_string()),
    );

    let answers = responses_to(&raw_exchange(edge.addr, attack.as_bytes()).await, &[method]);
    assert!(!answers.is_empty(), "no answer to the attack");
    assert_eq!(
        answers[0].status, 400,
        "the request with a body: {answers:?}"
    );
    for a in &answers {
        assert_eq!(
            a.status, 400,
            "every answer on that connection: {answers:?}"
        );
    }
    assert_eq!(origin.hits(), 0, "the origin saw {:?}", origin.targets());

    let first = innocent_get(&edge, "/victim.js", &naming("/victim.js")).await;
    assert!(!is_hit(&first), "{first}");
    let second = innocent_get(&edge, "/victim.js", &naming("/victim.js")).await;
    assert!(is_hit(&second), "{second}");
    assert_eq!(origin.targets(), ["/victim.js"]);
}

#[tokio::test]
async fn get_with_a_content_length_body_poisons_nothing() {
    // 29 bytes: the body swallows "GET /victim.js HTTP/1.1\r\nHost".
    assert_smuggling_refused(
        "GET /fat HTTP/1.1\r\nHost: {host}\r\nContent-Length: 29\r\n\r\n",
        "",
        "GET",
    )
    .await;
}

#[tokio::test]
async fn get_with_a_chunked_body_poisons_nothing() {
    assert_smuggling_refused(
        "GET /fat HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\n",
        "0\r\n\r\n",
        "GET",
    )
    .await;
}

#[tokio::test]
async fn head_with_a_body_poisons_nothing() {
    assert_smuggling_refused(
        "HEAD /fat HTTP/1.1\r\nHost: {host}\r\nContent-Length: 29\r\n\r\n",
        "",
        "HEAD",
    )
    .await;
}

#[tokio::test]
async fn get_with_a_body_over_http2_is_refused() {
    let origin = RawOrigin::start(hostile::cacheable).await;
    let edge = TestEdge::start(&origin.url()).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();

    let r = h2
        .get(edge.url("/victim.js"))
        .body("GET /evil.js HTTP/1.1\r\nHost: ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 400);
    assert_eq!(origin.hits(), 0, "the origin saw {:?}", origin.targets());

    let r = h2.get(edge.url("/victim.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!is_hit(header(&r, "cache-status")));
    assert_eq!(r.text().await.unwrap(), naming("/victim.js"));
    let status = innocent_get(&edge, "/victim.js", &naming("/victim.js")).await;
    assert!(is_hit(&status), "{status}");
    assert_eq!(origin.targets(), ["/victim.js"]);
}

// ---- Host ----------------------------------------------------------------------------------

#[tokio::test]
async fn missing_duplicate_or_invalid_host_is_refused() {
    let origin = RawOrigin::start(hostile::cacheable).await;
    let edge = TestEdge::start(&origin.url()).await;
    let host = edge.addr;
    let attacks = [
        "GET /p HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
        format!(
            "GET /p HTTP/1.1\r\nHost: {host}\r\nHost: victim.test\r\nConnection: close\r\n\r\n"
        ),
        "GET /p HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /p HTTP/1.1\r\nHost: user@victim.test\r\nConnection: close\r\n\r\n".to_owned(),
    ];
    for attack in &attacks {
        let r = only_response(&raw_exchange(edge.addr, attack.as_bytes()).await);
        assert_eq!(r.status, 400, "{attack:?}: {}", r.text());
    }
    assert_eq!(origin.hits(), 0, "the origin saw {:?}", origin.targets());

    innocent_get(&edge, "/p", &naming("/p")).await;
    assert_eq!(origin.targets(), ["/p"]);
}

#[tokio::test]
async fn absolute_form_target_is_the_host_not_the_host_field() {
    let origin = RawOrigin::start(|req| {
        let body = format!(
            "{} for {}",
            req.target,
            req.header("x-forwarded-host").unwrap_or("?")
        );
        hostile::response_to(
            req,
            200,
            &[("Cache-Control", "public, max-age=300")],
            body.as_bytes(),
        )
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;

    let attack =
        "GET http://victim.test/p HTTP/1.1\r\nHost: evil.attacker\r\nConnection: close\r\n\r\n";
    let r = only_response(&raw_exchange(edge.addr, attack.as_bytes()).await);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "/p for victim.test");
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/p");
    assert_eq!(seen[0].header_all("x-forwarded-host"), ["victim.test"]);

    let r = edge.get_with("/p", &[("host", "victim.test")]).await;
    assert!(is_hit(header(&r, "cache-status")), "{r:?}");
    assert_eq!(r.text().await.unwrap(), "/p for victim.test");
    assert_eq!(origin.hits(), 1);

    let r = edge.get_with("/p", &[("host", "evil.attacker")]).await;
    assert!(!is_hit(header(&r, "cache-status")), "{r:?}");
    assert_eq!(r.text().await.unwrap(), "/p for evil.attacker");
    assert_eq!(origin.hits(), 2);
}

// ---- Forwarding headers --------------------------------------------------------------------

/// Headers a client may send to spoof its address or scheme, or to make the origin answer
/// for another URL or method than the one keyed.
const SPOOFED: [(&str, &str); 4] = [
    ("x-forwarded-for", "6.6.6.6"),
    ("x-forwarded-host", "evil.test"),
    ("x-forwarded-proto", "https"),
    ("forwarded", "for=6.6.6.6;proto=https"),
];
const OVERRIDES: [(&str, &str); 9] = [
    ("x-original-url", "/admin"),
    ("x-rewrite-url", "/admin"),
    ("x-http-method-override", "DELETE"),
    ("x-http-method", "DELETE"),
    ("x-method-override", "DELETE"),
    ("x-forwarded-scheme", "https"),
    ("x-forwarded-port", "8443"),
    ("x-host", "evil.test"),
    ("x-forwarded-server", "evil.test"),
];

/// An edge in front of a recording origin, configured by `tweak`; sends one GET of /f with
/// every spoofed and override header and returns the headers the origin saw.
async fn headers_seen_with(
    tweak: impl FnOnce(&mut edgecache_edge::EdgeConfig),
    extra: &[(&str, &str)],
) -> (HeaderMap, String) {
    let origin = TestOrigin::start(|_, _| resp(200, &[("cache-control", "no-store")], "ok")).await;
    let edge = TestEdge::start_with(&origin.url(), tweak).await;
    let mut sent: Vec<(&str, &str)> = SPOOFED.iter().chain(&OVERRIDES).copied().collect();
    sent.extend_from_slice(extra);
    let r = edge.get_with("/f", &sent).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    let seen = origin.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/f");
    innocent_get(&edge, "/after", "ok").await;
    (seen[0].headers.clone(), edge.addr.to_string())
}

fn assert_no_overrides(seen: &HeaderMap) {
    for (name, _) in OVERRIDES {
        assert!(
            !seen.contains_key(name),
            "{name} reached the origin: {seen:?}"
        );
    }
}

#[tokio::test]
async fn forwarding_headers_from_a_client_are_replaced() {
    let (seen, host) = headers_seen_with(|_| {}, &[]).await;
    assert_eq!(values(&seen, "x-forwarded-for"), "127.0.0.1");
    assert_eq!(values(&seen, "x-forwarded-host"), host);
    assert_eq!(values(&seen, "x-forwarded-proto"), "http");
    let forwarded = values(&seen, "forwarded");
    assert!(forwarded.contains("for=127.0.0.1"), "{forwarded}");
    assert!(forwarded.contains("proto=http"), "{forwarded}");
    assert!(!forwarded.contains("6.6.6.6"), "{forwarded}");
    assert!(!forwarded.contains("https"), "{forwarded}");
    assert_no_overrides(&seen);
}

#[tokio::test]
async fn forwarding_headers_from_a_trusted_peer_are_extended() {
    let (seen, _) = headers_seen_with(
        |config| config.forwarding.trusted_peers = vec!["127.0.0.0/8".into()],
        &[],
    )
    .await;
    assert_eq!(values(&seen, "x-forwarded-for"), "6.6.6.6, 127.0.0.1");
    assert_eq!(values(&seen, "x-forwarded-proto"), "https");
    assert_no_overrides(&seen);
}

#[tokio::test]
async fn strip_headers_replaces_the_default_list() {
    let (seen, _) = headers_seen_with(
        |config| config.forwarding.strip_headers = vec!["x-custom-override".into()],
        &[("x-custom-override", "1")],
    )
    .await;
    assert!(!seen.contains_key("x-custom-override"), "{seen:?}");
    assert_eq!(values(&seen, "x-original-url"), "/admin");
}

// ---- Query strings -------------------------------------------------------------------------

#[tokio::test]
async fn ignored_query_parameters_never_reach_the_origin() {
    let origin = RawOrigin::start(hostile::reflecting).await;
    let edge = TestEdge::start(&origin.url()).await;

    let r = edge
        .get("/page?utm_content=%3Cscript%3Ealert(1)%3C%2Fscript%3E&v=1")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(origin.targets(), ["/page?v=1"]);

    let r = edge.get("/page?v=1").await;
    assert!(is_hit(header(&r, "cache-status")), "{r:?}");
    let body = r.text().await.unwrap();
    assert!(body.starts_with("target: /page?v=1\n"), "{body}");
    assert!(!body.to_lowercase().contains("script"), "{body}");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn the_origin_sees_the_query_in_key_order() {
    let origin = RawOrigin::start(hostile::reflecting).await;
    let edge = TestEdge::start(&origin.url()).await;
    let r = edge.get("/q?b=2&a=1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(origin.targets(), ["/q?a=1&b=2"]);
    let r = edge.get("/q?a=1&b=2").await;
    assert!(is_hit(header(&r, "cache-status")), "{r:?}");
    assert_eq!(origin.hits(), 1);
}

// ---- Paths ---------------------------------------------------------------------------------

#[tokio::test]
async fn dot_segments_and_encoded_letters_are_one_key_and_one_origin_path() {
    let origin = RawOrigin::start(hostile::cacheable).await;
    let edge = TestEdge::start(&origin.url()).await;
    for target in ["/x/%2e%2e/p", "/x/../p", "/./p", "/%70"] {
        let r = raw_get(&edge, target).await;
        assert_eq!(r.status, 200, "{target}: {}", r.text());
        assert_eq!(r.text(), naming("/p"), "{target}");
    }
    assert_eq!(origin.targets(), ["/p"]);

    let status = innocent_get(&edge, "/p", &naming("/p")).await;
    assert!(is_hit(&status), "{status}");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn backslashes_and_bad_percent_encoding_are_refused() {
    let origin = RawOrigin::start(hostile::cacheable).await;
    let edge = TestEdge::start(&origin.url()).await;
    for target in ["/x\\..\\p", "/a%zz", "/a%2"] {
        let r = raw_get(&edge, target).await;
        assert_eq!(r.status, 400, "{target}: {}", r.text());
    }
    assert_eq!(origin.hits(), 0, "the origin saw {:?}", origin.targets());
    innocent_get(&edge, "/p", &naming("/p")).await;
    assert_eq!(origin.targets(), ["/p"]);
}

#[tokio::test]
async fn an_encoded_slash_is_kept_and_is_its_own_key() {
    let origin = RawOrigin::start(hostile::cacheable).await;
    let edge = TestEdge::start(&origin.url()).await;
    innocent_get(&edge, "/a%2Fb", &naming("/a%2Fb")).await;
    innocent_get(&edge, "/a/b", &naming("/a/b")).await;
    assert_eq!(origin.targets(), ["/a%2Fb", "/a/b"]);
    let status = innocent_get(&edge, "/a%2Fb", &naming("/a%2Fb")).await;
    assert!(is_hit(&status), "{status}");
    assert_eq!(origin.hits(), 2);
}

// ---- Purges --------------------------------------------------------------------------------

/// A cacheable origin whose body names the request and its 0-based number.
async fn numbering_origin(gate: Option<Arc<Semaphore>>) -> TestOrigin {
    let answer = |s: &support::Seen, n: usize| {
        resp(
            200,
            &[("cache-control", "max-age=60")],
            format!("{} #{n}", s.uri),
        )
    };
    match gate {
        None => TestOrigin::start(answer).await,
        Some(gate) => TestOrigin::start_gated(answer, gate).await,
    }
}

#[tokio::test]
async fn a_purge_right_after_a_store_always_removes_it() {
    let origin = numbering_origin(None).await;
    let edge = TestEdge::start(&origin.url()).await;
    for i in 0..30 {
        let path = format!("/obj/{i}");
        let r = edge.get(&path).await;
        assert!(header(&r, "cache-status").contains("stored"), "{r:?}");
        assert_eq!(r.text().await.unwrap(), format!("{path} #{}", 2 * i));
        purge(&edge, &format!(r#"{{"urls":["{path}"]}}"#)).await;
        let r = edge.get(&path).await;
        let status = header(&r, "cache-status").to_owned();
        assert!(!is_hit(&status), "{path} after its purge: {status}");
        assert_eq!(r.text().await.unwrap(), format!("{path} #{}", 2 * i + 1));
    }
    assert_eq!(origin.hits(), 60);
    for i in 0..30 {
        let path = format!("/obj/{i}");
        let times = origin.seen().iter().filter(|s| s.uri == path).count();
        assert_eq!(times, 2, "{path}");
    }
}

#[tokio::test]
async fn a_prefix_purge_reaches_a_path_stored_through_dot_segments() {
    let origin = RawOrigin::start(hostile::cacheable).await;
    let edge = TestEdge::start(&origin.url()).await;
    let r = raw_get(&edge, "/x/%2e%2e/p").await;
    assert_eq!((r.status, r.text()), (200, naming("/p")));
    let r = raw_get(&edge, "/x/%2e%2e/p").await;
    assert!(is_hit(r.cache_status()), "{r:?}");
    assert_eq!(origin.hits(), 1);

    purge(&edge, r#"{"prefixes":["/p"]}"#).await;
    let r = raw_get(&edge, "/x/%2e%2e/p").await;
    assert_eq!((r.status, r.text()), (200, naming("/p")));
    assert!(!is_hit(r.cache_status()), "{r:?}");
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn a_purge_during_the_fetch_is_not_undone_by_its_store() {
    let gate = Arc::new(Semaphore::new(0));
    let origin = numbering_origin(Some(gate.clone())).await;
    let edge = TestEdge::start(&origin.url()).await;

    let waiting = {
        let (client, url) = (edge.client.clone(), edge.url("/inflight"));
        tokio::spawn(async move {
            let r = client.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    wait_until("the origin saw the request", || origin.hits() == 1).await;
    purge(&edge, r#"{"urls":["/inflight"]}"#).await;
    gate.add_permits(100);
    assert_eq!(waiting.await.unwrap(), (200, "/inflight #0".to_owned()));

    let r = edge.get("/inflight").await;
    let status = header(&r, "cache-status").to_owned();
    assert!(!is_hit(&status), "{status}");
    assert_eq!(r.text().await.unwrap(), "/inflight #1");
    assert_eq!(origin.hits(), 2);
}

// ---- Set-Cookie ----------------------------------------------------------------------------

async fn cookie_origin(gate: Option<Arc<Semaphore>>) -> TestOrigin {
    let answer = |_: &support::Seen, _: usize| {
        resp(
            200,
            &[
                ("cache-control", "public, max-age=60"),
                ("set-cookie", "session=alice"),
            ],
            "page",
        )
    };
    match gate {
        None => TestOrigin::start(answer).await,
        Some(gate) => TestOrigin::start_gated(answer, gate).await,
    }
}

fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_stored_response_does_not_replay_its_set_cookie() {
    let origin = cookie_origin(None).await;
    let edge = TestEdge::start(&origin.url()).await;
    let first = edge.get("/s").await;
    assert_eq!(set_cookies(&first), ["session=alice"]);
    assert_eq!(first.text().await.unwrap(), "page");

    let second = edge.get("/s").await;
    assert!(is_hit(header(&second, "cache-status")), "{second:?}");
    assert!(set_cookies(&second).is_empty(), "{second:?}");
    assert_eq!(second.text().await.unwrap(), "page");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn set_cookie_on_heuristic_freshness_is_not_stored() {
    let origin = TestOrigin::start(|_, n| {
        let cookie = format!("session=u{n}");
        resp(
            200,
            &[
                ("last-modified", "Mon, 01 Jan 2024 00:00:00 GMT"),
                ("set-cookie", &cookie),
            ],
            "page",
        )
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;
    let first = edge.get("/h").await;
    assert_eq!(set_cookies(&first), ["session=u0"]);
    let second = edge.get("/h").await;
    assert!(!is_hit(header(&second, "cache-status")), "{second:?}");
    assert_eq!(set_cookies(&second), ["session=u1"]);
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn set_cookie_bypass_stores_nothing() {
    let origin = cookie_origin(None).await;
    let edge = TestEdge::start_with(&origin.url(), |config| {
        config.cache.set_cookie = SetCookie::Bypass;
    })
    .await;
    for _ in 0..2 {
        let r = edge.get("/s").await;
        assert!(!is_hit(header(&r, "cache-status")), "{r:?}");
        assert_eq!(set_cookies(&r), ["session=alice"]);
        assert_eq!(r.text().await.unwrap(), "page");
    }
    assert_eq!(origin.hits(), 2);
}

#[tokio::test]
async fn set_cookie_store_replays_it() {
    let origin = cookie_origin(None).await;
    let edge = TestEdge::start_with(&origin.url(), |config| {
        config.cache.set_cookie = SetCookie::Store;
    })
    .await;
    edge.get("/s").await;
    let r = edge.get("/s").await;
    assert!(is_hit(header(&r, "cache-status")), "{r:?}");
    assert_eq!(set_cookies(&r), ["session=alice"]);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn collapsed_requests_do_not_share_a_set_cookie() {
    let gate = Arc::new(Semaphore::new(0));
    let origin = cookie_origin(Some(gate.clone())).await;
    let edge = TestEdge::start(&origin.url()).await;
    let requests: Vec<_> = (0..5)
        .map(|_| {
            let (client, url) = (edge.client.clone(), edge.url("/s"));
            tokio::spawn(async move {
                let r = client.get(url).send().await.unwrap();
                let cookies = set_cookies(&r);
                (r.status().as_u16(), cookies, r.text().await.unwrap())
            })
        })
        .collect();
    edge.wait_for_collapsed(4).await;
    gate.add_permits(100);

    let mut with_cookie = 0;
    for request in requests {
        let (status, cookies, body) = request.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "page"));
        if !cookies.is_empty() {
            assert_eq!(cookies, ["session=alice"]);
            with_cookie += 1;
        }
    }
    assert_eq!(with_cookie, 1, "clients that got the Set-Cookie");
    assert_eq!(origin.hits(), 1);
}

// ---- Origins that misbehave ----------------------------------------------------------------

#[tokio::test]
async fn ambiguous_origin_framing_is_not_passed_on() {
    let origin = RawOrigin::start(hostile::ambiguous_framing).await;
    let edge = TestEdge::start(&origin.url()).await;

    let r = raw_get(&edge, "/amb").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "hello world");
    if let Some(length) = r.header("content-length") {
        assert_eq!(length, "11", "{r:?}");
    }

    // The next client, from the cache or over the same origin connection, sees the same.
    for path in ["/amb", "/amb2"] {
        let r = edge.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        let length = header(&r, "content-length").to_owned();
        assert!(length.is_empty() || length == "11", "{path}: {length}");
        assert_eq!(r.text().await.unwrap(), "hello world", "{path}");
    }
    let targets = origin.targets();
    assert!(
        targets.iter().all(|t| t == "/amb" || t == "/amb2") && (2..=3).contains(&targets.len()),
        "{targets:?}"
    );
}

#[tokio::test]
async fn a_switch_of_protocols_from_the_origin_is_a_bad_gateway() {
    let origin = RawOrigin::start(|req| {
        if req.target == "/ws" {
            hostile::switching_protocols(req)
        } else {
            hostile::cacheable(req)
        }
    })
    .await;
    let edge = TestEdge::start(&origin.url()).await;

    let r = edge.get("/ws").await;
    assert_eq!(r.status(), 502, "{r:?}");
    assert_eq!(header(&r, "upgrade"), "");

    // A client asking for the switch itself gets no tunnel either.
    let ask = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        edge.addr
    );
    let bytes = raw_exchange_n(edge.addr, ask.as_bytes(), 1).await;
    let answers = responses(&bytes);
    assert_eq!(answers[0].status, 502, "{answers:?}");
    assert_eq!(answers[0].header("upgrade"), None, "{answers:?}");
    assert!(
        !bytes.windows(7).any(|w| w == b"\x81\x05hello"),
        "a WebSocket frame was relayed: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    for seen in origin.seen() {
        assert_eq!(seen.header("upgrade"), None, "{seen:?}");
    }

    innocent_get(&edge, "/p", &naming("/p")).await;
    assert_eq!(origin.targets().last().map(String::as_str), Some("/p"));
}

// ---- Requests that are the client's fault --------------------------------------------------

#[tokio::test]
async fn a_broken_chunked_upload_is_the_clients_fault_not_the_origins() {
    let a = TestOrigin::start(|_, _| resp(200, &[("cache-control", "max-age=60")], "from A")).await;
    let b = TestOrigin::start(|_, _| resp(200, &[("cache-control", "max-age=60")], "from B")).await;
    let origins = vec![OriginEntry::http(a.url()), OriginEntry::http(b.url())];
    let edge = TestEdge::start_with(&a.url(), |config| config.origins = origins).await;

    let upload = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         zz\r\nhello\r\n",
        edge.addr
    );
    for i in 0..3 {
        let r = only_response(&raw_exchange(edge.addr, upload.as_bytes()).await);
        assert_eq!(r.status, 400, "upload {i}: {}", r.text());
    }

    let before = a.hits();
    innocent_get(&edge, "/asset", "from A").await;
    assert_eq!(a.hits(), before + 1);
    assert_eq!(b.hits(), 0);
}

#[tokio::test]
async fn connect_is_refused() {
    let origin = RawOrigin::start(hostile::cacheable).await;
    let edge = TestEdge::start(&origin.url()).await;
    let attack = "CONNECT victim.test:443 HTTP/1.1\r\nHost: victim.test:443\r\n\r\n";
    let answers = responses(&raw_exchange_n(edge.addr, attack.as_bytes(), 1).await);
    assert!(
        matches!(answers.first().map(|a| a.status), Some(405 | 501)),
        "{answers:?}"
    );
    assert_eq!(origin.hits(), 0, "the origin saw {:?}", origin.targets());
    innocent_get(&edge, "/p", &naming("/p")).await;
    assert_eq!(origin.targets(), ["/p"]);
}
