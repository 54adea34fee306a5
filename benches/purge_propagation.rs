//! Purge propagation, end to end on loopback: a purge API and three edges following it;
//! 1,000 purges accepted at 200/s, each timed from acceptance to the moment the last PoP
//! reported it applied (the purge API's own timestamps). Prints p50, p99 and max.
//!
//! `cargo bench --bench purge_propagation`

use std::time::Duration;

use edgecache_edge::EdgeConfig;
use edgecache_edge::config::{HumanDuration, OriginEntry};
use edgecache_purge_api::{PurgeApiConfig, PurgeClient, PurgeRequest};
use tokio::net::TcpListener;

const PURGES: usize = 1000;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let data = tempfile::tempdir().expect("tempdir");
    let api_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api_addr = api_listener.local_addr().expect("addr");
    let mut config = PurgeApiConfig::new("bench-token", data.path());
    config.rate_per_second = 10_000.0;
    config.burst = 10_000;
    tokio::spawn(edgecache_purge_api::run(
        api_listener,
        config,
        std::future::pending(),
    ));

    for pop in ["us-east", "eu-west", "ap-south"] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut edge = EdgeConfig {
            pop: pop.into(),
            origins: vec![OriginEntry::http("http://127.0.0.1:9")],
            ..EdgeConfig::default()
        };
        edge.purge.api = Some(format!("http://{api_addr}"));
        edge.purge.token = Some("bench-token".into());
        edge.purge.poll_wait = HumanDuration(Duration::from_secs(5));
        tokio::spawn(edgecache_edge::run(
            listener,
            None,
            edge,
            std::future::pending(),
        ));
    }
    let client = PurgeClient::new(&format!("http://{api_addr}"), "bench-token").expect("client");
    wait_for_pops(&client, 3).await;

    let mut ids = Vec::with_capacity(PURGES);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for i in 0..PURGES {
        tick.tick().await;
        let request = PurgeRequest {
            urls: vec![format!("/asset-{i}.js")],
            ..PurgeRequest::default()
        };
        ids.push(client.purge(&request).await.expect("purge accepted").id);
    }
    let mut millis: Vec<u64> = Vec::with_capacity(PURGES);
    for id in &ids {
        let status = client
            .wait_complete(id, Duration::from_secs(30))
            .await
            .expect("purge completes");
        millis.push(status.propagation_ms().expect("complete"));
    }
    millis.sort_unstable();
    let pct = |p: f64| millis[((millis.len() - 1) as f64 * p).round() as usize];
    println!(
        "purge propagation to 3 PoPs over {PURGES} purges: p50 {} ms, p99 {} ms, max {} ms",
        pct(0.50),
        pct(0.99),
        millis[millis.len() - 1]
    );
}

async fn wait_for_pops(client: &PurgeClient, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pops = client.pops().await.expect("pops");
        if pops.iter().filter(|p| p.live).count() >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "PoPs did not register"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
