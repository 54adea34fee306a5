//! TLS and the HTTP listener every edgecache server shares.
//!
//! # Layout
//! - [`config`]: the `tls = { cert, key }` table of a server's config.
//! - [`cert`]: PEM certificates and keys, re-read when their files change.
//! - [`serve`]: an accept loop serving HTTP/1.1 and HTTP/2 (ALPN) over TCP or TLS, with
//!   graceful shutdown bounded by a grace period.
//! - [`selfsigned`]: a local CA and a certificate it signed, for `edgecache up --tls` and tests.

pub mod cert;
pub mod config;
pub mod limits;
pub mod selfsigned;
pub mod serve;
pub mod zero_copy;

pub use cert::{CertStore, server_config};
pub use config::TlsConfig;
pub use limits::{Limits, ListenerStats};
pub use serve::{Serve, serve};

/// Why a certificate, key or CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Pem {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}
