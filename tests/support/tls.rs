//! TLS helpers: a CA and certificates written to a temporary directory, an HTTPS origin,
//! and clients that trust a given CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use edgecache_tls::TlsConfig;
use edgecache_tls::selfsigned::LocalCa;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A CA with its certificate in `dir/NAME-ca.pem`.
pub struct TestCa {
    pub ca: LocalCa,
    pub ca_file: PathBuf,
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> Self {
        let ca = LocalCa::new().unwrap();
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, &ca.cert_pem).unwrap();
        Self { ca, ca_file }
    }

    /// Issues a certificate for 127.0.0.1 and localhost into `dir/NAME.{crt,key}`.
    pub fn issue(&self, dir: &Path, name: &str) -> TlsConfig {
        let issued = self
            .ca
            .issue(&["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let config = TlsConfig::new(
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        write_atomically(&config.cert, issued.cert_pem.as_bytes());
        write_atomically(&config.key, issued.key_pem.as_bytes());
        config
    }

    /// A client trusting only this CA; `http1` forces HTTP/1.1.
    pub fn client(&self, http1: bool) -> reqwest::Client {
        let roots = reqwest::Certificate::from_pem_bundle(self.ca.cert_pem.as_bytes()).unwrap();
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only(roots)
            .redirect(reqwest::redirect::Policy::none());
        if http1 {
            b = b.http1_only();
        }
        b.build().unwrap()
    }
}

/// Replaces `path` whole, so a reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// An HTTPS origin answering every GET with `body` and `Cache-Control: max-age=60`.
pub struct HttpsOrigin {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl HttpsOrigin {
    pub async fn start(tls: &TlsConfig, body: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { ([("cache-control", "max-age=60")], body) }
        });
        let store = edgecache_tls::CertStore::open(tls).unwrap();
        let options = edgecache_tls::Serve::plain()
            .with_tls(Some(edgecache_tls::server_config(store).unwrap()));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(edgecache_tls::serve(listener, app, options, async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            hits,
            _stop: stop,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
