//! docs/grafana-dashboard.json and docs/metrics.md against real scrapes: every series a
//! panel queries is exposed by an edge or the purge API, and every metric is documented.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use edgecache_purge_api::PurgeRequest;
use serde_json::Value;
use support::purge::{PurgeService, follower};
use support::{TestOrigin, client, resp};

const DASHBOARD: &str = include_str!("../docs/grafana-dashboard.json");
const METRICS_DOC: &str = include_str!("../docs/metrics.md");

/// The sample names in a Prometheus / OpenMetrics text exposition.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// The metric families named by `# HELP` lines.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .map(|l| l.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}

/// Every `edgecache_…` name in the panels' queries.
fn queried(dashboard: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![dashboard];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(expr)) = map.get("expr") {
                    let mut rest = expr.as_str();
                    while let Some(at) = rest.find("edgecache_") {
                        let tail = &rest[at..];
                        let end = tail
                            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .unwrap_or(tail.len());
                        names.insert(tail[..end].to_owned());
                        rest = &tail[end..];
                    }
                }
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    names
}

async fn scrape(url: String) -> String {
    let r = client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_queries_metrics_that_exist_and_every_metric_is_documented() {
    let origin = TestOrigin::start(|_, _| resp(200, &[("cache-control", "max-age=60")], "x")).await;
    let dir = tempfile::tempdir().unwrap();
    let purge = PurgeService::start(&dir.path().join("purge")).await;
    let edge = follower(
        &origin,
        &purge.url,
        "us-east",
        Some(&dir.path().join("disk")),
    )
    .await;
    for _ in 0..2 {
        edge.get("/a").await.bytes().await.unwrap();
    }
    let accepted = purge
        .client()
        .purge(&PurgeRequest {
            urls: vec!["/a".into()],
            ..PurgeRequest::default()
        })
        .await
        .unwrap();
    purge
        .client()
        .wait_complete(&accepted.id, Duration::from_secs(10))
        .await
        .unwrap();

    let edge_text = scrape(edge.admin_url("/metrics")).await;
    let api_text = {
        // The purge API lists the PoP once it has registered.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = scrape(format!("{}/metrics", purge.url)).await;
            if text.contains("edgecache_purge_pop_live{pop=\"us-east\"} 1") {
                break text;
            }
            assert!(Instant::now() < deadline, "PoP never live:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert!(
        edge_text.contains("edgecache_requests_total{pop=\"us-east\",cache=\"hit\"} 1")
            || edge_text.contains("edgecache_requests_total{cache=\"hit\",pop=\"us-east\"} 1"),
        "{edge_text}"
    );
    assert!(
        edge_text.contains("edgecache_served_bytes_total{pop=\"us-east\"} 2"),
        "{edge_text}"
    );
    assert!(
        edge_text
            .contains("edgecache_request_duration_seconds_count{pop=\"us-east\",cache=\"miss\"} 1")
            || edge_text.contains(
                "edgecache_request_duration_seconds_count{cache=\"miss\",pop=\"us-east\"} 1"
            ),
        "{edge_text}"
    );

    let mut exposed = sample_names(&edge_text);
    exposed.extend(sample_names(&api_text));
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("valid JSON");
    let queried = queried(&dashboard);
    assert!(queried.len() >= 15, "{queried:?}");
    let missing: Vec<&String> = queried.difference(&exposed).collect();
    assert!(missing.is_empty(), "queried but not exposed: {missing:?}");

    let mut documented_families = families(&edge_text);
    documented_families.extend(families(&api_text));
    for family in &documented_families {
        assert!(
            METRICS_DOC.contains(&format!("`{family}")),
            "docs/metrics.md does not list {family}"
        );
    }
    edge.stop().await;
    purge.stop().await;
}
