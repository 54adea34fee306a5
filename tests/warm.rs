//! `edgecache warm`: every listed URL becomes a hit on every chosen PoP with one origin
//! request each, at most `--concurrency` at a time; failures are named and fail the command.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use edgecache::router::{self, RouterConfig};
use support::router::TestRouter;
use support::{TestEdge, header, resp};
use tokio::net::TcpListener;

/// What the origin saw: requests per path, and the most it was answering at once.
#[derive(Default)]
struct Seen {
    per_path: HashMap<String, usize>,
    in_flight: usize,
    max_in_flight: usize,
}

/// An origin whose every known path takes 50 ms to answer, so concurrent requests overlap.
struct SlowOrigin {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl SlowOrigin {
    async fn start(paths: &[&str]) -> SlowOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let known: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        let state = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request| {
            let (seen, known) = (state.clone(), known.clone());
            async move {
                let path = req.uri().to_string();
                {
                    let mut s = seen.lock().unwrap();
                    *s.per_path.entry(path.clone()).or_default() += 1;
                    s.in_flight += 1;
                    s.max_in_flight = s.max_in_flight.max(s.in_flight);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                seen.lock().unwrap().in_flight -= 1;
                if known.contains(&path) {
                    resp(
                        200,
                        &[("cache-control", "max-age=600")],
                        format!("body of {path}"),
                    )
                } else {
                    resp(404, &[("cache-control", "no-store")], "not found")
                }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        SlowOrigin { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests_for(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .per_path
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.seen.lock().unwrap().per_path.values().sum()
    }
}

async fn edge(origin: &SlowOrigin, pop: &str) -> TestEdge {
    let pop = pop.to_owned();
    TestEdge::start_with(&origin.url(), move |c| c.pop = pop).await
}

/// Runs `edgecache warm ARGS` (stdout is a pipe, so no progress bar), within 60 s.
async fn warm(args: &[String]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_edgecache"))
        .arg("warm")
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("warm finishes within 60 s")
        .unwrap()
}

fn list_file(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("urls.txt");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const PATHS: [&str; 6] = [
    "/app.3f9c2a1b.js",
    "/css/site.css?v=2",
    "/img/a.png",
    "/img/b.png",
    "/fonts/x.woff2",
    "/index.html",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmed_urls_are_hits_on_every_pop_with_one_origin_request_each() {
    let origin = SlowOrigin::start(&PATHS).await;
    let (us, eu) = (
        edge(&origin, "us-east").await,
        edge(&origin, "eu-west").await,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut list = String::from("# assets to warm\n\n");
    for p in PATHS {
        list.push_str(&format!("  {p}\n"));
    }
    list.push_str("/index.html\n# repeated above: fetched once per PoP\n");
    let out = warm(&[
        "--list".into(),
        list_file(&dir, &list),
        "--pop".into(),
        format!("us-east={}", us.url("")),
        "--pop".into(),
        format!("eu-west={}/", eu.url("")),
        "--concurrency".into(),
        "3".into(),
    ])
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}\n{}", stdout, text(&out.stderr));
    assert!(
        stdout.starts_with("warmed 12 of 12 (6 URLs × 2 PoPs)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains('\u{1b}'),
        "no progress bar on a pipe: {stdout:?}"
    );
    for p in PATHS {
        assert_eq!(origin.requests_for(p), 2, "{p}: one origin request per PoP");
    }
    assert_eq!(
        origin.seen.lock().unwrap().max_in_flight,
        3,
        "--concurrency 3 keeps three requests in flight, never more"
    );
    for edge in [&us, &eu] {
        for p in PATHS {
            let r = edge.get(p).await;
            assert_eq!(r.status(), 200);
            let status = header(&r, "cache-status").to_owned();
            assert!(status.contains("; hit"), "{p}: {status}");
            assert_eq!(r.text().await.unwrap(), format!("body of {p}"));
        }
    }
    assert_eq!(origin.total(), 12, "the checks were all hits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_name_url_pop_and_reason_and_fail_the_command() {
    let origin = SlowOrigin::start(&["/ok.js"]).await;
    let us = edge(&origin, "us-east").await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = warm(&[
        "--list".into(),
        list_file(&dir, "/ok.js\n/missing.js\n"),
        "--pop".into(),
        format!("us-east={}", us.url("")),
        "--pop".into(),
        format!("down=http://{dead}"),
    ])
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("warmed 1 of 4 "), "{stdout}");
    assert!(stdout.contains("failed (3):"), "{stdout}");
    let line = |path: &str, pop: &str| {
        stdout
            .lines()
            .find(|l| {
                let mut words = l.split_whitespace();
                words.next() == Some(path) && words.next() == Some(pop)
            })
            .unwrap_or_else(|| panic!("no failure line for {path} on {pop}:\n{stdout}"))
            .to_owned()
    };
    assert!(line("/missing.js", "us-east").ends_with("status 404 Not Found"));
    assert!(
        line("/ok.js", "down").contains("Connection refused"),
        "{stdout}"
    );
    assert!(line("/missing.js", "down").contains("Connection refused"));
    assert!(stderr.contains("3 of 4 warm requests failed"), "{stderr}");
    assert_eq!(origin.requests_for("/ok.js"), 1);
    assert!(header(&us.get("/ok.js").await, "cache-status").contains("; hit"));

    // A bad list line fails before any request, naming the file and line.
    let out = warm(&["--list".into(), list_file(&dir, "/ok.js\nok.js\n")]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("urls.txt:2: \"ok.js\""),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        origin.total(),
        2,
        "one request each for /ok.js and /missing.js"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routers_pops_are_chosen_by_name() {
    let origin = SlowOrigin::start(&["/a.js"]).await;
    let (us, eu) = (
        edge(&origin, "us-east").await,
        edge(&origin, "eu-west").await,
    );
    let router = TestRouter::start(RouterConfig::with_pops(vec![
        router::parse_pop_spec(&format!(
            "us-east={}@39.04,-77.49,admin={}",
            us.url(""),
            us.admin_url("")
        ))
        .unwrap(),
        router::parse_pop_spec(&format!(
            "eu-west={}@53.35,-6.26,admin={}",
            eu.url(""),
            eu.admin_url("")
        ))
        .unwrap(),
    ]))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = warm(&[
        "--list".into(),
        list_file(&dir, "/a.js\n"),
        "--router".into(),
        router.base.clone(),
        "--pops".into(),
        "eu-west".into(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("warmed 1 of 1 (1 URL × 1 PoP)"));
    assert!(header(&eu.get("/a.js").await, "cache-status").contains("; hit"));
    assert_eq!(
        us.stats().await["requests_total"],
        0,
        "us-east was left alone"
    );
    assert_eq!(origin.requests_for("/a.js"), 1);

    let out = warm(&[
        "--list".into(),
        list_file(&dir, "/a.js\n"),
        "--router".into(),
        router.base.clone(),
        "--pops".into(),
        "eu-west,mars".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--pops: no PoP named \"mars\" (known: eu-west, us-east)"),
        "{}",
        text(&out.stderr)
    );
    router.stop().await;
}
