//! The fallback client against real servers on loopback: next PoP on failure, then the origin;
//! the breaker; the router order; `edgecache get`; and failover under load with edges restarting.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use edgecache::client::{
    BreakerPolicy, BreakerState, ClientConfig, ClientError, FailureKind, FallbackClient, GetArgs,
    get_command,
};
use edgecache_edge::EdgeConfig;
use edgecache_edge::config::OriginEntry;
use reqwest::Method;
use reqwest::header::HeaderMap;
use support::{TestOrigin, resp};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;

/// A loopback URL nothing listens on: connecting is refused.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// A server that accepts connections and reads nothing, answers nothing.
struct Hanging {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Hanging {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Self { url, task }
    }
}

impl Drop for Hanging {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A server that answers every request with `200 {name} {path}`.
async fn named(name: &'static str) -> TestOrigin {
    TestOrigin::start(move |seen, _| resp(200, &[], format!("{name} {}", seen.uri))).await
}

fn config(pops: Vec<String>, origin: String) -> ClientConfig {
    ClientConfig {
        pops,
        origin,
        connect_timeout: Duration::from_millis(500),
        first_byte_timeout: Duration::from_millis(500),
        ..ClientConfig::default()
    }
}

async fn body(r: reqwest::Response) -> String {
    String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn a_dead_pop_is_left_for_the_next() {
    let b = named("b").await;
    let origin = named("origin").await;
    let dead = dead_url();
    let client = FallbackClient::new(config(vec![dead.clone(), b.url()], origin.url())).unwrap();

    let r = client.get("/a.css?v=1").await.unwrap();

    assert_eq!(r.served_by, b.url());
    assert_eq!(r.attempts, 2);
    assert_eq!(r.failures.len(), 1);
    assert_eq!(r.failures[0].url, dead);
    assert!(
        matches!(r.failures[0].kind, FailureKind::Connect(_)),
        "{:?}",
        r.failures[0]
    );
    assert_eq!(body(r.response).await, "b /a.css?v=1");
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn a_pop_answering_503_is_left_for_the_next() {
    let a = TestOrigin::start(|_, _| resp(503, &[], "busy")).await;
    let b = named("b").await;
    let origin = named("origin").await;
    let client = FallbackClient::new(config(vec![a.url(), b.url()], origin.url())).unwrap();

    let r = client.get("/x").await.unwrap();

    assert_eq!(r.served_by, b.url());
    assert_eq!(r.attempts, 2);
    assert_eq!(r.failures[0].kind, FailureKind::ServerError(503));
    assert_eq!(r.response.status(), 200);
    assert_eq!(body(r.response).await, "b /x");
    assert_eq!(a.hits(), 1);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn a_pop_that_hangs_before_the_head_times_out_and_the_next_serves() {
    let hanging = Hanging::start().await;
    let b = named("b").await;
    let origin = named("origin").await;
    let mut config = config(vec![hanging.url.clone(), b.url()], origin.url());
    config.first_byte_timeout = Duration::from_millis(300);
    let client = FallbackClient::new(config).unwrap();

    let started = Instant::now();
    let r = client.get("/slow").await.unwrap();
    let took = started.elapsed();

    assert_eq!(r.served_by, b.url());
    assert_eq!(
        r.failures[0].kind,
        FailureKind::FirstByteTimeout(Duration::from_millis(300))
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(body(r.response).await, "b /slow");
}

#[tokio::test]
async fn every_pop_dead_means_the_origin() {
    let origin = named("origin").await;
    let client = FallbackClient::new(config(vec![dead_url(), dead_url()], origin.url())).unwrap();

    let r = client.get("/img/logo.png").await.unwrap();

    assert_eq!(r.served_by, origin.url());
    assert_eq!(r.attempts, 3);
    assert_eq!(body(r.response).await, "origin /img/logo.png");
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn nothing_answering_is_an_error_listing_every_try() {
    let hanging = Hanging::start().await;
    let (pop, origin) = (dead_url(), dead_url());
    let mut config = config(vec![pop.clone(), hanging.url.clone()], origin.clone());
    config.first_byte_timeout = Duration::from_millis(200);
    let client = FallbackClient::new(config).unwrap();

    let err = client.get("/x").await.unwrap_err();

    let ClientError::Exhausted { failures, .. } = &err else {
        panic!("{err:?}");
    };
    let urls: Vec<&str> = failures.iter().map(|f| f.url.as_str()).collect();
    assert_eq!(urls, [pop.as_str(), hanging.url.as_str(), origin.as_str()]);
    assert_eq!(failures[1].kind.as_str(), "first_byte_timeout");
    let message = err.to_string();
    assert!(
        message.starts_with("GET /x: no PoP nor the origin answered: "),
        "{message}"
    );
    assert!(message.contains(&hanging.url), "{message}");
}

#[tokio::test]
async fn the_origins_own_5xx_is_returned_as_it_is() {
    let origin = TestOrigin::start(|_, _| resp(500, &[], "origin broke")).await;
    let client = FallbackClient::new(config(vec![dead_url()], origin.url())).unwrap();

    let r = client.get("/x").await.unwrap();

    assert_eq!(r.served_by, origin.url());
    assert_eq!(r.response.status(), 500);
    assert_eq!(body(r.response).await, "origin broke");
}

#[tokio::test]
async fn total_timeout_bounds_the_whole_request() {
    let (h1, h2) = (Hanging::start().await, Hanging::start().await);
    let mut config = config(vec![h1.url.clone(), h2.url.clone()], dead_url());
    config.first_byte_timeout = Duration::from_secs(5);
    config.total_timeout = Some(Duration::from_millis(300));
    let client = FallbackClient::new(config).unwrap();

    let started = Instant::now();
    let err = client.get("/x").await.unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let ClientError::Exhausted { failures, .. } = err else {
        panic!("{err:?}");
    };
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].kind, FailureKind::TotalTimeout);
}

#[tokio::test]
async fn post_goes_to_the_first_candidate_only() {
    let a = TestOrigin::start(|_, _| resp(503, &[], "busy")).await;
    let b = named("b").await;
    let origin = named("origin").await;
    let client = FallbackClient::new(config(vec![a.url(), b.url()], origin.url())).unwrap();

    let r = client
        .request(Method::POST, "/form", HeaderMap::new(), Some("x=1".into()))
        .await
        .unwrap();

    assert_eq!(r.served_by, a.url());
    assert_eq!(r.attempts, 1);
    assert_eq!(r.response.status(), 503);
    assert_eq!((a.hits(), b.hits(), origin.hits()), (1, 0, 0));

    // Not even a refused connection moves a POST on.
    let dead = dead_url();
    let client = FallbackClient::new(config(vec![dead.clone(), b.url()], origin.url())).unwrap();
    let err = client
        .request(Method::POST, "/form", HeaderMap::new(), Some("x=1".into()))
        .await
        .unwrap_err();
    let ClientError::Exhausted { failures, .. } = err else {
        panic!("{err:?}");
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].url, dead);
    assert_eq!((b.hits(), origin.hits()), (0, 0));
}

#[tokio::test]
async fn put_moves_on_only_when_opted_in() {
    let a = TestOrigin::start(|_, _| resp(503, &[], "busy")).await;
    let b = named("b").await;
    let origin = named("origin").await;
    let put = |client: FallbackClient| async move {
        client
            .request(Method::PUT, "/doc", HeaderMap::new(), Some("v2".into()))
            .await
            .unwrap()
    };

    let r = put(FallbackClient::new(config(vec![a.url(), b.url()], origin.url())).unwrap()).await;
    assert_eq!(
        (r.served_by.as_str(), r.response.status().as_u16()),
        (a.url().as_str(), 503)
    );

    let mut opted_in = config(vec![a.url(), b.url()], origin.url());
    opted_in.retry_put_delete = true;
    let r = put(FallbackClient::new(opted_in).unwrap()).await;
    assert_eq!(r.served_by, b.url());
    assert_eq!(b.seen()[0].method, Method::PUT);
}

#[tokio::test]
async fn the_breaker_skips_a_failed_pop_then_probes_it_after_open_for() {
    // Fails twice, then recovers.
    let a = TestOrigin::start(|_, n| {
        if n < 2 {
            resp(503, &[], "busy")
        } else {
            resp(200, &[], "a")
        }
    })
    .await;
    let b = named("b").await;
    let origin = named("origin").await;
    let mut config = config(vec![a.url(), b.url()], origin.url());
    config.breaker = BreakerPolicy {
        failures: 2,
        open_for: Duration::from_millis(300),
    };
    let client = FallbackClient::new(config).unwrap();

    for _ in 0..2 {
        assert_eq!(client.get("/x").await.unwrap().served_by, b.url());
    }
    assert_eq!(a.hits(), 2);
    assert_eq!(client.breaker_state(&a.url()), BreakerState::Open);

    let r = client.get("/x").await.unwrap();
    assert_eq!(r.served_by, b.url());
    assert_eq!(r.attempts, 1);
    assert_eq!(r.failures[0].kind, FailureKind::CircuitOpen);
    assert_eq!(a.hits(), 2, "an open breaker sends nothing");

    let deadline = Instant::now() + Duration::from_secs(5);
    while client.breaker_state(&a.url()) != BreakerState::HalfOpen {
        assert!(Instant::now() < deadline, "breaker never half-opened");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let r = client.get("/x").await.unwrap();
    assert_eq!(r.served_by, a.url(), "the probe goes to the recovered PoP");
    assert_eq!(a.hits(), 3);
    assert_eq!(body(r.response).await, "a");
    assert_eq!(client.breaker_state(&a.url()), BreakerState::Closed);
}

/// A fake router answering `/v1/route` with `answer`, counting its requests.
async fn router(answer: serde_json::Value) -> (String, Arc<AtomicUsize>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/v1/route",
        axum::routing::get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = answer.clone();
            async move { axum::Json(answer) }
        }),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (url, hits, stop)
}

#[tokio::test]
async fn the_routers_order_wins_and_its_answer_is_cached() {
    let a = named("a").await;
    let b = named("b").await;
    let origin = named("origin").await;
    let (router_url, router_hits, _stop) = router(serde_json::json!({
        "client": {"ip": "127.0.0.1", "country": "US", "lat": 39.0, "lon": -77.5},
        "pops": [
            {"name": "down", "url": dead_url(), "distance_km": 1.0, "healthy": false},
            {"name": "b", "url": b.url(), "distance_km": 2.0, "healthy": true},
            {"name": "a", "url": a.url(), "distance_km": 3.0, "healthy": true},
        ],
        "origin": origin.url(),
    }))
    .await;
    let mut config = config(vec![a.url()], origin.url());
    config.router = Some(router_url);
    let client = FallbackClient::new(config).unwrap();

    assert_eq!(client.candidates().await, [b.url(), a.url(), origin.url()]);
    for _ in 0..3 {
        let r = client.get("/x").await.unwrap();
        assert_eq!((r.served_by.as_str(), r.attempts), (b.url().as_str(), 1));
    }
    assert_eq!(router_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_dead_router_means_the_static_list() {
    let a = named("a").await;
    let origin = named("origin").await;
    let mut config = config(vec![a.url()], origin.url());
    config.router = Some(dead_url());
    let client = FallbackClient::new(config).unwrap();

    let r = client.get("/x").await.unwrap();

    assert_eq!((r.served_by.as_str(), r.attempts), (a.url().as_str(), 1));
}

#[tokio::test]
async fn get_command_writes_head_and_body_to_the_output_file() {
    let b = TestOrigin::start(|_, _| resp(200, &[("x-served", "b")], "hello")).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let args = GetArgs {
        path: "/hello.txt".into(),
        router: None,
        pops: vec![dead_url(), b.url()],
        origin: dead_url(),
        output: Some(out.clone()),
        include: true,
    };

    get_command(args).await.unwrap();

    let written = std::fs::read_to_string(&out).unwrap();
    assert!(written.starts_with("HTTP/1.1 200 OK\r\n"), "{written}");
    assert!(written.contains("\r\nx-served: b\r\n"), "{written}");
    assert!(written.ends_with("\r\n\r\nhello"), "{written}");
}

#[tokio::test]
async fn get_command_fails_when_nothing_answers() {
    let args = GetArgs {
        path: "/x".into(),
        router: None,
        pops: vec![dead_url()],
        origin: dead_url(),
        output: None,
        include: false,
    };
    let err = get_command(args).await.unwrap_err();
    eprintln!("{err:#}");
    assert!(err.to_string().contains("connect failed"), "{err:#}");
}

/// An edge on a fixed loopback address, so a new one can take the place of a stopped one.
struct PortEdge {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl PortEdge {
    async fn start(addr: SocketAddr, origin: &str, pop: &str) -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        // The old edge's closed connections may sit in TIME_WAIT on this port.
        socket.set_reuseaddr(true).unwrap();
        socket.bind(addr).unwrap();
        let listener = socket.listen(1024).unwrap();
        let config = EdgeConfig {
            listen: addr.to_string(),
            pop: pop.into(),
            origins: vec![OriginEntry::http(origin)],
            ..EdgeConfig::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            edgecache_edge::run(listener, None, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self { stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn object_body(path: &str) -> String {
    format!("object {path} ").repeat(64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_while_an_edge_stops_and_a_new_one_takes_its_port() {
    const REQUESTS: usize = 5_000;
    const WORKERS: usize = 32;
    const STOP_AT: usize = 1_500;
    const RESTART_AT: usize = 2_500;

    let origin = TestOrigin::start(|seen, _| {
        resp(
            200,
            &[("cache-control", "max-age=60")],
            object_body(&seen.uri),
        )
    })
    .await;
    let addrs = [free_addr(), free_addr(), free_addr()];
    let mut edges = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        edges.push(Some(
            PortEdge::start(*addr, &origin.url(), &format!("pop{i}")).await,
        ));
    }
    let urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    let first = urls[0].clone();
    let mut config = config(urls.clone(), origin.url());
    config.breaker = BreakerPolicy {
        failures: 2,
        open_for: Duration::from_millis(100),
    };
    let client = FallbackClient::new(config).unwrap();

    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    // 0: all up; 1: the first edge stopped; 2: its replacement running.
    let phase = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (client, next, done, phase, first) = (
            client.clone(),
            next.clone(),
            done.clone(),
            phase.clone(),
            first.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= REQUESTS {
                    return outcome;
                }
                let phase_at_start = phase.load(Ordering::SeqCst);
                let path = format!("/obj/{}?v={}", i % 100, i % 7);
                match client.get(&path).await {
                    Ok(r) => {
                        let served_by = r.served_by.clone();
                        let moved_on = !r.failures.is_empty();
                        let status = r.response.status();
                        match r.response.bytes().await {
                            Ok(b) if status == 200 && b == object_body(&path).as_bytes() => {
                                outcome.ok += 1;
                                outcome.moved_on += usize::from(moved_on);
                                if phase_at_start == 2 && served_by == first {
                                    outcome.by_replacement += 1;
                                }
                            }
                            Ok(b) => outcome.errors.push(format!(
                                "{path} from {served_by}: {status}, {} bytes",
                                b.len()
                            )),
                            Err(e) => outcome
                                .errors
                                .push(format!("{path} from {served_by}: body: {e}")),
                        }
                    }
                    Err(e) => outcome.errors.push(e.to_string()),
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }

    let wait_for = |n: usize| {
        let done = done.clone();
        async move {
            while done.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    };
    let load = async {
        wait_for(STOP_AT).await;
        let stopping = started.elapsed();
        edges[0].take().unwrap().stop().await;
        phase.store(1, Ordering::SeqCst);
        let stopped = started.elapsed();
        wait_for(RESTART_AT).await;
        edges[0] = Some(PortEdge::start(addrs[0], &origin.url(), "pop0-new").await);
        phase.store(2, Ordering::SeqCst);
        eprintln!(
            "stop at {stopping:?}, stopped at {stopped:?}, replaced at {:?}",
            started.elapsed()
        );
        let mut total = Outcome::default();
        for w in workers {
            let o = w.await.unwrap();
            total.ok += o.ok;
            total.moved_on += o.moved_on;
            total.by_replacement += o.by_replacement;
            total.errors.extend(o.errors);
        }
        total
    };
    let total = tokio::time::timeout(Duration::from_secs(30), load)
        .await
        .expect("the load did not finish in 30 s");
    let took = started.elapsed();
    eprintln!(
        "{REQUESTS} GETs in {took:?}: {} moved on, {} served by the replacement edge",
        total.moved_on, total.by_replacement
    );

    assert!(
        total.errors.is_empty(),
        "{} failed: {:?}",
        total.errors.len(),
        &total.errors[..total.errors.len().min(5)]
    );
    assert_eq!(total.ok, REQUESTS);
    assert!(
        total.moved_on > 0,
        "the stopped edge was never left for another"
    );
    assert!(
        total.by_replacement > 0,
        "the replacement edge never served"
    );
    for edge in edges.into_iter().flatten() {
        edge.stop().await;
    }
}

#[derive(Debug, Default)]
struct Outcome {
    ok: usize,
    moved_on: usize,
    by_replacement: usize,
    errors: Vec<String>,
}
