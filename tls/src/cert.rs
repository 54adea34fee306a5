//! Server certificates from PEM files, re-read when the files change: a rustls
//! [`ResolvesServerCert`] that checks the files' modification times at most once a second
//! during handshakes, and can be told to re-read at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{info, warn};

use crate::{TlsConfig, TlsError};

/// How often handshakes look at the files' modification times.
const CHECK_EVERY_MS: u64 = 1000;

/// The crypto provider of every edgecache TLS endpoint (the one the HTTP client uses too).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a PEM certificate chain (at least one certificate).
pub fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, &e))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(chain)
}

/// Reads a certificate chain and its private key, and checks that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = load_chain(cert)?;
    let key_bytes = read(key)?;
    let der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| pem_error(key, &e))?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::Pem {
            path: key.to_owned(),
            reason: format!("unusable private key: {e}"),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| TlsError::Pem {
        path: key.to_owned(),
        reason: format!("does not match the certificate in {}: {e}", cert.display()),
    })?;
    Ok(certified)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_error(path: &Path, e: &rustls::pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        path: path.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PEM block of the right kind".into(),
            other => format!("not valid PEM: {other:?}"),
        },
    }
}

/// What identifies one version of the files: modification time and length of each.
type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let one = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    };
    [one(cert), one(key)]
}

struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: Stamp,
}

/// The certificate a TLS listener presents, re-read when its files change.
pub struct CertStore {
    paths: ArcSwap<TlsConfig>,
    current: ArcSwap<Loaded>,
    /// The files' stamp when they last failed to load, so a broken file is reported once.
    failed: std::sync::Mutex<Option<Stamp>>,
    started: Instant,
    next_check_ms: AtomicU64,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("paths", &self.paths.load())
            .finish()
    }
}

impl CertStore {
    /// Loads the certificate and key named by `config`.
    pub fn open(config: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        let loaded = Self::load(config)?;
        Ok(Arc::new(Self {
            paths: ArcSwap::from_pointee(config.clone()),
            current: ArcSwap::from_pointee(loaded),
            failed: std::sync::Mutex::new(None),
            started: Instant::now(),
            next_check_ms: AtomicU64::new(CHECK_EVERY_MS),
        }))
    }

    fn load(config: &TlsConfig) -> Result<Loaded, TlsError> {
        let stamp = stamp(&config.cert, &config.key);
        let key = load_certified_key(&config.cert, &config.key)?;
        Ok(Loaded {
            key: Arc::new(key),
            stamp,
        })
    }

    /// Re-reads the files now (from new paths, if `config` names others). On error the
    /// certificate in use stays.
    pub fn reload(&self, config: &TlsConfig) -> Result<(), TlsError> {
        let loaded = Self::load(config)?;
        self.paths.store(Arc::new(config.clone()));
        self.current.store(Arc::new(loaded));
        info!(cert = %config.cert.display(), "TLS certificate loaded");
        Ok(())
    }

    /// The paths in use.
    pub fn paths(&self) -> Arc<TlsConfig> {
        self.paths.load_full()
    }

    /// Re-reads the files if they changed since they were loaded; at most once a second.
    fn check_files(&self) {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let next = self.next_check_ms.load(Ordering::Relaxed);
        if now_ms < next
            || self
                .next_check_ms
                .compare_exchange(
                    next,
                    now_ms + CHECK_EVERY_MS,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let paths = self.paths.load();
        let on_disk = stamp(&paths.cert, &paths.key);
        if on_disk == self.current.load().stamp {
            return;
        }
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if *failed == Some(on_disk) {
            return;
        }
        match Self::load(&paths) {
            Ok(loaded) => {
                self.current.store(Arc::new(loaded));
                *failed = None;
                info!(cert = %paths.cert.display(), "TLS certificate changed on disk; reloaded");
            }
            Err(e) => {
                *failed = Some(on_disk);
                warn!(error = %e, "TLS certificate changed on disk but cannot be used; keeping the old one");
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.check_files();
        Some(self.current.load().key.clone())
    }
}

/// A rustls server config presenting `store`'s certificate, offering HTTP/2 and HTTP/1.1.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A CA file as reqwest roots, for clients that must trust a private CA.
pub fn load_ca_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    load_chain(path)?;
    read(path)
}

/// Paths of a PEM pair under `dir`.
pub fn pair_in(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert.pem"), dir.join("key.pem"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selfsigned::LocalCa;

    #[test]
    fn loads_a_pair_and_refuses_a_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::new().unwrap();
        let a = ca.issue(&["localhost".into()]).unwrap();
        let b = ca.issue(&["localhost".into()]).unwrap();
        let (cert, key) = pair_in(dir.path());
        std::fs::write(&cert, &a.cert_pem).unwrap();
        std::fs::write(&key, &a.key_pem).unwrap();
        load_certified_key(&cert, &key).unwrap();
        std::fs::write(&key, &b.key_pem).unwrap();
        let err = load_certified_key(&cert, &key).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        std::fs::write(&cert, "not pem").unwrap();
        let err = load_chain(&cert).unwrap_err().to_string();
        assert!(err.contains("cert.pem"), "{err}");
    }
}
