//! Errors of the edge: configuration and start-up, and origin fetch failures.

use http::StatusCode;

/// Errors that stop an edge from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Why an origin fetch failed. Each maps to the status the client gets when no stale
/// response may stand in.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("origin unreachable: {0}")]
    Connect(String),
    #[error("origin sent no response head within {0:?}")]
    FirstByteTimeout(std::time::Duration),
    #[error("origin request timed out")]
    Timeout,
    #[error("origin response broken: {0}")]
    Protocol(String),
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::FirstByteTimeout(_) | Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Connect(_) | Self::Protocol(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// A token for `Cache-Status: …; detail=…` and metrics labels.
    pub fn detail(&self) -> &'static str {
        match self {
            Self::Connect(_) => "origin-unreachable",
            Self::FirstByteTimeout(_) | Self::Timeout => "origin-timeout",
            Self::Protocol(_) => "origin-broken",
        }
    }

    /// Classifies a reqwest error.
    pub fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else if e.is_connect() {
            Self::Connect(root_cause(e))
        } else {
            Self::Protocol(root_cause(e))
        }
    }
}

/// The innermost error message: reqwest's own top level says little ("error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
