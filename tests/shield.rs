//! A shield tier: PoPs naming a parent PoP fetch misses through it, so the origin sees one
//! request however many PoPs want an object; a failed parent falls back to the origin; and
//! loops are refused.

mod support;

use support::{TestEdge, TestOrigin, header, resp};

async fn child(origin: &TestOrigin, parent: &TestEdge, pop: &str) -> TestEdge {
    let (parent, pop) = (parent.url(""), pop.to_owned());
    TestEdge::start_with(&origin.url(), move |cfg| {
        cfg.pop = pop;
        cfg.parent = Some(parent);
    })
    .await
}

#[tokio::test]
async fn three_pops_behind_one_shield_reach_the_origin_once() {
    let origin = TestOrigin::start(|_, n| {
        resp(
            200,
            &[("cache-control", "max-age=600")],
            format!("body {n}"),
        )
    })
    .await;
    let shield = TestEdge::start_with(&origin.url(), |cfg| cfg.pop = "shield".into()).await;
    let mut pops = Vec::new();
    for name in ["us-east", "eu-west", "ap-south"] {
        pops.push(child(&origin, &shield, name).await);
    }
    let mut statuses = Vec::new();
    for pop in &pops {
        let r = pop.get("/cold.js").await;
        assert_eq!(r.status(), 200);
        statuses.push(header(&r, "cache-status").to_owned());
        assert_eq!(r.text().await.unwrap(), "body 0");
    }
    assert_eq!(origin.hits(), 1);
    // One Cache-Status entry per tier, the shield's first (RFC 9211 §2).
    assert!(
        statuses[0].starts_with("edgecache-shield; fwd=uri-miss")
            && statuses[0].contains(", edgecache-us-east; fwd=uri-miss"),
        "{}",
        statuses[0]
    );
    assert!(
        statuses[1].starts_with("edgecache-shield; hit")
            && statuses[1].contains(", edgecache-eu-west; fwd=uri-miss"),
        "{}",
        statuses[1]
    );
    // The origin saw the shield's request, which names every tier it crossed in Via.
    let via = origin.seen()[0].headers["via"].to_str().unwrap().to_owned();
    assert_eq!(via, "1.1 edgecache-us-east, 1.1 edgecache-shield");
}

#[tokio::test]
async fn a_failed_shield_falls_back_to_the_origin() {
    let origin =
        TestOrigin::start(|_, _| resp(200, &[("cache-control", "max-age=600")], "x")).await;
    let shield = TestEdge::start_with(&origin.url(), |cfg| cfg.pop = "shield".into()).await;
    let pop = child(&origin, &shield, "edge").await;
    shield.stop().await;
    let r = pop.get("/a.js").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "x");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn a_request_that_came_round_a_loop_is_refused() {
    let origin =
        TestOrigin::start(|_, _| resp(200, &[("cache-control", "max-age=600")], "x")).await;
    let edge = TestEdge::start_with(&origin.url(), |cfg| cfg.pop = "a".into()).await;
    let r = edge
        .get_with("/x", &[("via", "1.1 edgecache-b, 1.1 edgecache-a")])
        .await;
    assert_eq!(r.status(), 508);
    assert!(header(&r, "cache-status").contains("detail=loop"));
    assert_eq!(origin.hits(), 0);
}

#[test]
fn a_parent_that_is_the_edge_itself_is_refused_at_config_time() {
    let mut config = edgecache_edge::EdgeConfig {
        listen: "127.0.0.1:8080".into(),
        origins: vec![edgecache_edge::config::OriginEntry::http(
            "http://127.0.0.1:8000",
        )],
        ..edgecache_edge::EdgeConfig::default()
    };
    config.parent = Some("http://127.0.0.1:8080".into());
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("edge.parent") && err.contains("loop"), "{err}");
}
