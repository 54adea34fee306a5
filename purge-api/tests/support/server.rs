//! Test helper: the purge API started with `run` on 127.0.0.1:0 over a given data dir.

use std::path::Path;
use std::time::Duration;

use edgecache_purge_api::{PurgeApiConfig, PurgeApiError, PurgeClient, run};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-token";

/// A config over `dir` with the test token and defaults otherwise.
pub fn config(dir: &Path) -> PurgeApiConfig {
    PurgeApiConfig::new(TOKEN, dir)
}

/// A running purge API; `stop` shuts it down the way Ctrl-C does.
pub struct Service {
    pub base: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), PurgeApiError>>,
}

impl Service {
    pub async fn start(config: PurgeApiConfig) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, config, async move {
            let _ = stopped.await;
        }));
        Service {
            base,
            stop: Some(stop),
            task,
        }
    }

    /// Stops the service and waits until `run` returned, so the data dir is free again.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let finished = tokio::time::timeout(Duration::from_secs(20), &mut self.task).await;
        finished
            .expect("run returns after shutdown")
            .unwrap()
            .unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn client(&self) -> PurgeClient {
        PurgeClient::new(&self.base, TOKEN).unwrap()
    }

    /// A raw request with the test token, for status codes and headers.
    pub fn post(&self, path: &str, body: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body.to_owned())
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(TOKEN)
    }

    /// One sample of `/metrics`, e.g. `edgecache_purge_polls_waiting`.
    pub async fn metric(&self, line_prefix: &str) -> Option<f64> {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(line_prefix)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The JSON body of an error response, checking it has the `{"error": …}` shape.
pub async fn error_text(response: reqwest::Response) -> String {
    let body = json(response).await;
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error text in {body}"))
        .to_owned()
}

/// The body as JSON (reqwest is built without its `json` feature).
pub async fn json(response: reqwest::Response) -> serde_json::Value {
    let bytes = response.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&bytes)))
}
