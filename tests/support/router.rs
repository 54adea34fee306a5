//! A GeoIP router in the test's process, on 127.0.0.1:0.

use std::time::Duration;

use edgecache::router::{self, RouterConfig, RouterError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestRouter {
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RouterError>>,
}

impl TestRouter {
    pub async fn start(config: RouterConfig) -> TestRouter {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", http.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(router::run(http, None, config, async {
            let _ = stopped.await;
        }));
        TestRouter {
            base,
            stop: Some(stop),
            task,
        }
    }

    /// Stops the router and checks it ended cleanly within 5 s.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("router stops within 5 s")
            .unwrap()
            .unwrap();
    }
}
