//! Graceful shutdown of the edge: the listener closes at once, a large response in flight
//! finishes with every byte, and what is still open after the grace period is closed.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use edgecache_edge::EdgeConfig;
use edgecache_edge::config::{HumanDuration, OriginEntry};
use futures_util::StreamExt;
use support::{TestOrigin, resp};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const TOTAL: usize = 100 << 20;
const CHUNK: usize = 64 << 10;

/// Byte `i` of the test body: a pattern that shows any lost, repeated or reordered chunk.
fn byte_at(i: usize) -> u8 {
    (i % 251) as u8 ^ (i / CHUNK) as u8
}

fn big_body() -> Body {
    let chunks = (0..TOTAL / CHUNK).map(|c| {
        let start = c * CHUNK;
        Ok::<_, std::io::Error>(Bytes::from(
            (start..start + CHUNK).map(byte_at).collect::<Vec<u8>>(),
        ))
    });
    Body::from_stream(futures_util::stream::iter(chunks))
}

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_edge(origin: &str, grace: Duration) -> Running {
    let config = EdgeConfig {
        listen: "127.0.0.1:0".into(),
        admin: "127.0.0.1:0".into(),
        origins: vec![OriginEntry::http(origin)],
        shutdown_grace: HumanDuration(grace),
        ..EdgeConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        edgecache_edge::run(listener, None, config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    Running {
        addr,
        stop: Some(stop),
        task,
    }
}

/// Polls until connecting to `addr` is refused.
async fn wait_refused(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ => {}
        }
        assert!(Instant::now() < deadline, "new connections still accepted");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_download_in_flight_completes_after_shutdown_began() {
    let origin = TestOrigin::start(|_, _| {
        let mut r = resp(200, &[("cache-control", "no-store")], big_body());
        r.headers_mut()
            .insert("content-length", TOTAL.to_string().parse().unwrap());
        r
    })
    .await;
    let mut edge = start_edge(&origin.url(), Duration::from_secs(60)).await;
    let client = support::client();
    let r = client
        .get(format!("http://{}/big.bin", edge.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut received = 0usize;
    let check = |chunk: &[u8], received: &mut usize| {
        for (k, b) in chunk.iter().enumerate() {
            assert_eq!(*b, byte_at(*received + k), "byte {} differs", *received + k);
        }
        *received += chunk.len();
    };
    while received < 4 << 20 {
        let chunk = body.next().await.expect("body ended early").unwrap();
        check(&chunk, &mut received);
    }

    let _ = edge.stop.take().unwrap().send(());
    wait_refused(edge.addr).await;

    while let Some(chunk) = body.next().await {
        check(&chunk.expect("the download was cut"), &mut received);
    }
    assert_eq!(received, TOTAL);
    tokio::time::timeout(Duration::from_secs(10), edge.task)
        .await
        .expect("the edge did not stop once the download finished")
        .unwrap();
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn connections_still_open_after_the_grace_period_are_closed() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let origin = TestOrigin::start_gated(|_, _| resp(200, &[], "late"), gate.clone()).await;
    let mut edge = start_edge(&origin.url(), Duration::from_millis(300)).await;
    let client = support::client();
    let url = format!("http://{}/slow", edge.addr);
    let pending = tokio::spawn(async move { client.get(url).send().await });
    // Shut down once the request has reached the origin.
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin.hits() == 0 {
        assert!(
            Instant::now() < deadline,
            "the request never reached the origin"
        );
        tokio::task::yield_now().await;
    }
    let _ = edge.stop.take().unwrap().send(());
    tokio::time::timeout(Duration::from_secs(10), edge.task)
        .await
        .expect("the edge waited past its grace period")
        .unwrap();
    let outcome = pending.await.unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
    gate.add_permits(1);
}
