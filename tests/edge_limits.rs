//! The public listener under slow, idle and greedy clients: what they hold is released
//! within the configured timeouts, caps refuse what is over them, and an innocent client is
//! served throughout. Timeouts here are short so the tests are quick; the defaults are in
//! `edgecache_tls::Limits`.

mod support;

use std::time::Duration;

use edgecache_edge::config::HumanDuration;
use support::{TestEdge, TestOrigin, header, resp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Upper bound on any wait in these tests; the timeouts under test are far shorter.
const BOUND: Duration = Duration::from_secs(10);

async fn cacheable_origin() -> TestOrigin {
    TestOrigin::start(|seen, _| {
        resp(
            200,
            &[("cache-control", "public, max-age=300")],
            format!("body of {}", seen.uri),
        )
    })
    .await
}

/// Reads until the edge closes the connection; panics if it is still open after `BOUND`.
/// Returns what was read.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the edge kept the connection open");
    got
}

/// The value of metric `name` (the line that also holds `label`, if given) on the admin
/// `/metrics` page.
async fn metric(edge: &TestEdge, name: &str, label: &str) -> f64 {
    let page = edge
        .client
        .get(edge.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    page.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} {label} in:\n{page}"))
}

/// Connections the edge closed for timeout `reason` (`idle`, `request_head`, `send`).
async fn timed_out(edge: &TestEdge, reason: &str) -> f64 {
    let label = format!("reason=\"{reason}\"");
    metric(edge, "edgecache_connections_timed_out_total", &label).await
}

/// Waits (at most `BOUND`) until the open-connection gauge reads `n`.
async fn wait_for_open(edge: &TestEdge, n: f64) {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        let open = metric(edge, "edgecache_connections_open", "").await;
        if open == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} connections still open, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cache hit for an innocent client on a new connection.
async fn innocent_hit(edge: &TestEdge) {
    let r = edge.get("/asset.js").await;
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, "cache-status").contains("; hit"),
        "{:?}",
        r.headers()
    );
    assert_eq!(r.text().await.unwrap(), "body of /asset.js");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let origin = cacheable_origin().await;
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.limits.idle_timeout = HumanDuration(Duration::from_millis(300));
    })
    .await;
    let mut silent = TcpStream::connect(edge.addr).await.unwrap();
    assert!(read_until_closed(&mut silent).await.is_empty());
    assert_eq!(timed_out(&edge, "idle").await, 1.0);
    wait_for_open(&edge, 0.0).await;
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_once_idle_and_trickled_bytes_do_not_extend_it() {
    let origin = cacheable_origin().await;
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.limits.idle_timeout = HumanDuration(Duration::from_millis(400));
        c.limits.request_head_timeout = HumanDuration(Duration::from_secs(30));
    })
    .await;
    let mut conn = TcpStream::connect(edge.addr).await.unwrap();
    let request = format!("GET /asset.js HTTP/1.1\r\nHost: {}\r\n\r\n", edge.addr);
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    // A slow-loris head, one byte at a time: not a request in progress, so the idle
    // deadline that started after the response still holds.
    let started = tokio::time::Instant::now();
    let trickle = async {
        for b in b"GET /asset.js HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if conn.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(BOUND, trickle).await.unwrap();
    read_until_closed(&mut conn).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed only after {:?}",
        started.elapsed()
    );
    assert_eq!(timed_out(&edge, "idle").await, 1.0);
}

#[tokio::test]
async fn a_request_head_that_takes_too_long_is_closed() {
    let origin = cacheable_origin().await;
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.limits.request_head_timeout = HumanDuration(Duration::from_millis(300));
        c.limits.idle_timeout = HumanDuration(Duration::from_secs(30));
    })
    .await;
    let mut conn = TcpStream::connect(edge.addr).await.unwrap();
    conn.write_all(b"GET /asset.js HTTP/1.1\r\nHost: x\r\nX-Unfinished: ")
        .await
        .unwrap();
    read_until_closed(&mut conn).await;
    assert_eq!(timed_out(&edge, "request_head").await, 1.0);
    wait_for_open(&edge, 0.0).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
    // 64 MiB: far more than loopback socket buffers hold.
    let origin =
        TestOrigin::start(|_, _| resp(200, &[("cache-control", "no-store")], vec![b'x'; 64 << 20]))
            .await;
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.limits.send_timeout = HumanDuration(Duration::from_millis(300));
    })
    .await;
    let mut conn = TcpStream::connect(edge.addr).await.unwrap();
    let request = format!("GET /big HTTP/1.1\r\nHost: {}\r\n\r\n", edge.addr);
    conn.write_all(request.as_bytes()).await.unwrap();
    // Read nothing: wait for the edge to give up on this client.
    let deadline = tokio::time::Instant::now() + BOUND;
    while timed_out(&edge, "send").await < 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "no send timeout");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_open(&edge, 0.0).await;
    drop(conn);
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_refused_and_others_are_served() {
    let origin = cacheable_origin().await;
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.limits.max_connections_per_ip = 3;
    })
    .await;
    // The innocent client comes from another loopback address, and keeps no connection
    // open between requests, so the open-connection gauge counts only the held ones.
    let innocent = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let fetch = |path: &'static str| {
        let url = edge.url(path);
        let client = innocent.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            let status = header(&r, "cache-status").to_owned();
            (r.status(), status, r.text().await.unwrap())
        }
    };
    let (code, _, body) = fetch("/asset.js").await;
    assert_eq!((code.as_u16(), body.as_str()), (200, "body of /asset.js"));

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(edge.addr).await.unwrap());
    }
    wait_for_open(&edge, 3.0).await;
    let mut over = TcpStream::connect(edge.addr).await.unwrap();
    assert!(read_until_closed(&mut over).await.is_empty());
    assert_eq!(
        metric(
            &edge,
            "edgecache_connections_refused_total",
            "reason=\"max_connections_per_ip\""
        )
        .await,
        1.0
    );
    let (code, status, body) = fetch("/asset.js").await;
    assert_eq!(code, 200);
    assert!(status.contains("; hit"), "{status}");
    assert_eq!(body, "body of /asset.js");
    drop(held);
    wait_for_open(&edge, 0.0).await;
}

#[tokio::test]
async fn hundreds_of_slow_connections_leave_hits_served_and_are_all_released() {
    let origin = cacheable_origin().await;
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.limits.request_head_timeout = HumanDuration(Duration::from_millis(500));
        c.limits.idle_timeout = HumanDuration(Duration::from_millis(800));
        c.limits.max_connections_per_ip = 2_000;
    })
    .await;
    assert_eq!(edge.get("/asset.js").await.status(), 200);
    let mut slow = Vec::new();
    for i in 0..400u32 {
        // Spread over several source addresses, as an attack would be.
        let socket = TcpSocket::new_v4().unwrap();
        let source = std::net::Ipv4Addr::new(127, 0, 9, 1 + (i % 200) as u8);
        socket.bind((source, 0).into()).unwrap();
        let mut conn = socket.connect(edge.addr).await.unwrap();
        if i % 2 == 0 {
            conn.write_all(b"GET /asset.js HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .unwrap();
        }
        slow.push(conn);
    }
    innocent_hit(&edge).await;
    for conn in &mut slow {
        read_until_closed(conn).await;
    }
    wait_for_open(&edge, 0.0).await;
    innocent_hit(&edge).await;
}

#[tokio::test]
async fn a_connection_used_more_often_than_the_idle_timeout_stays_open() {
    let origin = cacheable_origin().await;
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.limits.idle_timeout = HumanDuration(Duration::from_millis(500));
    })
    .await;
    let mut conn = TcpStream::connect(edge.addr).await.unwrap();
    let request = format!("GET /asset.js HTTP/1.1\r\nHost: {}\r\n\r\n", edge.addr);
    // Five requests 300 ms apart: 1.2 s in all, each pause well inside the idle timeout.
    for i in 0..5 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(b"body of /asset.js") {
            let n = tokio::time::timeout(BOUND, conn.read(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert!(n > 0, "request {i}: the edge closed a busy connection");
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"), "request {i}");
    }
    assert_eq!(timed_out(&edge, "idle").await, 0.0);
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_its_last_stream() {
    let origin = cacheable_origin().await;
    let edge = TestEdge::start_with(&origin.url(), |c| {
        c.limits.idle_timeout = HumanDuration(Duration::from_millis(300));
    })
    .await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..2 {
        let r = h2.get(edge.url("/asset.js")).send().await.unwrap();
        assert_eq!(r.version(), http::Version::HTTP_2);
        assert_eq!(r.text().await.unwrap(), "body of /asset.js");
    }
    // The client keeps the connection; the edge closes it once no stream is open.
    wait_for_open(&edge, 0.0).await;
    assert_eq!(timed_out(&edge, "idle").await, 1.0);
    let r = h2.get(edge.url("/asset.js")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "body of /asset.js");
}
