//! Shared helpers for integration tests: a closure origin, an edge, both on 127.0.0.1:0.
#![allow(dead_code)]

pub mod browser;
pub mod health;
pub mod hostile;
pub mod process;
pub mod purge;
pub mod router;
pub mod tls;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use edgecache_edge::EdgeConfig;
use edgecache_edge::config::OriginEntry;
use http::{HeaderMap, Method};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
}

type Handler = dyn Fn(&Seen, usize) -> Response + Send + Sync;

/// An origin whose responses come from a closure `(request, 0-based hit number) -> response`.
pub struct TestOrigin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl TestOrigin {
    pub async fn start(handler: impl Fn(&Seen, usize) -> Response + Send + Sync + 'static) -> Self {
        Self::start_async(Arc::new(handler), None).await
    }

    /// Like `start`, but each response waits for `gate` to be opened first.
    pub async fn start_gated(
        handler: impl Fn(&Seen, usize) -> Response + Send + Sync + 'static,
        gate: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        Self::start_async(Arc::new(handler), Some(gate)).await
    }

    async fn start_async(handler: Arc<Handler>, gate: Option<Arc<tokio::sync::Semaphore>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = oneshot::channel::<()>();
        let app = {
            let seen = seen.clone();
            let hits = hits.clone();
            axum::Router::new().fallback(move |req: Request| {
                let seen = seen.clone();
                let hits = hits.clone();
                let handler = handler.clone();
                let gate = gate.clone();
                async move {
                    let s = Seen {
                        method: req.method().clone(),
                        uri: req.uri().to_string(),
                        headers: req.headers().clone(),
                    };
                    let n = hits.fetch_add(1, Ordering::SeqCst);
                    seen.lock().unwrap().push(s.clone());
                    if let Some(gate) = gate {
                        let _permit = gate.acquire().await.unwrap();
                    }
                    handler(&s, n)
                }
            })
        };
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            seen,
            hits,
            _stop: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Builds a response: `resp(200, &[("cache-control", "max-age=60")], "body")`.
pub fn resp(status: u16, headers: &[(&str, &str)], body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        r.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    r
}

/// An edge node in this process.
pub struct TestEdge {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestEdge {
    pub async fn start(origin_url: &str) -> Self {
        Self::start_with(origin_url, |_| {}).await
    }

    pub async fn start_with(origin_url: &str, tweak: impl FnOnce(&mut EdgeConfig)) -> Self {
        let mut config = EdgeConfig {
            listen: "127.0.0.1:0".into(),
            admin: "127.0.0.1:0".into(),
            pop: "test".into(),
            origins: vec![OriginEntry::http(origin_url)],
            ..EdgeConfig::default()
        };
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            edgecache_edge::run(listener, Some(admin), config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            admin: admin_addr,
            client: client(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// GET with extra request headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    pub async fn stats(&self) -> serde_json::Value {
        self.client
            .get(self.admin_url("/stats"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .map(|b| serde_json::from_slice(&b).unwrap())
            .unwrap()
    }

    /// Waits (at most 5 s) until `/stats` shows `n` requests waiting on another request's
    /// fetch.
    pub async fn wait_for_collapsed(&self, n: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let stats = self.stats().await;
            if stats["collapsed_requests"] == n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never saw {n} collapsed: {stats}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Stops the edge and waits until it has finished.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of `name`, or "" if absent.
pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}
