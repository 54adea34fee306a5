//! Purging: the purge API fanning out to three edges, soft purges, bad input, per-node purges.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use edgecache_purge_api::{PurgeClient, PurgeRequest, PurgeStatus};
use support::purge::{PurgeService, TOKEN, follower};
use support::{TestEdge, TestOrigin, header, resp};

/// The `Host` of every request: part of the cache key, and of the key `PURGE` purges.
const HOST: &str = "cdn.test";

/// Polls `/stats` until the edge has caught up with the purge log at `seq`.
async fn wait_caught_up(edge: &TestEdge, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = edge.stats().await;
        if stats["purge"]["caught_up"] == true && stats["purge"]["last_seq"] == seq {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never caught up at seq {seq}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An origin answering `PATH #N` (N: its hit number) for an hour, tagging `/css/` with `css`.
async fn numbered_origin() -> TestOrigin {
    TestOrigin::start(|seen, n| {
        let tags = if seen.uri.starts_with("/css/") {
            "css static"
        } else {
            "static"
        };
        resp(
            200,
            &[("cache-control", "max-age=3600"), ("surrogate-key", tags)],
            format!("{} #{n}", seen.uri),
        )
    })
    .await
}

async fn get(edge: &TestEdge, path: &str) -> reqwest::Response {
    edge.get_with(path, &[("host", HOST)]).await
}

/// GETs `path` and checks it went to the origin and was stored; returns the body.
async fn expect_miss(edge: &TestEdge, pop: &str, path: &str) -> String {
    let r = get(edge, path).await;
    assert_eq!(r.status(), 200, "{pop} {path}");
    assert_eq!(
        header(&r, "cache-status"),
        format!("edgecache-{pop}; fwd=uri-miss; fwd-status=200; stored"),
        "{pop} {path}"
    );
    let body = r.text().await.unwrap();
    assert!(
        body.starts_with(&format!("{path} #")),
        "{pop} {path}: {body}"
    );
    body
}

/// GETs `path` and checks it is a fresh memory hit with exactly `body`.
async fn expect_hit(edge: &TestEdge, pop: &str, path: &str, body: &str) {
    let r = get(edge, path).await;
    assert_eq!(r.status(), 200, "{pop} {path}");
    let status = header(&r, "cache-status").to_owned();
    assert!(
        status.starts_with(&format!("edgecache-{pop}; hit; ttl="))
            && status.ends_with("; detail=memory"),
        "{pop} {path}: {status}"
    );
    assert_eq!(r.text().await.unwrap(), body, "{pop} {path}");
}

/// How many requests for exactly `uri` reached the origin.
fn origin_saw(origin: &TestOrigin, uri: &str) -> usize {
    origin.seen().iter().filter(|s| s.uri == uri).count()
}

/// Checks a completed purge: every one of `pops` is live and has applied it.
fn assert_applied_everywhere(status: &PurgeStatus, pops: &[&str]) {
    assert!(status.complete, "{status:?}");
    let mut names: Vec<&str> = status.pops.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, pops, "{status:?}");
    for p in &status.pops {
        assert!(p.live && p.applied && p.applied_at.is_some(), "{p:?}");
    }
}

#[tokio::test]
async fn each_purge_kind_reaches_every_edge_and_only_what_it_names() {
    let data = tempfile::tempdir().unwrap();
    let api = PurgeService::start(data.path()).await;
    let client = api.client();
    let origin = numbered_origin().await;
    let pops = ["pop-a", "pop-b", "pop-c"];
    let mut edges = Vec::new();
    for pop in pops {
        edges.push(follower(&origin, &api.url, pop, None).await);
    }
    for edge in &edges {
        wait_caught_up(edge, 0).await;
    }

    let urls = [
        "/a.js",
        "/a.js?v=2",
        "/q.js?a=1&b=2",
        "/img/x.png",
        "/img/y.png",
        "/css/site.css",
        "/other.txt",
    ];
    // bodies[(edge, url)]: what that edge holds for that URL.
    let mut bodies: HashMap<(usize, &str), String> = HashMap::new();
    for (i, edge) in edges.iter().enumerate() {
        for url in urls {
            bodies.insert((i, url), expect_miss(edge, pops[i], url).await);
        }
        for url in urls {
            expect_hit(edge, pops[i], url, &bodies[&(i, url)]).await;
        }
        // The query's order is not part of the key: this is the object stored above.
        expect_hit(
            edge,
            pops[i],
            "/q.js?b=2&a=1",
            &bodies[&(i, "/q.js?a=1&b=2")],
        )
        .await;
    }
    assert_eq!(origin.hits(), urls.len() * edges.len());

    let request = |f: fn(&mut PurgeRequest)| {
        let mut r = PurgeRequest::default();
        f(&mut r);
        r
    };
    let rounds: [(PurgeRequest, &[&str]); 4] = [
        (
            // Named with its parameters in the other order: still the stored object.
            request(|r| r.urls = vec!["/a.js?v=2".into(), "/q.js?b=2&a=1".into()]),
            &["/a.js?v=2", "/q.js?a=1&b=2"],
        ),
        (
            request(|r| r.prefixes = vec!["/img/".into()]),
            &["/img/x.png", "/img/y.png"],
        ),
        (request(|r| r.tags = vec!["css".into()]), &["/css/site.css"]),
        (request(|r| r.all = true), &urls),
    ];
    let mut fetched: HashMap<&str, usize> = urls.iter().map(|u| (*u, edges.len())).collect();
    for (n, (purge, purged)) in rounds.iter().enumerate() {
        let seq = n as u64 + 1;
        let accepted = client.purge(purge).await.unwrap();
        assert_eq!(accepted.seq, seq, "{purge:?}");
        let status = client
            .wait_complete(&accepted.id, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!((status.seq, &status.request), (seq, purge));
        assert_applied_everywhere(&status, &pops);

        let before = origin.hits();
        for (i, edge) in edges.iter().enumerate() {
            let stats = edge.stats().await;
            assert_eq!(stats["purge"]["last_seq"], seq, "{stats}");
            assert_eq!(stats["purge"]["applied"], seq, "{stats}");
            for url in urls {
                let old = &bodies[&(i, url)];
                if purged.contains(&url) {
                    let new = expect_miss(edge, pops[i], url).await;
                    assert_ne!(&new, old, "{} {url} was served after {purge:?}", pops[i]);
                    bodies.insert((i, url), new);
                } else {
                    expect_hit(edge, pops[i], url, old).await;
                }
            }
        }
        assert_eq!(
            origin.hits(),
            before + purged.len() * edges.len(),
            "{purge:?}"
        );
        for url in *purged {
            *fetched.get_mut(url).unwrap() += edges.len();
        }
        for url in urls {
            assert_eq!(
                origin_saw(&origin, url),
                fetched[url],
                "{url} after {purge:?}"
            );
        }
    }
    // What the last purge sent back to the origin is cached again everywhere.
    for (i, edge) in edges.iter().enumerate() {
        for url in urls {
            expect_hit(edge, pops[i], url, &bodies[&(i, url)]).await;
        }
    }
    let refetched: usize = rounds.iter().map(|(_, purged)| purged.len()).sum();
    assert_eq!(origin.hits(), (urls.len() + refetched) * edges.len());
    for edge in edges {
        edge.stop().await;
    }
    api.stop().await;
}

/// The `ttl` of a `Cache-Status` value.
fn ttl_of(cache_status: &str) -> i64 {
    let (_, rest) = cache_status
        .split_once("; ttl=")
        .unwrap_or_else(|| panic!("no ttl in {cache_status:?}"));
    rest.split(';').next().unwrap().trim().parse().unwrap()
}

fn soft_purge_of_tag(tag: &str) -> PurgeRequest {
    PurgeRequest {
        tags: vec![tag.into()],
        soft: true,
        ..PurgeRequest::default()
    }
}

#[tokio::test]
async fn soft_purge_within_stale_while_revalidate_serves_stale_and_revalidates_once() {
    let data = tempfile::tempdir().unwrap();
    let api = PurgeService::start(data.path()).await;
    let client = api.client();
    let origin = TestOrigin::start(|seen, n| {
        resp(
            200,
            &[
                ("cache-control", "max-age=3600, stale-while-revalidate=60"),
                ("surrogate-key", "theme"),
            ],
            format!("{} #{n}", seen.uri),
        )
    })
    .await;
    let edge = follower(&origin, &api.url, "soft", None).await;
    wait_caught_up(&edge, 0).await;
    let old = expect_miss(&edge, "soft", "/theme.css").await;
    expect_hit(&edge, "soft", "/theme.css", &old).await;

    let accepted = client.purge(&soft_purge_of_tag("theme")).await.unwrap();
    let status = client
        .wait_complete(&accepted.id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_applied_everywhere(&status, &["soft"]);

    // Answered at once from the cache, as a stale hit.
    let r = get(&edge, "/theme.css").await;
    assert_eq!(r.status(), 200);
    let cache_status = header(&r, "cache-status").to_owned();
    assert!(
        cache_status.starts_with("edgecache-soft; hit; ttl=")
            && cache_status.ends_with("; detail=memory"),
        "{cache_status}"
    );
    assert!(ttl_of(&cache_status) <= 0, "not stale: {cache_status}");
    assert_eq!(r.text().await.unwrap(), old);

    // Meanwhile one revalidation reaches the origin; until it is stored, requests keep
    // getting the stale copy and start no other.
    let deadline = Instant::now() + Duration::from_secs(10);
    let new = loop {
        let r = get(&edge, "/theme.css").await;
        assert_eq!(r.status(), 200);
        let cache_status = header(&r, "cache-status").to_owned();
        assert!(cache_status.contains("; hit; "), "{cache_status}");
        let body = r.text().await.unwrap();
        if body != old {
            assert!(ttl_of(&cache_status) > 3500, "{cache_status}");
            break body;
        }
        assert!(Instant::now() < deadline, "still stale: {cache_status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(new, "/theme.css #1");
    assert_eq!(origin.hits(), 2);
    expect_hit(&edge, "soft", "/theme.css", &new).await;
    assert_eq!(origin.hits(), 2);
    edge.stop().await;
    api.stop().await;
}

#[tokio::test]
async fn soft_purge_without_stale_while_revalidate_revalidates_before_serving() {
    let data = tempfile::tempdir().unwrap();
    let api = PurgeService::start(data.path()).await;
    let client = api.client();
    let origin = TestOrigin::start(|seen, n| {
        let headers = [
            ("cache-control", "max-age=3600"),
            ("etag", "\"e1\""),
            ("surrogate-key", "theme"),
        ];
        if seen
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"e1\"")
        {
            resp(304, &headers, "")
        } else {
            resp(200, &headers, format!("{} #{n}", seen.uri))
        }
    })
    .await;
    let edge = follower(&origin, &api.url, "soft", None).await;
    wait_caught_up(&edge, 0).await;
    let old = expect_miss(&edge, "soft", "/theme.css").await;
    expect_hit(&edge, "soft", "/theme.css", &old).await;

    let accepted = client.purge(&soft_purge_of_tag("theme")).await.unwrap();
    let status = client
        .wait_complete(&accepted.id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_applied_everywhere(&status, &["soft"]);

    // Not served until the origin confirmed it; a 304 keeps the stored body.
    let r = get(&edge, "/theme.css").await;
    assert_eq!(r.status(), 200);
    let cache_status = header(&r, "cache-status").to_owned();
    assert!(
        cache_status.starts_with("edgecache-soft; fwd=stale; fwd-status=304; ttl=")
            && cache_status.ends_with("; stored"),
        "{cache_status}"
    );
    assert_eq!(header(&r, "etag"), "\"e1\"");
    assert_eq!(r.text().await.unwrap(), old);
    let seen = origin.seen();
    assert_eq!(seen.len(), 2);
    assert!(!seen[0].headers.contains_key("if-none-match"));
    assert_eq!(seen[1].headers["if-none-match"], "\"e1\"");

    // Refreshed: fresh again without another trip.
    expect_hit(&edge, "soft", "/theme.css", &old).await;
    assert_eq!(origin.hits(), 2);
    edge.stop().await;
    api.stop().await;
}

/// POSTs `body` as JSON to `url` (with `token`, if any); returns status, headers and body.
async fn post_json(
    url: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut request = support::client()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let r = request.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (status, headers, json)
}

/// The `error` of an error body.
fn error_of(body: &serde_json::Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
}

#[tokio::test]
async fn bad_tokens_and_malformed_bodies_change_nothing() {
    let data = tempfile::tempdir().unwrap();
    let api = PurgeService::start(data.path()).await;
    let client = api.client();
    let origin = numbered_origin().await;
    let edge = follower(&origin, &api.url, "guard", None).await;
    wait_caught_up(&edge, 0).await;
    let first = client
        .purge(&PurgeRequest {
            tags: vec!["unrelated".into()],
            ..PurgeRequest::default()
        })
        .await
        .unwrap();
    client
        .wait_complete(&first.id, Duration::from_secs(10))
        .await
        .unwrap();
    let body = expect_miss(&edge, "guard", "/a.js").await;

    let all = r#"{"all": true}"#;
    let purge_url = format!("{}/v1/purge", api.url);
    let wrong = PurgeClient::with_http(support::client(), &api.url, "not-the-token").unwrap();
    let err = wrong
        .purge(&PurgeRequest {
            all: true,
            ..PurgeRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(
        err.to_string().ends_with("401: invalid bearer token"),
        "{err}"
    );
    let (status, headers, json) = post_json(&purge_url, None, all).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(error_of(&json), "missing Authorization: Bearer header");

    // Malformed bodies: refused with a JSON error that says what is wrong.
    let (status, headers, json) = post_json(&purge_url, Some(TOKEN), r#"{"urls": ["/a.js""#).await;
    assert_eq!(status, 400, "{json}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let error = error_of(&json);
    assert!(
        error.contains("EOF while parsing") && error.contains("line 1 column"),
        "{error}"
    );
    let (status, _, json) = post_json(&purge_url, Some(TOKEN), r#"{"url": ["/a.js"]}"#).await;
    assert_eq!(status, 400, "{json}");
    assert!(error_of(&json).contains("unknown field `url`"), "{json}");
    let (status, _, json) = post_json(&purge_url, Some(TOKEN), r#"{"urls": ["a.js"]}"#).await;
    assert_eq!(status, 400, "{json}");
    assert!(
        error_of(&json).starts_with("urls[0]: must be a path starting with /"),
        "{json}"
    );
    let (status, _, json) = post_json(&purge_url, Some(TOKEN), "{}").await;
    assert_eq!(status, 400, "{json}");
    assert!(error_of(&json).starts_with("purge names nothing"), "{json}");

    // The log holds the one good purge and nothing else.
    let log = client.poll(0, Duration::ZERO).await.unwrap();
    assert_eq!(log.last_seq, 1);
    let ids: Vec<&str> = log.purges.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, [first.id.as_str()]);

    // The edge's own purge endpoint refuses the same way.
    let admin_purge = edge.admin_url("/purge");
    let (status, _, json) = post_json(&admin_purge, None, r#"{"urls": ["/a.js""#).await;
    assert_eq!(status, 400, "{json}");
    assert!(error_of(&json).contains("EOF while parsing"), "{json}");
    let (status, _, json) = post_json(&admin_purge, None, r#"{"urls": ["a.js"]}"#).await;
    assert_eq!(status, 400, "{json}");
    assert!(error_of(&json).starts_with("urls[0]:"), "{json}");

    expect_hit(&edge, "guard", "/a.js", &body).await;
    assert_eq!(origin.hits(), 1);
    let stats = edge.stats().await;
    assert_eq!(stats["purge"]["last_seq"], 1, "{stats}");
    assert_eq!(stats["purge"]["applied"], 1, "{stats}");
    edge.stop().await;
    api.stop().await;
}

/// An edge named `pop` with no purge API, optionally accepting the `PURGE` method.
async fn lone_edge(origin: &TestOrigin, pop: &str, allow_purge_method: bool) -> TestEdge {
    let pop = pop.to_owned();
    TestEdge::start_with(&origin.url(), move |cfg| {
        cfg.pop = pop;
        cfg.purge.allow_purge_method = allow_purge_method;
    })
    .await
}

#[tokio::test]
async fn admin_purge_clears_its_own_node_only() {
    let origin = numbered_origin().await;
    let pops = ["node-0", "node-1", "node-2"];
    let mut edges = Vec::new();
    let mut bodies = Vec::new();
    for pop in pops {
        let edge = lone_edge(&origin, pop, false).await;
        let a = expect_miss(&edge, pop, "/a.js").await;
        let b = expect_miss(&edge, pop, "/b.js").await;
        bodies.push((a, b));
        edges.push(edge);
    }

    let (status, _, json) =
        post_json(&edges[0].admin_url("/purge"), None, r#"{"urls":["/a.js"]}"#).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["applied"], true, "{json}");

    let new = expect_miss(&edges[0], pops[0], "/a.js").await;
    assert_ne!(new, bodies[0].0);
    expect_hit(&edges[0], pops[0], "/b.js", &bodies[0].1).await;
    for i in 1..3 {
        expect_hit(&edges[i], pops[i], "/a.js", &bodies[i].0).await;
        expect_hit(&edges[i], pops[i], "/b.js", &bodies[i].1).await;
    }
    assert_eq!(origin_saw(&origin, "/a.js"), 4);
    assert_eq!(origin_saw(&origin, "/b.js"), 3);
    for edge in edges {
        edge.stop().await;
    }
}

async fn send_purge_method(edge: &TestEdge, path: &str) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(b"PURGE").unwrap();
    edge.client
        .request(method, edge.url(path))
        .header("host", HOST)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn purge_method_is_refused_unless_enabled() {
    let origin = numbered_origin().await;

    let closed = lone_edge(&origin, "closed", false).await;
    let body = expect_miss(&closed, "closed", "/a.js").await;
    let r = send_purge_method(&closed, "/a.js").await;
    assert_eq!(r.status(), 405);
    assert!(header(&r, "allow").contains("GET"), "{:?}", r.headers());
    assert_eq!(
        header(&r, "cache-status"),
        "edgecache-closed; fwd=bypass; detail=purge-method-disabled"
    );
    expect_hit(&closed, "closed", "/a.js", &body).await;
    assert_eq!(origin.hits(), 1);
    assert_eq!(closed.stats().await["purge"]["applied"], 0);

    let open = lone_edge(&origin, "open", true).await;
    let body = expect_miss(&open, "open", "/a.js").await;
    let r = send_purge_method(&open, "/a.js").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().trim(), r#"{"purged":true}"#);
    let new = expect_miss(&open, "open", "/a.js").await;
    assert_ne!(new, body);
    expect_hit(&open, "open", "/a.js", &new).await;
    // The PURGE never reached the origin: it only saw the three GETs.
    assert_eq!(origin.hits(), 3);
    assert!(origin.seen().iter().all(|s| s.method == "GET"));
    closed.stop().await;
    open.stop().await;
}
