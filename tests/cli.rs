//! The `edgecache` binary: an origin and an edge started from the command line, as a user
//! would, and configuration errors that name the bad key.

mod support;

use std::process::{Command, Stdio};

use support::process::Process;

#[tokio::test]
async fn origin_and_edge_from_the_command_line_serve_a_hit() {
    let site = tempfile::tempdir().unwrap();
    let (_origin, origin_url) = Process::origin(site.path(), "app.3f9c2a1b.js", "console.log(1)");
    let mut edge = Process::spawn(Process::edge_command(&[], &origin_url, "cli"));
    let edge_url = edge.line_after("listening on ");
    let admin_url = edge.line_after("admin on ");

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

/// A server started by a supervisor that stops reading its stdout (a closed pipe) keeps
/// serving: its address lines go to the log instead of ending the process.
#[tokio::test]
async fn an_edge_whose_stdout_is_closed_keeps_serving() {
    let site = tempfile::tempdir().unwrap();
    let (_origin, origin_url) = Process::origin(site.path(), "a.css", "body{}");

    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let command = Process::edge_command(&["--log-format", "json"], &origin_url, "closed");
    let mut edge = Process::spawn_with_stdout(command, Stdio::from(writer));
    let announced = |line: String| -> String {
        let record: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(record["level"], "WARN", "{line}");
        record["fields"]["line"].as_str().unwrap().to_owned()
    };
    let listening = announced(edge.stderr_containing("stdout is closed"));
    let url = listening
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{listening:?}"))
        .to_owned();
    let admin = announced(edge.stderr_containing("stdout is closed"));
    assert!(admin.starts_with("admin on http://127.0.0.1:"), "{admin}");

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for _ in 0..2 {
        let r = client.get(format!("{url}/a.css")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "body{}");
    }
}

/// The soft and hard limits on open files of process `pid`, from `/proc/PID/limits`.
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-files line in {limits}"));
    let mut fields = line["Max open files".len()..].split_whitespace();
    (
        fields.next().unwrap().to_owned(),
        fields.next().unwrap().to_owned(),
    )
}

/// Started with a low soft limit on open files, the binary raises it to the hard limit:
/// connections and open body files each take a descriptor.
#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_one() {
    let hard = Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .unwrap();
    let hard = String::from_utf8(hard.stdout).unwrap().trim().to_owned();
    if hard.parse::<u64>().is_ok_and(|h| h <= 256) {
        eprintln!("skipping: the hard limit on open files ({hard}) is not above 256");
        return;
    }
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("a.txt"), "a").unwrap();
    let mut command = Command::new("sh");
    // `exec` keeps the pid: the process inspected is edgecache itself.
    command
        .args(["-c", "ulimit -Sn 256 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_edgecache"))
        .args(["origin", "--root", site.path().to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("RUST_LOG");
    let mut origin = Process::spawn(command);
    origin.line_after("listening on ");
    let (soft, hard_now) = open_file_limits(origin.pid());
    assert_eq!(hard_now, hard, "the hard limit changed");
    if hard == "unlimited" {
        // The kernel refuses an unlimited soft limit on descriptors; it must at least stay.
        assert_eq!(soft, "256");
    } else {
        assert_eq!(soft, hard, "the soft limit was not raised");
    }
}
