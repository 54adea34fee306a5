//! A purge API in the test's process, and edges that follow it.

use std::path::Path;
use std::time::Duration;

use edgecache_edge::config::HumanDuration;
use edgecache_purge_api::{PurgeApiConfig, PurgeClient, run};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::{TestEdge, TestOrigin};

pub const TOKEN: &str = "purge-test-token";

/// A purge API on 127.0.0.1:0, keeping its log in a directory of the test's.
pub struct PurgeService {
    pub url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl PurgeService {
    pub async fn start(data_dir: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut config = PurgeApiConfig::new(TOKEN, data_dir);
        config.listen = "127.0.0.1:0".into();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            run(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self { url, stop, task }
    }

    pub fn client(&self) -> PurgeClient {
        PurgeClient::with_http(super::client(), &self.url, TOKEN).unwrap()
    }

    /// Stops the service and waits until it has let go of its data dir.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// An edge named `pop` following the purge API at `api` with 2-second long-polls, with a
/// disk tier in `disk` if given.
pub async fn follower(origin: &TestOrigin, api: &str, pop: &str, disk: Option<&Path>) -> TestEdge {
    let (api, pop) = (api.to_owned(), pop.to_owned());
    let disk = disk.map(Path::to_path_buf);
    TestEdge::start_with(&origin.url(), move |cfg| {
        cfg.pop = pop;
        cfg.disk.dir = disk;
        cfg.purge.api = Some(api);
        cfg.purge.token = Some(TOKEN.into());
        cfg.purge.poll_wait = HumanDuration(Duration::from_secs(2));
    })
    .await
}
