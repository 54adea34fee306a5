//! S3-style bucket origins against real S3-compatible servers on loopback: moto
//! (`moto_server`, ignores signatures) for serving, caching, index keys and 404s; s3s-fs
//! (verifies SigV4) for signatures. Each test skips, saying why, when its server is missing.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgecache_edge::config::{OriginEntry, S3Origin};
use support::{TestEdge, header};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Whether `name` is an executable on PATH.
fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

/// A server process on 127.0.0.1, port 0, killed on drop.
struct Server {
    url: String,
    _child: Child,
}

/// Starts `cmd` and waits (bounded) for a line on stdout or stderr containing `marker`
/// followed by the server's URL.
async fn start_server(mut cmd: Command, marker: &str) -> Server {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn server");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    for reader in [
        Box::new(out) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(err),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(reader).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
    }
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = rx.recv().await {
            if let Some(at) = line.find(marker) {
                let rest = &line[at + marker.len()..];
                let url: String = rest
                    .trim_start()
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                return url;
            }
        }
        panic!("server exited before printing {marker:?}");
    })
    .await
    .expect("server start timed out");
    Server { url, _child: child }
}

/// moto checks no signature, but treats requests without one as anonymous (which may
/// create objects but not read or overwrite them).
const MOTO_AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, \
                         SignedHeaders=host, Signature=0";

async fn put(client: &reqwest::Client, url: String, body: &str, cache_control: &str) {
    let r = client
        .put(&url)
        .header("authorization", MOTO_AUTH)
        .header("cache-control", cache_control)
        .header("content-type", "text/plain")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "PUT {url}: {}", r.status());
}

#[tokio::test]
async fn moto_bucket_is_served_cached_and_indexed() {
    if !on_path("moto_server") {
        eprintln!("skipping: moto_server is not on PATH (pip install \"moto[server]\")");
        return;
    }
    let mut cmd = Command::new("moto_server");
    cmd.args(["-H", "127.0.0.1", "-p", "0"]);
    let moto = start_server(cmd, "Running on").await;
    let client = support::client();
    let bucket = format!("{}/assets", moto.url);
    assert!(
        client
            .put(&bucket)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    put(
        &client,
        format!("{bucket}/index.html"),
        "home page",
        "max-age=60",
    )
    .await;
    put(
        &client,
        format!("{bucket}/docs/index.html"),
        "docs index",
        "max-age=60",
    )
    .await;
    put(&client, format!("{bucket}/app.js"), "v1", "max-age=60").await;
    put(
        &client,
        format!("{bucket}/revalidated.txt"),
        "same",
        "max-age=0",
    )
    .await;

    // moto keeps objects private to signed requests; it accepts any keys.
    let mut s3 = S3Origin::new(&moto.url, "assets", "us-east-1");
    s3.access_key_id = Some("testing".into());
    s3.secret_access_key = Some("testing".into());
    let edge = TestEdge::start_with("http://unused.invalid", |c| {
        c.origins = vec![OriginEntry::s3(s3)];
    })
    .await;

    let r = edge.get("/app.js").await;
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, "cache-status").contains("fwd=uri-miss"),
        "{}",
        header(&r, "cache-status")
    );
    assert_eq!(r.text().await.unwrap(), "v1");
    // Change the object behind the edge's back: a hit does not see it.
    put(&client, format!("{bucket}/app.js"), "v2", "max-age=60").await;
    let r = edge.get("/app.js").await;
    let status = header(&r, "cache-status").to_owned();
    assert!(status.starts_with("edgecache-test; hit; ttl="), "{status}");
    assert_eq!(r.text().await.unwrap(), "v1");

    let r = edge.get("/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "home page");
    let r = edge.get("/docs/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "docs index");

    // A stale copy is revalidated with its ETag; moto answers 304.
    let first = edge.get("/revalidated.txt").await;
    assert_eq!(first.status(), 200);
    let etag = header(&first, "etag").to_owned();
    assert!(!etag.is_empty());
    // As with the 404 below, a request made while the first fetch is still being stored
    // shares that fetch ("collapsed"); once it is stored, the next one revalidates.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let again = edge.get("/revalidated.txt").await;
        assert_eq!(again.status(), 200);
        let status = header(&again, "cache-status").to_owned();
        assert_eq!(header(&again, "etag"), etag);
        assert_eq!(again.text().await.unwrap(), "same");
        if status.contains("fwd=stale; fwd-status=304") {
            break;
        }
        assert!(status.contains("collapsed"), "{status}");
        assert!(
            std::time::Instant::now() < deadline,
            "never revalidated: {status}"
        );
    }

    // A missing key is a cacheable 404 (negative caching, `negative_ttl`, 60 s by default).
    let r = edge.get("/missing.txt").await;
    assert_eq!(r.status(), 404);
    assert_eq!(header(&r, "cache-control"), "max-age=60");
    // The client can have the whole 404 a moment before the fetch has stored it: a request
    // in that moment shares the finishing fetch ("collapsed"); none goes to the bucket again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let again = edge.get("/missing.txt").await;
        assert_eq!(again.status(), 404);
        let status = header(&again, "cache-status").to_owned();
        if status.contains("; hit") {
            break;
        }
        assert!(status.contains("collapsed"), "{status}");
        assert!(
            std::time::Instant::now() < deadline,
            "never a hit: {status}"
        );
    }
}

/// Log lines written while a guard from `capture_logs` lives on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn s3s_wrong_secret_is_502_and_right_secret_is_200() {
    if !on_path("s3s-fs") {
        eprintln!(
            "skipping: s3s-fs is not on PATH \
             (cargo install s3s-fs@0.14.1 --features binary --locked)"
        );
        return;
    }
    const SECRET: &str = "right-secret-5f1e";
    const WRONG: &str = "wrong-secret-9c2d";
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("assets")).unwrap();
    std::fs::write(root.path().join("assets/hello.txt"), "hello from s3s").unwrap();
    let mut cmd = Command::new("s3s-fs");
    cmd.args([
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--access-key",
        "AKTEST",
        "--secret-key",
        SECRET,
    ])
    .arg(root.path())
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1");
    let server = start_server(cmd, "server is running at").await;

    // The tests' runtime is single-threaded, so the edge's tasks log on this thread.
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let logs = logs.clone();
            move || logs.clone()
        })
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let origin = |secret: &str| {
        let mut s3 = S3Origin::new(&server.url, "assets", "us-east-1");
        s3.access_key_id = Some("AKTEST".into());
        s3.secret_access_key = Some(secret.into());
        OriginEntry::s3(s3)
    };
    let wrong =
        TestEdge::start_with("http://unused.invalid", |c| c.origins = vec![origin(WRONG)]).await;
    let r = wrong.get("/hello.txt").await;
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(!body.contains(WRONG), "{body}");

    let right = TestEdge::start_with("http://unused.invalid", |c| {
        c.origins = vec![origin(SECRET)]
    })
    .await;
    let r = right.get("/hello.txt").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello from s3s");
    let r = right
        .get_with("/hello.txt", &[("range", "bytes=0-4")])
        .await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.text().await.unwrap(), "hello");

    let text = logs.text();
    assert!(text.contains("refused this edge's credentials"), "{text}");
    assert!(text.contains("SignatureDoesNotMatch"), "{text}");
    assert!(
        !text.contains(WRONG) && !text.contains(SECRET),
        "a secret was logged"
    );
}
