//! A `/healthz` server for router tests: a PoP whose health can be killed and restored.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A `/healthz` server that can be killed and restarted on the same address.
pub struct HealthServer {
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl HealthServer {
    pub async fn start<T>(ip: T) -> HealthServer
    where
        (T, u16): tokio::net::ToSocketAddrs,
    {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        HealthServer {
            addr,
            task: Some(serve_health(listener)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub async fn restart(&mut self) {
        // The aborted server drops its listener on its next poll: retry the bind briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(err) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {err}", self.addr);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("cannot rebind {}: {err}", self.addr),
            }
        };
        self.task = Some(serve_health(listener));
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve_health(listener: TcpListener) -> JoinHandle<()> {
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok\n" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}
