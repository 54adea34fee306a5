//! The router's live dashboard over a real topology: an origin, two edges following a purge
//! API, a PoP that is down, and the router reading them all. The JSON's figures match the
//! traffic sent; the page renders them in headless Chromium (skipped when it is missing).
//!
//! With `EDGECACHE_SCREENSHOT=docs/dashboard.png` the screenshot is kept there.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use edgecache::router::{self, PopConfig, RouterConfig};
use edgecache_edge::config::HumanDuration;
use edgecache_purge_api::PurgeRequest;
use serde_json::Value;
use support::purge::{PurgeService, TOKEN, follower};
use support::router::TestRouter;
use support::{TestEdge, TestOrigin, client, header, resp};
use tokio::task::JoinHandle;

/// Body sizes: every response for a path is this many bytes, so bytes/s = requests/s × size.
const A_SIZE: usize = 1000;
const B_SIZE: usize = 500;

/// Reads `/v1/dashboard`.
async fn dashboard(router: &TestRouter) -> Value {
    let r = client()
        .get(format!("{}/v1/dashboard", router.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), "no-store");
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// Polls `/v1/dashboard` until `ready` holds for it, failing after 10 s.
async fn dashboard_when(router: &TestRouter, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = dashboard(router).await;
        if ready(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {d:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pop<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["pops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no PoP {name} in {d:#}"))
}

/// A loopback address nothing listens on.
fn dead_url() -> String {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    format!("http://{addr}")
}

/// `<td data-field="FIELD">…</td>` text in the row of `pop`, tags stripped.
fn cell(dom: &str, pop: &str, field: &str) -> String {
    let row_start = dom
        .find(&format!(r#"data-pop="{pop}""#))
        .unwrap_or_else(|| panic!("no row for {pop} in the DOM:\n{dom}"));
    let row = &dom[row_start..];
    let row = &row[..row.find("</tr>").unwrap()];
    let at = row
        .find(&format!(r#"data-field="{field}""#))
        .unwrap_or_else(|| panic!("no {field} cell for {pop}: {row}"));
    let cell = &row[at..];
    let cell = &cell[cell.find('>').unwrap() + 1..cell.find("</td>").unwrap()];
    let mut text = String::new();
    let mut in_tag = false;
    for c in cell.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text
}

/// GETs `path` from `edge` until `running` turns false, checking each is a hit; the count.
fn steady_hits(edge: &TestEdge, path: &str, running: Arc<AtomicBool>) -> JoinHandle<u64> {
    let (url, client) = (edge.url(path), edge.client.clone());
    tokio::spawn(async move {
        let mut sent = 0u64;
        while running.load(Ordering::Relaxed) {
            let r = client.get(&url).send().await.unwrap();
            assert!(header(&r, "cache-status").contains("; hit"));
            r.bytes().await.unwrap();
            sent += 1;
            // A steady rate, not a busy loop competing with the router and the browser.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        sent
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_each_pops_traffic_health_and_purge_progress() {
    let origin = TestOrigin::start(|seen, _| {
        let size = if seen.uri.starts_with("/b") {
            B_SIZE
        } else {
            A_SIZE
        };
        resp(200, &[("cache-control", "max-age=600")], "x".repeat(size))
    })
    .await;
    let data = tempfile::tempdir().unwrap();
    let purge = PurgeService::start(data.path()).await;
    let us = follower(&origin, &purge.url, "us-east", None).await;
    let eu = follower(&origin, &purge.url, "eu-west", None).await;
    let dead = dead_url();

    let mut config = RouterConfig::with_pops(vec![
        PopConfig {
            name: "us-east".into(),
            url: us.url(""),
            lat: 39.04,
            lon: -77.49,
            admin_url: Some(us.admin_url("")),
        },
        PopConfig {
            name: "eu-west".into(),
            url: eu.url(""),
            lat: 53.35,
            lon: -6.26,
            admin_url: Some(eu.admin_url("")),
        },
        router::parse_pop_spec(&format!("ap-south={dead}@19.08,72.88,admin={dead}")).unwrap(),
    ]);
    config.health.interval = HumanDuration(Duration::from_millis(50));
    config.health.timeout = HumanDuration(Duration::from_millis(500));
    config.dashboard.interval = HumanDuration(Duration::from_millis(100));
    config.dashboard.purge_api = Some(purge.url.clone());
    config.dashboard.purge_token = Some(TOKEN.into());
    let router = TestRouter::start(config).await;

    // us-east: one miss and two hits of /a; eu-west: one miss and one hit of /b.
    for (edge, path, n) in [(&us, "/a", 3), (&eu, "/b", 2)] {
        for _ in 0..n {
            let r = edge.get(path).await;
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    }
    let accepted = purge
        .client()
        .purge(&PurgeRequest {
            urls: vec!["/not-cached".into()],
            ..PurgeRequest::default()
        })
        .await
        .unwrap();
    purge
        .client()
        .wait_complete(&accepted.id, Duration::from_secs(10))
        .await
        .unwrap();

    let d = dashboard_when(&router, "figures of both PoPs and the purge", |d| {
        ["us-east", "eu-west"].iter().all(|name| {
            let p = pop(d, name);
            p["status"] == "up" && p["purge"]["last_applied_seq"] == accepted.seq
        }) && pop(d, "us-east")["stats"]["requests_total"] == 3
            && pop(d, "eu-west")["stats"]["requests_total"] == 2
            && pop(d, "ap-south")["status"] == "down"
            && d["purge_api"]["last_seq"] == accepted.seq
    })
    .await;
    let (us_row, eu_row, ap_row) = (pop(&d, "us-east"), pop(&d, "eu-west"), pop(&d, "ap-south"));
    assert_eq!(us_row["stats"]["served_from_cache"], 2, "{d:#}");
    assert_eq!(us_row["stats"]["origin_fetches"], 1, "{d:#}");
    assert_eq!(us_row["stats"]["served_bytes"], 3 * A_SIZE, "{d:#}");
    assert!((us_row["stats"]["hit_ratio"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(eu_row["stats"]["served_from_cache"], 1, "{d:#}");
    assert_eq!(eu_row["stats"]["served_bytes"], 2 * B_SIZE, "{d:#}");
    assert_eq!(eu_row["stats"]["hit_ratio"], 0.5, "{d:#}");
    assert_eq!(
        (us_row["lat"].as_f64(), us_row["lon"].as_f64()),
        (Some(39.04), Some(-77.49))
    );
    assert_eq!(us_row["purge"]["behind"], 0, "{d:#}");
    assert_eq!(us_row["purge"]["live"], true, "{d:#}");
    assert_eq!(origin.hits(), 2, "one origin fetch per path");
    // The dead PoP: down, no figures, the reason shown, not registered with the purge API.
    assert_eq!(ap_row["healthy"], false);
    assert!(ap_row["stats"].is_null(), "{ap_row:#}");
    assert!(ap_row["rates"].is_null(), "{ap_row:#}");
    assert!(ap_row["purge"].is_null(), "{ap_row:#}");
    let why = ap_row["stats_error"].as_str().unwrap();
    assert!(why.contains("connect"), "{why}");
    assert_eq!(d["purge_api"]["reachable"], true, "{d:#}");

    // Steady traffic on us-east: its rates turn positive, and every response is A_SIZE bytes.
    let running = Arc::new(AtomicBool::new(true));
    let load = steady_hits(&us, "/a", running.clone());
    let d = dashboard_when(&router, "a positive request rate on us-east only", |d| {
        pop(d, "us-east")["rates"]["requests_per_second"]
                .as_f64()
                .is_some_and(|r| r > 10.0)
                // eu-west's requests leave its rate window: no traffic, no rate.
                && pop(d, "eu-west")["rates"]["requests_per_second"] == 0.0
    })
    .await;
    let rates = &pop(&d, "us-east")["rates"];
    let (rps, bps) = (
        rates["requests_per_second"].as_f64().unwrap(),
        rates["bytes_per_second"].as_f64().unwrap(),
    );
    assert!(
        (bps - rps * A_SIZE as f64).abs() < 1e-6 * bps,
        "bytes/s {bps} = requests/s {rps} × {A_SIZE}"
    );
    assert_eq!(pop(&d, "eu-west")["rates"]["bytes_per_second"], 0.0);
    assert_eq!(origin.hits(), 2, "the load was all hits");

    let page = client()
        .get(format!("{}/dashboard", router.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(header(&page, "content-type").starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(html.contains("/v1/dashboard"));
    for external in ["<link", " src=", "@import", "url("] {
        assert!(!html.contains(external), "no external assets: {external}");
    }

    if support::browser::available("the dashboard page") {
        let url = format!("{}/dashboard", router.base);
        let dom = {
            let url = url.clone();
            tokio::task::spawn_blocking(move || support::browser::dump_dom(&url, 3_000))
                .await
                .unwrap()
        };
        assert_eq!(cell(&dom, "eu-west", "status"), "up");
        assert_eq!(cell(&dom, "eu-west", "requests_total"), "2");
        assert_eq!(cell(&dom, "eu-west", "hit_ratio"), "50.0%");
        assert_eq!(cell(&dom, "eu-west", "origin_fetches"), "1");
        assert_eq!(cell(&dom, "eu-west", "purge_seq"), accepted.seq.to_string());
        assert_eq!(cell(&dom, "eu-west", "location"), "53.35°N, 6.26°W");
        assert!(cell(&dom, "ap-south", "status").starts_with("down"));
        assert_eq!(cell(&dom, "ap-south", "requests_total"), "–");
        let us_rps: f64 = cell(&dom, "us-east", "requests_per_second")
            .replace(',', "")
            .parse()
            .unwrap_or_else(|e| panic!("us-east requests/s: {e}:\n{dom}"));
        assert!(us_rps > 0.0, "{us_rps}");
        assert!(cell(&dom, "us-east", "bytes_per_second").ends_with("/s"));

        // Some traffic on eu-west too, for the picture.
        let eu_load = steady_hits(&eu, "/b", running.clone());
        dashboard_when(&router, "traffic on eu-west", |d| {
            pop(d, "eu-west")["rates"]["requests_per_second"]
                .as_f64()
                .is_some_and(|r| r > 1.0)
        })
        .await;
        let file = match std::env::var_os("EDGECACHE_SCREENSHOT") {
            Some(path) => PathBuf::from(path),
            None => data.path().join("dashboard.png"),
        };
        let shot = file.clone();
        tokio::task::spawn_blocking(move || {
            support::browser::screenshot(&url, &shot, 1280, 800, 5_000)
        })
        .await
        .unwrap();
        eprintln!("dashboard screenshot: {}", file.display());
        running.store(false, Ordering::Relaxed);
        assert!(eu_load.await.unwrap() > 0);
    }

    running.store(false, Ordering::Relaxed);
    assert!(load.await.unwrap() > 0);
    router.stop().await;
    us.stop().await;
    eu.stop().await;
    purge.stop().await;
}

#[tokio::test]
async fn a_disabled_dashboard_leaves_its_paths_to_the_redirector() {
    let target = dead_url();
    let mut config = RouterConfig::with_pops(vec![
        router::parse_pop_spec(&format!("only={target}@0,0")).unwrap(),
    ]);
    config.dashboard.enabled = false;
    let router = TestRouter::start(config).await;
    let r = client()
        .get(format!("{}/dashboard", router.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(header(&r, "location"), format!("{target}/dashboard"));
    router.stop().await;
}
