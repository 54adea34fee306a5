//! The `edgecache edge` binary with a disk tier: warm restarts, and a body far beyond its memory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgecache_origin::{Origin, OriginConfig};
use tokio::net::TcpListener;

/// A child process killed when the test ends, pass or fail.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An edge binary and the URLs it printed.
struct EdgeProcess {
    process: Running,
    url: String,
    admin: String,
}

/// Starts `edgecache edge` in front of `origin_url` with its disk tier in `disk_dir`.
fn start_edge(origin_url: &str, disk_dir: &Path, extra: &[&str]) -> EdgeProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgecache"))
        .args(["edge", "--origin", origin_url, "--listen", "127.0.0.1:0"])
        .args(["--admin", "127.0.0.1:0", "--pop", "disk"])
        .arg("--disk-dir")
        .arg(disk_dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn edgecache edge");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let process = Running { child };
    let mut next = |prefix: &str| {
        let line = lines.next().expect("edge exited early").unwrap();
        line.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
            .to_owned()
    };
    let url = next("listening on ");
    let admin = next("admin on ");
    EdgeProcess {
        process,
        url,
        admin,
    }
}

/// Serves `site` with the static origin in this process, so its requests can be counted.
async fn start_origin(site: &Path) -> (Origin, String) {
    let origin = Origin::new(OriginConfig::new(site)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = origin.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (origin, url)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn stats(client: &reqwest::Client, admin: &str) -> serde_json::Value {
    let r = client.get(format!("{admin}/stats")).send().await.unwrap();
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// Polls `/stats` until the disk tier has committed `entries` entries (at most 10 s).
async fn wait_for_disk_entries(client: &reqwest::Client, admin: &str, entries: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = stats(client, admin).await;
        if s["disk"]["entries"] == entries {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never saw {entries} disk entries: {s}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most 10 s) for `running` to exit and returns how it exited.
fn wait_exit(running: &mut Running) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "edge did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends SIGTERM and waits for a clean exit.
fn stop_with_sigterm(mut running: Running) {
    let pid = running.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success(), "kill -TERM {pid} failed");
    let status = wait_exit(&mut running);
    assert!(status.success(), "edge exited with {status} after SIGTERM");
}

/// `n` bytes that differ from one offset to the next.
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

/// The `Host` of every request: it is part of the cache key, and each edge process listens
/// on a port of its own, so a restarted edge shares keys only through a fixed `Host`.
const HOST: &str = "cdn.test";

/// A response's status, `Cache-Status`, `Age` and body.
async fn get(client: &reqwest::Client, url: &str) -> (u16, String, u64, Vec<u8>) {
    let r = client.get(url).header("host", HOST).send().await.unwrap();
    assert_eq!(header(&r, "cache-control"), "public, max-age=3600");
    let status = header(&r, "cache-status").to_owned();
    let age = header(&r, "age").parse().unwrap();
    (
        r.status().as_u16(),
        status,
        age,
        r.bytes().await.unwrap().to_vec(),
    )
}

/// How the first edge goes away.
enum Stop {
    Sigterm,
    Sigkill,
}

/// Fills an edge's disk tier with `/a.bin`, stops it as `stop` says, and checks that a new
/// edge on the same directory answers from disk without asking the origin.
async fn restart_is_warm(stop: Stop) {
    let site = tempfile::tempdir().unwrap();
    let disk = tempfile::tempdir().unwrap();
    let body = pattern(100 * 1024);
    std::fs::write(site.path().join("a.bin"), &body).unwrap();
    let (origin, origin_url) = start_origin(site.path()).await;
    let client = client();

    let first = start_edge(&origin_url, disk.path(), &[]);
    let url = format!("{}/a.bin", first.url);
    let (code, status, first_age, got) = get(&client, &url).await;
    assert_eq!(code, 200);
    assert_eq!(
        status,
        "edgecache-disk; fwd=uri-miss; fwd-status=200; stored"
    );
    assert!(got == body, "miss body differs");
    // The disk copy is written behind the response: wait until the tier has committed it.
    wait_for_disk_entries(&client, &first.admin, 1).await;
    let age_before = match stop {
        Stop::Sigterm => {
            let (code, status, age, got) = get(&client, &url).await;
            assert_eq!(code, 200);
            assert!(status.ends_with("; detail=memory"), "{status}");
            assert!(got == body, "memory hit body differs");
            stop_with_sigterm(first.process);
            age
        }
        Stop::Sigkill => {
            let mut process = first.process;
            process.child.kill().unwrap();
            wait_exit(&mut process);
            first_age
        }
    };
    assert_eq!(origin.requests(), 1);

    let second = start_edge(&origin_url, disk.path(), &[]);
    let (code, status, age, got) = get(&client, &format!("{}/a.bin", second.url)).await;
    assert_eq!(code, 200);
    assert!(
        status.starts_with("edgecache-disk; hit; ttl=") && status.ends_with("; detail=disk"),
        "{status}"
    );
    assert!(age >= age_before, "age went from {age_before} to {age}");
    assert!(got == body, "disk hit body differs");
    assert_eq!(origin.requests(), 1);
    let s = stats(&client, &second.admin).await;
    assert_eq!(s["origin_fetches"], 0, "{s}");
    assert_eq!(s["disk"]["corrupt_dropped"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_warm_after_clean_stop() {
    restart_is_warm(Stop::Sigterm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_warm_after_kill_9() {
    restart_is_warm(Stop::Sigkill).await;
}

/// Peak resident memory of process `pid`, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/<pid>/status");
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_object_streams_with_flat_memory() {
    const SIZE: u64 = 2 << 30;
    let site = tempfile::tempdir().unwrap();
    let disk = tempfile::tempdir().unwrap();
    std::fs::File::create(site.path().join("huge.bin"))
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let (origin, origin_url) = start_origin(site.path()).await;
    let edge = start_edge(
        &origin_url,
        disk.path(),
        &["--disk-size", "4GiB", "--memory-size", "64MiB"],
    );
    let client = client();

    let started = Instant::now();
    let mut r = client
        .get(format!("{}/huge.bin", edge.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), SIZE.to_string());
    assert_eq!(
        header(&r, "cache-status"),
        "edgecache-disk; fwd=uri-miss; fwd-status=200; stored"
    );
    let mut received = 0u64;
    while let Some(chunk) = r.chunk().await.unwrap() {
        assert!(
            chunk.iter().all(|&b| b == 0),
            "non-zero byte near offset {received}"
        );
        received += chunk.len() as u64;
    }
    assert_eq!(received, SIZE);
    assert_eq!(origin.requests(), 1);

    let peak = peak_rss(edge.process.child.id());
    eprintln!(
        "2 GiB through the edge in {:?}; edge peak RSS {} MiB",
        started.elapsed(),
        peak >> 20
    );
    assert!(peak < 200 << 20, "edge peak RSS {} MiB", peak >> 20);
}
