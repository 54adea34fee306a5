//! The `edgecache` binary: an origin and an edge started from the command line, as a user
//! would, and configuration errors that name the bad key.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A child process killed when the test ends, pass or fail.
struct Running {
    child: Child,
    lines: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `edgecache ARGS` and reads its first `n` stdout lines (the bound addresses).
fn start(args: &[&str], n: usize) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgecache"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn edgecache");
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut lines = Vec::new();
    for _ in 0..n {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        lines.push(line.trim().to_owned());
    }
    Running { child, lines }
}

fn url_in(line: &str, prefix: &str) -> String {
    line.strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
        .to_owned()
}

#[tokio::test]
async fn origin_and_edge_from_the_command_line_serve_a_hit() {
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("app.3f9c2a1b.js"), "console.log(1)").unwrap();
    let root = site.path().to_str().unwrap();
    let origin = start(&["origin", "--root", root, "--listen", "127.0.0.1:0"], 1);
    let origin_url = url_in(&origin.lines[0], "listening on ");
    let edge = start(
        &[
            "edge",
            "--origin",
            &origin_url,
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--pop",
            "cli",
        ],
        2,
    );
    let edge_url = url_in(&edge.lines[0], "listening on ");
    let admin_url = url_in(&edge.lines[1], "admin on ");

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let first = client
        .get(format!("{edge_url}/app.3f9c2a1b.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert_eq!(first.text().await.unwrap(), "console.log(1)");
    let second = client
        .get(format!("{edge_url}/app.3f9c2a1b.js"))
        .send()
        .await
        .unwrap();
    let status = second.headers()["cache-status"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(status.starts_with("edgecache-cli; hit; ttl="), "{status}");
    assert_eq!(second.text().await.unwrap(), "console.log(1)");

    let health = client
        .get(format!("{admin_url}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let stats: serde_json::Value = serde_json::from_slice(
        &client
            .get(format!("{admin_url}/stats"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stats["origin_fetches"], 1);
}

#[test]
fn bad_config_exits_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgecache.toml");
    std::fs::write(&path, "[edge]\nmemroy = \"1MiB\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edgecache"))
        .args(["edge", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("memroy"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_edgecache"))
        .args([
            "edge",
            "--origin",
            "ftp://nowhere",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("edge.origins[0].url"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_edgecache"))
        .args([
            "edge",
            "--origin",
            "http://127.0.0.1:1",
            "--memory-size",
            "12XB",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("12XB"));
}
