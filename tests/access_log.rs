//! The access log: one JSON line per request from `edgecache edge --log-format json`, with
//! what an operator needs to read it (method, path, status, bytes, cache state, tier,
//! origin and total time, client IP, PoP).

mod support;

use std::time::{Duration, Instant};

use support::process::Process;

/// The next `n` access-log records, waiting at most 10 s.
fn access_lines(edge: &mut Process, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = Vec::new();
    while found.len() < n {
        let Some(line) = edge.stderr_line(deadline) else {
            panic!("only {} access lines: {found:?}", found.len());
        };
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) else {
            panic!("a log line that is not JSON: {line}");
        };
        if record["target"] == "edgecache::access" {
            found.push(record["fields"].clone());
        }
    }
    found
}

#[tokio::test]
async fn each_request_gets_one_json_access_line() {
    let site = tempfile::tempdir().unwrap();
    let (_origin, origin_url) = Process::origin(site.path(), "app.3f9c2a1b.js", "console.log(1)");
    let mut edge = Process::spawn(Process::edge_command(
        &["--log-format", "json"],
        &origin_url,
        "logs",
    ));
    let edge_url = edge.line_after("listening on ");

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..2 {
        let resp = client
            .get(format!("{edge_url}/app.3f9c2a1b.js?v=2"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "console.log(1)");
    }
    let missing = client
        .get(format!("{edge_url}/missing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let lines = access_lines(&mut edge, 3);
    let (miss, hit, not_found) = (&lines[0], &lines[1], &lines[2]);
    for line in &lines {
        assert_eq!(line["pop"], "logs", "{line}");
        assert_eq!(line["client"], "127.0.0.1", "{line}");
        assert_eq!(line["method"], "GET", "{line}");
        assert!(line["total_ms"].as_f64().unwrap() >= 0.0, "{line}");
    }
    assert_eq!(miss["path"], "/app.3f9c2a1b.js?v=2");
    assert_eq!(miss["status"], 200);
    assert_eq!(miss["cache"], "miss");
    assert_eq!(miss["tier"], "origin");
    assert!(miss["origin_ms"].as_f64().unwrap() > 0.0, "{miss}");

    assert_eq!(hit["status"], 200);
    assert_eq!(hit["cache"], "hit");
    assert_eq!(hit["tier"], "memory");
    assert_eq!(hit["bytes"], 14);
    assert!(hit.get("origin_ms").is_none(), "{hit}");

    assert_eq!(not_found["path"], "/missing.js");
    assert_eq!(not_found["status"], 404);
}
