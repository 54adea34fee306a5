//! One try against one base URL: send the request, wait for the response head within the
//! timeouts, and say why it failed if it did.

use std::error::Error as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::HeaderMap;

/// Why one candidate did not serve the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailureKind {
    /// Its circuit breaker is open: not tried.
    #[error("skipped: circuit open")]
    CircuitOpen,
    /// The TCP (or TLS) connection failed, e.g. connection refused.
    #[error("connect failed: {0}")]
    Connect(String),
    /// No connection within `connect_timeout`.
    #[error("connect timed out after {} ms", .0.as_millis())]
    ConnectTimeout(Duration),
    /// Connected, but no response head within `first_byte_timeout`.
    #[error("no response head within {} ms", .0.as_millis())]
    FirstByteTimeout(Duration),
    /// A 5xx response head.
    #[error("server error {0}")]
    ServerError(u16),
    /// The connection broke before a response head arrived.
    #[error("{0}")]
    Transport(String),
    /// The request's `total_timeout` ran out.
    #[error("total timeout reached")]
    TotalTimeout,
}

impl FailureKind {
    /// A short name for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::CircuitOpen => "circuit_open",
            FailureKind::Connect(_) => "connect",
            FailureKind::ConnectTimeout(_) => "connect_timeout",
            FailureKind::FirstByteTimeout(_) => "first_byte_timeout",
            FailureKind::ServerError(_) => "server_error",
            FailureKind::Transport(_) => "transport",
            FailureKind::TotalTimeout => "total_timeout",
        }
    }
}

/// One candidate's failure: `http://127.0.1.1:8080: connect failed: Connection refused`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{url}: {kind}")]
pub struct AttemptFailure {
    pub url: String,
    pub kind: FailureKind,
}

/// The per-try time limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Also set on the HTTP client, which reports it as a connect error.
    pub connect: Duration,
    pub first_byte: Duration,
}

/// What to send; cloned into each try.
#[derive(Debug)]
pub struct Outgoing<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub body: Option<&'a Bytes>,
}

/// Sends `outgoing` to `url` and returns the response as soon as its head arrives, whatever
/// its status. `deadline` (the whole request's) also bounds the body, through reqwest.
pub async fn send(
    http: &reqwest::Client,
    url: &str,
    outgoing: &Outgoing<'_>,
    timeouts: Timeouts,
    deadline: Option<Instant>,
) -> Result<reqwest::Response, FailureKind> {
    let mut request = http
        .request(outgoing.method.clone(), url)
        .headers(outgoing.headers.clone());
    if let Some(body) = outgoing.body {
        request = request.body(body.clone());
    }
    // A pooled connection skips the connect, so its head may take connect + first_byte: the
    // client cannot see when a fresh connect ended, and a little slack beats a false timeout.
    let head_budget = timeouts.connect + timeouts.first_byte;
    let (budget, cut_by_deadline) = match deadline {
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(FailureKind::TotalTimeout);
            }
            request = request.timeout(left);
            (head_budget.min(left), left < head_budget)
        }
        None => (head_budget, false),
    };
    match tokio::time::timeout(budget, request.send()).await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(classify(&e, timeouts)),
        Err(_elapsed) if cut_by_deadline => Err(FailureKind::TotalTimeout),
        Err(_elapsed) => Err(FailureKind::FirstByteTimeout(timeouts.first_byte)),
    }
}

fn classify(e: &reqwest::Error, timeouts: Timeouts) -> FailureKind {
    if e.is_connect() && (e.is_timeout() || chain_says_timed_out(e)) {
        FailureKind::ConnectTimeout(timeouts.connect)
    } else if e.is_connect() {
        FailureKind::Connect(describe(e))
    } else if e.is_timeout() {
        // reqwest's own timeout is only set from the total deadline.
        FailureKind::TotalTimeout
    } else {
        FailureKind::Transport(describe(e))
    }
}

fn chain_says_timed_out(e: &reqwest::Error) -> bool {
    std::iter::successors(e.source(), |s| (*s).source()).any(|s| {
        s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    })
}

/// The causes of a reqwest error, e.g. `tcp connect error: Connection refused (os error 111)`,
/// without the URL the caller already names.
pub fn describe(e: &reqwest::Error) -> String {
    let causes: Vec<String> = std::iter::successors(e.source(), |s| (*s).source())
        .map(ToString::to_string)
        // hyper-util's wrapper (`client error (Connect)`) says nothing its sources do not.
        .filter(|c| !c.starts_with("client error ("))
        .collect();
    if causes.is_empty() {
        e.to_string()
    } else {
        // Wrappers often repeat their source's text; keep each distinct message once.
        let mut out: Vec<&str> = Vec::new();
        for c in &causes {
            if !out.iter().any(|o| o.contains(c.as_str())) {
                out.push(c);
            }
        }
        out.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_url_then_reason() {
        let f = AttemptFailure {
            url: "http://127.0.1.1:8080".into(),
            kind: FailureKind::FirstByteTimeout(Duration::from_millis(2000)),
        };
        assert_eq!(
            f.to_string(),
            "http://127.0.1.1:8080: no response head within 2000 ms"
        );
        assert_eq!(f.kind.as_str(), "first_byte_timeout");
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connect_failure() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        drop(listener);
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let outgoing = Outgoing {
            method: &Method::GET,
            headers: &HeaderMap::new(),
            body: None,
        };
        let timeouts = Timeouts {
            connect: Duration::from_millis(500),
            first_byte: Duration::from_millis(500),
        };
        let err = send(&http, &url, &outgoing, timeouts, None)
            .await
            .unwrap_err();
        assert!(matches!(err, FailureKind::Connect(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_spent_deadline_sends_nothing() {
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let outgoing = Outgoing {
            method: &Method::GET,
            headers: &HeaderMap::new(),
            body: None,
        };
        let timeouts = Timeouts {
            connect: Duration::from_millis(500),
            first_byte: Duration::from_millis(500),
        };
        let err = send(
            &http,
            "http://127.0.0.1:9/",
            &outgoing,
            timeouts,
            Some(Instant::now()),
        )
        .await
        .unwrap_err();
        assert_eq!(err, FailureKind::TotalTimeout);
    }
}
