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
    /// The TLS handshake with the origin failed, e.g. its certificate is not trusted.
    #[error("origin TLS handshake failed: {0}")]
    Tls(String),
    /// The client's request body was malformed or cut short: the client's fault, not the
    /// origin's.
    #[error("client request body: {0}")]
    ClientBody(String),
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::FirstByteTimeout(_) | Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Connect(_) | Self::Protocol(_) | Self::Tls(_) => StatusCode::BAD_GATEWAY,
            Self::ClientBody(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// A token for `Cache-Status: …; detail=…` and metrics labels.
    pub fn detail(&self) -> &'static str {
        match self {
            Self::Connect(_) => "origin-unreachable",
            Self::FirstByteTimeout(_) | Self::Timeout => "origin-timeout",
            Self::Protocol(_) => "origin-broken",
            Self::Tls(_) => "origin-tls-failed",
            Self::ClientBody(_) => "client-body-invalid",
        }
    }

    /// Classifies a reqwest error.
    pub fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::Timeout
        } else if let Some(tls) = tls_cause(e) {
            Self::Tls(tls)
        } else if e.is_connect() {
            Self::Connect(root_cause(e))
        } else {
            Self::Protocol(root_cause(e))
        }
    }
}

/// The TLS error behind a failed request, if that is what failed.
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // An io::Error's `source()` skips the error it wraps; rustls errors travel in one.
        if let Some(tls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        // Connectors may box the TLS error in their own types; its text still says so.
        let text = err.to_string();
        if text.contains("certificate") || text.contains("handshake") {
            return Some(text);
        }
        cur = err.source();
    }
    None
}

/// The innermost error message: reqwest's own top level says little ("error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
