//! Several origins: GET/HEAD fail over to the next origin on connect error, timeout or 5xx;
//! an origin failing repeatedly is skipped, then probed again; other methods never retry.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgecache_edge::config::{HumanDuration, OriginEntry};
use futures_util::StreamExt;
use support::{TestEdge, TestOrigin, resp};

/// An address on which nothing listens: bound, then released.
async fn closed_port_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// An origin answering `200 "<name> <uri>"`, cacheable.
async fn named_origin(name: &'static str) -> TestOrigin {
    TestOrigin::start(move |s, _| {
        resp(
            200,
            &[("cache-control", "max-age=60")],
            format!("{name} {}", s.uri),
        )
    })
    .await
}

#[tokio::test]
async fn refused_primary_fails_over_to_the_secondary() {
    let secondary = named_origin("secondary").await;
    let edge = TestEdge::start_with(&closed_port_url().await, |c| {
        c.origins.push(OriginEntry::http(secondary.url()));
    })
    .await;
    for i in 0..20 {
        let path = format!("/refused/{i}");
        let r = edge.get(&path).await;
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), format!("secondary {path}"));
    }
    assert_eq!(secondary.hits(), 20);
    let head = edge
        .client
        .head(edge.url("/refused/head"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(secondary.hits(), 21);
}

#[tokio::test]
async fn primary_503_fails_over_to_the_secondary() {
    let primary = TestOrigin::start(|_, _| resp(503, &[], "down for maintenance")).await;
    let secondary = named_origin("secondary").await;
    let edge = TestEdge::start_with(&primary.url(), |c| {
        c.origins.push(OriginEntry::http(secondary.url()));
    })
    .await;
    let r = edge.get("/page").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "secondary /page");
    assert_eq!(primary.hits(), 1);
    assert_eq!(secondary.hits(), 1);
    // Cached from the secondary: no origin is asked again.
    let r = edge.get("/page").await;
    assert_eq!(r.status(), 200);
    assert_eq!((primary.hits(), secondary.hits()), (1, 1));
}

#[tokio::test]
async fn primary_timing_out_fails_over_to_the_secondary() {
    // A gate with no permits: the primary takes the request and never answers.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let primary = TestOrigin::start_gated(|_, _| resp(200, &[], "too late"), gate.clone()).await;
    let secondary = named_origin("secondary").await;
    let edge = TestEdge::start_with(&primary.url(), |c| {
        c.timeouts.first_byte = HumanDuration(Duration::from_millis(200));
        c.origins.push(OriginEntry::http(secondary.url()));
    })
    .await;
    let r = edge.get("/slow").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "secondary /slow");
    assert_eq!((primary.hits(), secondary.hits()), (1, 1));
    gate.close();
}

#[tokio::test]
async fn every_origin_failing_returns_the_last_answer() {
    let primary = TestOrigin::start(|_, _| resp(503, &[], "primary down")).await;
    let secondary = TestOrigin::start(|_, _| resp(500, &[], "secondary broken")).await;
    let edge = TestEdge::start_with(&primary.url(), |c| {
        c.origins.push(OriginEntry::http(secondary.url()));
    })
    .await;
    let r = edge.get("/both-down").await;
    assert_eq!(r.status(), 500);
    assert_eq!((primary.hits(), secondary.hits()), (1, 1));
}

#[tokio::test]
async fn killing_the_primary_mid_load_fails_no_client_request() {
    const REQUESTS: usize = 500;
    const KILL_AFTER: usize = 150;
    let primary = named_origin("primary").await;
    let secondary = named_origin("secondary").await;
    let edge = TestEdge::start_with(&primary.url(), |c| {
        c.origins.push(OriginEntry::http(secondary.url()));
    })
    .await;

    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    let kill = Mutex::new(Some(kill));
    let killer = tokio::spawn(async move {
        let _ = killed.await;
        // Dropping it closes its listener: new connections are refused from here on.
        drop(primary);
    });
    let done = AtomicUsize::new(0);
    let results: Vec<(usize, u16, String)> = futures_util::stream::iter(0..REQUESTS)
        .map(|i| {
            let edge = &edge;
            let done = &done;
            let kill = &kill;
            async move {
                let path = format!("/load/{i}");
                let outcome = match edge.client.get(edge.url(&path)).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        (i, status, r.text().await.unwrap_or_default())
                    }
                    Err(e) => (i, 0, format!("client error: {e}")),
                };
                if done.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER
                    && let Some(k) = kill.lock().unwrap().take()
                {
                    let _ = k.send(());
                }
                outcome
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    killer.await.unwrap();

    let failed: Vec<_> = results
        .iter()
        .filter(|(i, status, body)| {
            *status != 200
                || !(body == &format!("primary /load/{i}")
                    || body == &format!("secondary /load/{i}"))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let from_primary = results
        .iter()
        .filter(|r| r.2.starts_with("primary"))
        .count();
    let from_secondary = REQUESTS - from_primary;
    assert!(from_primary >= KILL_AFTER, "primary served {from_primary}");
    assert!(from_secondary > 0, "the secondary served nothing");
    assert_eq!(secondary.hits(), from_secondary);
}

#[tokio::test]
async fn a_skipped_origin_is_probed_again_after_the_retry_time() {
    const RETRY: Duration = Duration::from_millis(1500);
    let down = Arc::new(AtomicBool::new(true));
    let primary = {
        let down = down.clone();
        TestOrigin::start(move |s, _| {
            if down.load(Ordering::SeqCst) {
                resp(503, &[], "down")
            } else {
                resp(
                    200,
                    &[("cache-control", "no-store")],
                    format!("primary {}", s.uri),
                )
            }
        })
        .await
    };
    let secondary = TestOrigin::start(|s, _| {
        resp(
            200,
            &[("cache-control", "no-store")],
            format!("secondary {}", s.uri),
        )
    })
    .await;
    let edge = TestEdge::start_with(&primary.url(), |c| {
        c.origins[0].retry_after = Some(HumanDuration(RETRY));
        c.origins.push(OriginEntry::http(secondary.url()));
    })
    .await;
    let body = |r: reqwest::Response| async move {
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };

    // Three failures in a row open the breaker.
    for i in 0..3 {
        assert!(
            body(edge.get(&format!("/a/{i}")).await)
                .await
                .starts_with("secondary")
        );
    }
    let opened = Instant::now();
    assert_eq!(primary.hits(), 3);
    // Skipped now, even once it is healthy again.
    down.store(false, Ordering::SeqCst);
    assert!(
        body(edge.get("/a/skipped").await)
            .await
            .starts_with("secondary")
    );
    assert_eq!(primary.hits(), 3, "a skipped origin was asked");

    // After the retry time live traffic probes it, and it takes traffic again.
    let deadline = opened + RETRY + Duration::from_secs(10);
    let mut n = 0;
    loop {
        n += 1;
        let text = body(edge.get(&format!("/probe/{n}")).await).await;
        if text.starts_with("primary") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the primary was never probed again"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        opened.elapsed() >= RETRY - Duration::from_millis(200),
        "probed after {:?}, before the retry time",
        opened.elapsed()
    );
    assert_eq!(primary.hits(), 4, "one probe, which succeeded");
    assert!(body(edge.get("/after").await).await.starts_with("primary"));
}

#[tokio::test]
async fn post_is_not_retried_on_another_origin() {
    let primary = TestOrigin::start(|_, _| resp(503, &[], "primary down")).await;
    let secondary = named_origin("secondary").await;
    let edge = TestEdge::start_with(&primary.url(), |c| {
        c.origins.push(OriginEntry::http(secondary.url()));
    })
    .await;
    let r = edge
        .client
        .post(edge.url("/form"))
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(primary.hits(), 1);
    assert_eq!(secondary.hits(), 0, "a POST went to a second origin");

    let refused = TestEdge::start_with(&closed_port_url().await, |c| {
        c.origins.push(OriginEntry::http(secondary.url()));
    })
    .await;
    let r = refused
        .client
        .post(refused.url("/form"))
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(secondary.hits(), 0, "a POST went to a second origin");
}

#[test]
fn config_names_the_bad_origin() {
    let config: edgecache_edge::EdgeConfig = toml::from_str(
        r#"
        [[origins]]
        url = "http://127.0.0.1:8000"
        [[origins]]
        url = "http://127.0.0.1:8001"
        s3 = { endpoint = "http://127.0.0.1:9000", bucket = "assets", region = "us-east-1" }
        "#,
    )
    .unwrap();
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("edge.origins[1]"), "{err}");
}
