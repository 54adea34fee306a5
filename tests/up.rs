//! `edgecache up`: the whole CDN as child processes on the SPEC's fixed local topology —
//! it starts, routes a European client to eu-west, survives a killed PoP, and leaves no
//! child behind when stopped. (The one test that uses fixed ports: they are the contract.)

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `edgecache up`, killed (with its children) if the test fails before stopping it.
struct Up {
    child: Child,
    data: tempfile::TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        for pid in children_of(self.data.path().to_str().unwrap()) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// PIDs of processes whose command line mentions `marker` (our data dir), but `up` itself.
fn children_of(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(marker) && !cmd.contains(" up ") {
            pids.push(pid);
        }
    }
    pids
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

fn pid_of_pop(marker: &str, pop: &str) -> Option<u32> {
    children_of(marker).into_iter().find(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(&format!("--pop {pop} "))
            })
            .unwrap_or(false)
    })
}

async fn eventually<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn first_pop(client: &reqwest::Client, ip: &str) -> Option<String> {
    let r = client
        .get(format!("http://127.0.0.1:8053/v1/route?ip={ip}"))
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
    v["pops"]
        .as_array()?
        .iter()
        .find(|p| p["healthy"] == true)
        .and_then(|p| p["name"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn up_routes_survives_a_killed_pop_and_stops_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_edgecache"))
        .args(["up", "--data-dir", data.path().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let up = Up { child, data };
    let marker = up.data.path().to_str().unwrap().to_owned();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();

    // A client in 127.2.0.0/16 (Europe) is routed to eu-west once everything is up.
    let pop = eventually(
        "the router to answer",
        Duration::from_secs(30),
        async || {
            first_pop(&client, "127.2.0.9")
                .await
                .filter(|p| p == "eu-west")
        },
    )
    .await;
    assert_eq!(pop, "eu-west");
    let page = eventually("eu-west to serve", Duration::from_secs(10), async || {
        let r = client
            .get("http://127.0.2.1:8080/index.html")
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(r)
    })
    .await;
    assert!(
        page.headers()["cache-status"]
            .to_str()
            .unwrap()
            .starts_with("edgecache-eu-west")
    );
    assert!(page.text().await.unwrap().contains("edgecache demo site"));

    // A hung eu-west (SIGSTOP: alive, answering nothing) leaves the router's answers
    // within 2 s (plus slack for a loaded machine) and returns once it answers again.
    let pid = pid_of_pop(&marker, "eu-west").expect("eu-west child");
    signal(pid, "-STOP");
    let hung = Instant::now();
    let moved = eventually(
        "eu-west to leave the answers",
        Duration::from_secs(5),
        async || {
            first_pop(&client, "127.2.0.9")
                .await
                .filter(|p| p != "eu-west")
        },
    )
    .await;
    assert_ne!(moved, "eu-west");
    assert!(
        hung.elapsed() < Duration::from_secs(4),
        "took {:?}",
        hung.elapsed()
    );
    signal(pid, "-CONT");
    eventually(
        "eu-west to come back",
        Duration::from_secs(10),
        async || {
            first_pop(&client, "127.2.0.9")
                .await
                .filter(|p| p == "eu-west")
        },
    )
    .await;

    // A killed eu-west is restarted by `up`, and serves again.
    signal(pid, "-KILL");
    let restarted = eventually(
        "eu-west to be restarted",
        Duration::from_secs(10),
        async || pid_of_pop(&marker, "eu-west").filter(|p| *p != pid),
    )
    .await;
    assert_ne!(restarted, pid);
    eventually(
        "the restarted eu-west to serve",
        Duration::from_secs(10),
        async || {
            let r = client
                .get("http://127.0.2.1:8080/index.html")
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;

    // SIGTERM stops everything; no child outlives `up`.
    let mut up = up;
    Command::new("kill")
        .arg("-TERM")
        .arg(up.child.id().to_string())
        .status()
        .unwrap();
    let status = eventually("up to exit", Duration::from_secs(15), async || {
        up.child.try_wait().unwrap()
    })
    .await;
    assert!(status.success(), "{status}");
    assert!(
        children_of(&marker).is_empty(),
        "children left: {:?}",
        children_of(&marker)
    );
}
