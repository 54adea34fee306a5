//! Live reload of an edge: `POST /reload` moves traffic to a new origin while requests keep
//! flowing (none fails, the cache stays), and an invalid config is refused, naming the key,
//! with the old one still serving. SIGHUP does the same for `edgecache edge`.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgecache::config::FileConfig;
use edgecache_edge::{ConfigSource, RunOptions};
use support::process::Process;
use support::{TestOrigin, header, resp};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

fn write_config(path: &Path, origin: &str, extra: &str) {
    let text = format!(
        "[edge]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\npop = \"reload\"\n\
         {extra}\n[[edge.origins]]\nurl = \"{origin}\"\n"
    );
    support::tls::write_atomically(path, text.as_bytes());
}

/// The config source `edgecache edge --config FILE` uses, minus the flags.
fn source(path: PathBuf) -> ConfigSource {
    Arc::new(move || {
        let file = FileConfig::load(&path).map_err(|e| e.keyed_message())?;
        let edge = file.edge.unwrap_or_default();
        edge.validate().map_err(|e| e.to_string())?;
        Ok(edge)
    })
}

struct Edge {
    addr: SocketAddr,
    admin: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start(path: &Path) -> Edge {
    let config = FileConfig::load(path).unwrap().edge.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admin_addr) = (listener.local_addr().unwrap(), admin.local_addr().unwrap());
    let options = RunOptions {
        config_source: Some(source(path.to_owned())),
        reload_on_sighup: false,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        edgecache_edge::run_with(listener, Some(admin), config, options, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Edge {
        addr,
        admin: admin_addr,
        _stop: stop,
    }
}

async fn reload(client: &reqwest::Client, edge: &Edge) -> (u16, serde_json::Value) {
    let r = client
        .post(format!("http://{}/reload", edge.admin))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn reload_moves_traffic_to_a_new_origin_with_no_failed_request() {
    let a = TestOrigin::start(|s, _| {
        let cc = if s.uri == "/kept" {
            "max-age=600"
        } else {
            "no-store"
        };
        resp(200, &[("cache-control", cc)], "A")
    })
    .await;
    let b = TestOrigin::start(|_, _| resp(200, &[("cache-control", "no-store")], "B")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgecache.toml");
    write_config(&path, &a.url(), "");
    let edge = start(&path).await;
    let client = support::client();
    let kept = client
        .get(format!("http://{}/kept", edge.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(kept.text().await.unwrap(), "A");

    // Load: 8 workers, each one request after another, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        let client = client.clone();
        let url = format!("http://{}/load/{w}", edge.addr);
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => match r.text().await.as_deref() {
                        Ok("A" | "B") => {}
                        _ => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    },
                    _ => {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let wait_for = |n: usize| {
        let done = done.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while done.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "the load stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(150).await;
    write_config(&path, &b.url(), "");
    let (status, report) = reload(&client, &edge).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["restart_required"], serde_json::json!([]));
    let after_reload = done.load(Ordering::SeqCst);
    wait_for(after_reload + 150).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during the reload"
    );
    assert!(b.hits() >= 100, "origin B got {} requests", b.hits());
    let a_hits = a.hits();
    let r = client
        .get(format!("http://{}/load/x", edge.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "B");
    assert_eq!(a.hits(), a_hits, "origin A still gets requests");

    // The cache survived the reload.
    let kept = client
        .get(format!("http://{}/kept", edge.addr))
        .send()
        .await
        .unwrap();
    assert!(
        header(&kept, "cache-status").contains("hit"),
        "{:?}",
        kept.headers()
    );
    assert_eq!(kept.text().await.unwrap(), "A");
}

#[tokio::test]
async fn an_invalid_config_is_refused_and_the_old_one_keeps_serving() {
    let a = TestOrigin::start(|_, _| resp(200, &[("cache-control", "no-store")], "A")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgecache.toml");
    write_config(&path, &a.url(), "");
    let edge = start(&path).await;
    let client = support::client();

    for (origin, extra, key) in [
        ("ftp://127.0.0.1:1", "", "edge.origins[0].url"),
        ("http://127.0.0.1:1", "colour = \"blue\"", "edge.colour"),
        (
            "http://127.0.0.1:1",
            "[edge.memory]\nsize = \"much\"",
            "edge.memory.size",
        ),
    ] {
        write_config(&path, origin, extra);
        let (status, body) = reload(&client, &edge).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["key"], key, "{body}");
        assert!(body["error"].as_str().unwrap().starts_with(key), "{body}");
        let r = client
            .get(format!("http://{}/x", edge.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "A");
    }
    assert_eq!(a.hits(), 3);
}

#[tokio::test]
async fn a_listener_change_is_reported_as_needing_a_restart() {
    let a = TestOrigin::start(|_, _| resp(200, &[], "A")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgecache.toml");
    write_config(&path, &a.url(), "");
    let edge = start(&path).await;
    write_config(&path, &a.url(), "[edge.memory]\nsize = \"1MiB\"");
    let (status, body) = reload(&support::client(), &edge).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["restart_required"],
        serde_json::json!(["edge.memory.size"])
    );
}

/// Sends SIGHUP to the process `pid`.
fn hangup(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
}

#[tokio::test]
async fn sighup_reloads_and_refuses_an_invalid_file() {
    let a = TestOrigin::start(|_, _| resp(200, &[("cache-control", "no-store")], "A")).await;
    let b = TestOrigin::start(|_, _| resp(200, &[("cache-control", "no-store")], "B")).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgecache.toml");
    write_config(&path, &a.url(), "");
    let mut edge = Process::start(&["edge", "--config", path.to_str().unwrap()]);
    let edge_url = edge.line_after("listening on ");
    let client = support::client();
    let body = |client: reqwest::Client, url: String| async move {
        let r = client.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };
    let url = format!("{edge_url}/x");
    assert_eq!(body(client.clone(), url.clone()).await, "A");

    write_config(&path, &b.url(), "");
    hangup(edge.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    while body(client.clone(), url.clone()).await != "B" {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not switch the origin"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    write_config(&path, "ftp://127.0.0.1:1", "");
    hangup(edge.pid());
    let refused = edge.stderr_containing("config reload refused");
    assert!(refused.contains("edge.origins[0].url"), "{refused}");
    assert_eq!(body(client.clone(), url.clone()).await, "B");
}
