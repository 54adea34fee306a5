//! The `tls` table of a listener: a PEM certificate chain and its private key.

use std::path::PathBuf;

use serde::Deserialize;

/// `[edge.tls]` / `[purge_api.tls]`: serve HTTPS with this certificate. The files are
/// re-read when they change, so a renewed certificate needs no restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file: the certificate, then any intermediates.
    pub cert: PathBuf,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsConfig {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// Loads both files once, so a bad path or PEM is refused at start. `table` is the
    /// config key of this table (`edge.tls`); the error names the bad key.
    pub fn validate(&self, table: &str) -> Result<(), String> {
        crate::cert::load_chain(&self.cert).map_err(|e| format!("{table}.cert: {e}"))?;
        crate::cert::load_certified_key(&self.cert, &self.key)
            .map(drop)
            .map_err(|e| format!("{table}.key: {e}"))
    }
}
