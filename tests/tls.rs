//! HTTPS: an edge serving HTTP/2 and HTTP/1.1 over TLS, certificates re-read when their
//! files change, HTTPS origins verified against a configured CA, and the purge API over TLS.

mod support;

use std::time::{Duration, Instant};

use edgecache_edge::EdgeConfig;
use edgecache_edge::config::OriginEntry;
use support::tls::{HttpsOrigin, TestCa};
use support::{TestEdge, TestOrigin, header, resp};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// An edge serving HTTPS with `config.tls` set; stops when the sender is dropped.
async fn https_edge(config: EdgeConfig) -> (std::net::SocketAddr, oneshot::Sender<()>) {
    let (addr, _, stop) = https_edge_with_admin(config).await;
    (addr, stop)
}

/// [`https_edge`], with the address of its (plain HTTP) admin listener.
async fn https_edge_with_admin(
    mut config: EdgeConfig,
) -> (
    std::net::SocketAddr,
    std::net::SocketAddr,
    oneshot::Sender<()>,
) {
    config.listen = "127.0.0.1:0".into();
    config.admin = "127.0.0.1:0".into();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        edgecache_edge::run(listener, Some(admin), config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, admin_addr, stop)
}

/// Large disk-tier hits over TLS are encrypted copies: only plain HTTP/1 connections send
/// bodies straight from their files.
#[tokio::test]
async fn large_disk_tier_hits_over_tls_are_sent_whole() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "edge");
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let b = body.clone();
    let origin =
        TestOrigin::start(move |_, _| resp(200, &[("cache-control", "max-age=60")], b.clone()))
            .await;
    let config = EdgeConfig {
        pop: "tls".into(),
        origins: vec![OriginEntry::http(origin.url())],
        tls: Some(ca.issue(dir.path(), "edge")),
        disk: edgecache_edge::config::DiskConfig {
            dir: Some(dir.path().join("disk")),
            ..Default::default()
        },
        ..EdgeConfig::default()
    };
    let (addr, admin, _stop) = https_edge_with_admin(config).await;
    let url = format!("https://{addr}/big.3f9c2a1b.bin");
    let stats = || async {
        let r = support::client()
            .get(format!("http://{admin}/stats"))
            .send()
            .await
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&r.bytes().await.unwrap()).unwrap()
    };
    let client = ca.client(true);
    let r = client.get(&url).send().await.unwrap();
    assert!(r.bytes().await.unwrap() == body, "miss body differs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats().await["disk"]["entries"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the body never reached the disk tier"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..3 {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.version(), http::Version::HTTP_11);
        assert!(
            header(&r, "cache-status").contains("hit"),
            "{:?}",
            r.headers()
        );
        assert!(r.bytes().await.unwrap() == body, "hit body differs");
    }
    assert_eq!(stats().await["disk"]["sent_bytes"], 0);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn https_edge_negotiates_http2_and_still_speaks_http1() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "edge");
    let origin =
        TestOrigin::start(|_, _| resp(200, &[("cache-control", "max-age=60")], "over tls")).await;
    let config = EdgeConfig {
        pop: "tls".into(),
        origins: vec![OriginEntry::http(origin.url())],
        tls: Some(ca.issue(dir.path(), "edge")),
        ..EdgeConfig::default()
    };
    let (addr, _stop) = https_edge(config).await;
    let url = format!("https://{addr}/app.3f9c2a1b.js");

    let r = ca.client(false).get(&url).send().await.unwrap();
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, "cache-status").contains("fwd=uri-miss"),
        "{:?}",
        r.headers()
    );
    assert_eq!(r.text().await.unwrap(), "over tls");

    let r = ca.client(true).get(&url).send().await.unwrap();
    assert_eq!(r.version(), http::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, "cache-status").contains("hit"),
        "{:?}",
        r.headers()
    );
    assert_eq!(r.text().await.unwrap(), "over tls");
    assert_eq!(origin.hits(), 1);
    // The origin learns that the client came in over HTTPS.
    let seen = origin.seen();
    assert_eq!(
        seen[0]
            .headers
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap()),
        Some("https"),
        "{:?}",
        seen[0].headers
    );

    // Plain HTTP on the TLS port is not served.
    let plain = support::client()
        .get(format!("http://{addr}/"))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP answered on the TLS port: {plain:?}"
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new(dir.path(), "old");
    let new_ca = TestCa::new(dir.path(), "new");
    let origin = TestOrigin::start(|_, _| resp(200, &[], "x")).await;
    let tls = old_ca.issue(dir.path(), "edge");
    let config = EdgeConfig {
        origins: vec![OriginEntry::http(origin.url())],
        tls: Some(tls.clone()),
        ..EdgeConfig::default()
    };
    let (addr, _stop) = https_edge(config).await;
    let url = format!("https://{addr}/");
    assert_eq!(
        old_ca
            .client(false)
            .get(&url)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(new_ca.client(false).get(&url).send().await.is_err());

    // Renew: same paths, a certificate from another CA.
    new_ca.issue(dir.path(), "edge");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A new client each time: a new connection, a new handshake.
        if let Ok(r) = new_ca.client(false).get(&url).send().await {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::task::yield_now().await;
    }
    assert!(old_ca.client(false).get(&url).send().await.is_err());
}

#[tokio::test]
async fn https_origin_verified_against_a_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = TestCa::new(dir.path(), "origin");
    let origin = HttpsOrigin::start(&origin_ca.issue(dir.path(), "origin"), "secure origin").await;
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.origins[0].ca = Some(origin_ca.ca_file.clone());
    })
    .await;
    let r = edge.get("/a").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "secure origin");
    assert_eq!(edge.get("/a").await.status(), 200);
    assert_eq!(origin.hits(), 1);
    edge.stop().await;
}

#[tokio::test]
async fn untrusted_https_origin_is_a_502_naming_tls() {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = TestCa::new(dir.path(), "origin");
    let other_ca = TestCa::new(dir.path(), "other");
    let origin = HttpsOrigin::start(&origin_ca.issue(dir.path(), "origin"), "secret").await;
    for ca in [Some(other_ca.ca_file.clone()), None] {
        let edge = TestEdge::start_with(&origin.url(), |c| c.origins[0].ca = ca).await;
        let r = edge.get("/a").await;
        assert_eq!(r.status(), 502);
        let status = header(&r, "cache-status").to_owned();
        assert!(status.contains("detail=origin-tls-failed"), "{status}");
        assert!(!r.text().await.unwrap().contains("secret"));
        edge.stop().await;
    }
    assert_eq!(origin.hits(), 0, "no request may reach an untrusted origin");
}

#[tokio::test]
async fn purge_api_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "purge");
    let mut config = edgecache_purge_api::PurgeApiConfig::new("t0ken", dir.path().join("data"));
    config.listen = "127.0.0.1:0".into();
    config.tls = Some(ca.issue(dir.path(), "purge"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(edgecache_purge_api::run(listener, config, async {
        let _ = stopped.await;
    }));
    let r = ca
        .client(false)
        .get(format!("https://{addr}/v1/pops"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
