//! A client for the purge API, used by the edges (register, poll, report) and `edgecache purge`.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::PurgeRequest;
use crate::wire::{
    Accepted, AppliedReport, ErrorBody, PollResponse, PopInfo, PurgeStatus, RegisterPop,
};

/// How long a request other than a long-poll may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What went wrong talking to the purge API; `Status` carries the server's own error text.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not an absolute http(s) URL.
    #[error("purge API URL {url:?}: {message}")]
    BadUrl { url: String, message: String },
    /// The client could not be built (TLS setup).
    #[error("purge API client: {0}")]
    Build(#[source] reqwest::Error),
    /// Connecting, sending or reading failed, or timed out.
    #[error("purge API {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status, e.g. `401: invalid bearer token`.
    #[error("purge API {url}: {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    /// A success answer that is not the expected JSON.
    #[error("purge API {url}: unexpected answer: {source}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    /// [`PurgeClient::wait_complete`] gave up; `last` is the last status seen.
    #[error("purge {id} not complete after {:.1}s", waited.as_secs_f64())]
    Timeout {
        id: String,
        waited: Duration,
        last: Box<PurgeStatus>,
    },
}

impl ClientError {
    /// The HTTP status of a `Status` error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A purge API client. Cheap to clone; clones share the connection pool.
#[derive(Clone)]
pub struct PurgeClient {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl std::fmt::Debug for PurgeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgeClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl PurgeClient {
    /// A client for the purge API at `base_url` (e.g. `http://127.0.0.1:8070`).
    pub fn new(base_url: &str, token: &str) -> Result<PurgeClient, ClientError> {
        let http = reqwest::Client::builder()
            .build()
            .map_err(ClientError::Build)?;
        PurgeClient::with_http(http, base_url, token)
    }

    /// Like [`PurgeClient::new`] over an existing `reqwest::Client`.
    pub fn with_http(
        http: reqwest::Client,
        base_url: &str,
        token: &str,
    ) -> Result<PurgeClient, ClientError> {
        let bad = |message: &str| ClientError::BadUrl {
            url: base_url.to_owned(),
            message: message.to_owned(),
        };
        let base = Url::parse(base_url).map_err(|err| bad(&err.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(bad("must be an http(s) URL"));
        }
        Ok(PurgeClient {
            http,
            base,
            token: token.to_owned(),
        })
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// `POST /v1/purge`: the purge is durable once this returns.
    pub async fn purge(&self, request: &PurgeRequest) -> Result<Accepted, ClientError> {
        let url = self.url(&["v1", "purge"]);
        self.send(Method::POST, url, Some(request), REQUEST_TIMEOUT)
            .await
    }

    /// `GET /v1/purge/{id}`.
    pub async fn status(&self, id: &str) -> Result<PurgeStatus, ClientError> {
        let url = self.url(&["v1", "purge", id]);
        self.send(Method::GET, url, None::<&()>, REQUEST_TIMEOUT)
            .await
    }

    /// `GET /v1/pops`.
    pub async fn pops(&self) -> Result<Vec<PopInfo>, ClientError> {
        let url = self.url(&["v1", "pops"]);
        self.send(Method::GET, url, None::<&()>, REQUEST_TIMEOUT)
            .await
    }

    /// `POST /v1/pops/register`.
    pub async fn register(&self, pop: &RegisterPop) -> Result<PopInfo, ClientError> {
        let url = self.url(&["v1", "pops", "register"]);
        self.send(Method::POST, url, Some(pop), REQUEST_TIMEOUT)
            .await
    }

    /// `POST /v1/pops/{name}/applied`: every purge up to `seq` is applied (and a heartbeat).
    pub async fn report_applied(&self, name: &str, seq: u64) -> Result<PopInfo, ClientError> {
        let url = self.url(&["v1", "pops", name, "applied"]);
        let report = AppliedReport { seq };
        self.send(Method::POST, url, Some(&report), REQUEST_TIMEOUT)
            .await
    }

    /// `DELETE /v1/pops/{name}`.
    pub async fn remove_pop(&self, name: &str) -> Result<(), ClientError> {
        let url = self.url(&["v1", "pops", name]);
        let response = self
            .request(Method::DELETE, url.clone(), REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|source| http_error(&url, source))?;
        check(&url, response).await.map(drop)
    }

    /// `GET /v1/purges`: purges past `since`, waiting up to `wait` (capped by the server)
    /// for one to arrive. Keep one open per edge for low-latency delivery.
    pub async fn poll(&self, since: u64, wait: Duration) -> Result<PollResponse, ClientError> {
        self.poll_inner(None, since, wait).await
    }

    /// Like [`PurgeClient::poll`], counting as the heartbeat of PoP `pop`.
    pub async fn poll_as(
        &self,
        pop: &str,
        since: u64,
        wait: Duration,
    ) -> Result<PollResponse, ClientError> {
        self.poll_inner(Some(pop), since, wait).await
    }

    /// Polls `status(id)` until it is complete or `timeout` has passed.
    pub async fn wait_complete(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<PurgeStatus, ClientError> {
        let start = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(25);
        loop {
            let status = self.status(id).await?;
            let waited = start.elapsed();
            if status.complete {
                return Ok(status);
            }
            if waited >= timeout {
                return Err(ClientError::Timeout {
                    id: id.to_owned(),
                    waited,
                    last: Box::new(status),
                });
            }
            tokio::time::sleep(pause.min(timeout - waited)).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    async fn poll_inner(
        &self,
        pop: Option<&str>,
        since: u64,
        wait: Duration,
    ) -> Result<PollResponse, ClientError> {
        let mut url = self.url(&["v1", "purges"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("since", &since.to_string());
            query.append_pair("wait", &wait.as_secs().to_string());
            if let Some(pop) = pop {
                query.append_pair("pop", pop);
            }
        }
        self.send(Method::GET, url, None::<&()>, wait + REQUEST_TIMEOUT)
            .await
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            // Percent-encodes each segment, so an id or name cannot change the route.
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, url: Url, timeout: Duration) -> RequestBuilder {
        self.http
            .request(method, url)
            .bearer_auth(&self.token)
            .timeout(timeout)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&impl Serialize>,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let mut request = self.request(method, url.clone(), timeout);
        if let Some(body) = body {
            let json = serde_json::to_vec(body).map_err(|source| ClientError::Decode {
                url: url.to_string(),
                source,
            })?;
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(json);
        }
        let response = request
            .send()
            .await
            .map_err(|source| http_error(&url, source))?;
        let bytes = check(&url, response).await?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            url: url.to_string(),
            source,
        })
    }
}

fn http_error(url: &Url, source: reqwest::Error) -> ClientError {
    ClientError::Http {
        url: url.to_string(),
        source: source.without_url(),
    }
}

/// The body of a success answer, or the server's error text as a `Status` error.
async fn check(url: &Url, response: reqwest::Response) -> Result<Vec<u8>, ClientError> {
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|source| http_error(url, source))?;
    if status.is_success() {
        return Ok(bytes.to_vec());
    }
    let message = match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => body.error,
        Err(_) => String::from_utf8_lossy(&bytes)
            .trim()
            .chars()
            .take(200)
            .collect(),
    };
    Err(ClientError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> PurgeClient {
        PurgeClient::new(base, "t").unwrap()
    }

    #[test]
    fn urls_are_built_under_the_base_with_segments_encoded() {
        let c = client("http://127.0.0.1:8070");
        assert_eq!(
            c.url(&["v1", "purge", "p-1-ab"]).as_str(),
            "http://127.0.0.1:8070/v1/purge/p-1-ab"
        );
        assert_eq!(
            c.url(&["v1", "purge", "../x?y"]).as_str(),
            "http://127.0.0.1:8070/v1/purge/..%2Fx%3Fy"
        );
        let nested = client("https://ops.example/purge/");
        assert_eq!(
            nested.url(&["v1", "pops"]).as_str(),
            "https://ops.example/purge/v1/pops"
        );
    }

    #[test]
    fn bad_base_urls_are_refused() {
        let err = PurgeClient::new("127.0.0.1:8070", "t").unwrap_err();
        assert!(err.to_string().starts_with("purge API URL"), "{err}");
        assert!(PurgeClient::new("ftp://h/", "t").is_err());
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let c = PurgeClient::new("http://h", "hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn status_errors_expose_their_code() {
        let err = ClientError::Status {
            url: "http://h/v1/purge".into(),
            status: 401,
            message: "invalid bearer token".into(),
        };
        assert_eq!(err.status(), Some(401));
        assert_eq!(
            err.to_string(),
            "purge API http://h/v1/purge: 401: invalid bearer token"
        );
    }
}
