//! Runs an edge: the public listener and the admin listener, until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::node::Edge;
use crate::purge_sync::{self, Registration};
use crate::reload::ConfigSource;
use crate::{admin, proxy};
use edgecache_purge_api::PurgeClient;
use edgecache_tls::Serve;

/// How an edge started from a config file runs, beyond the config itself.
#[derive(Default, Clone)]
pub struct RunOptions {
    /// Where `POST /reload` and SIGHUP read a new config; none, reloads are refused.
    pub config_source: Option<ConfigSource>,
    /// Reload on SIGHUP.
    pub reload_on_sighup: bool,
}

fn local_addr(l: &TcpListener) -> Result<SocketAddr, EdgeError> {
    l.local_addr().map_err(|source| EdgeError::Io {
        context: "listener address".into(),
        source,
    })
}

/// Serves `listener` (public) and `admin` until `shutdown` completes, then finishes the
/// requests in progress.
pub async fn run(
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    config: EdgeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EdgeError> {
    run_with(
        listener,
        admin_listener,
        config,
        RunOptions::default(),
        shutdown,
    )
    .await
}

/// [`run`] with reloads: from `options.config_source` on `POST /reload` and on SIGHUP.
///
/// On shutdown the public listener closes at once (new connections are refused), responses
/// in flight get `shutdown_grace` to finish, and the disk index is flushed.
pub async fn run_with(
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    config: EdgeConfig,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EdgeError> {
    let edge = Arc::new(Edge::new(&config)?);
    if let Some(source) = options.config_source {
        edge.set_config_source(source);
    }
    let serve = Serve::plain()
        .with_grace(config.shutdown_grace.0)
        .with_limits(config.limits.limits())
        .with_stats(edge.listener.clone())
        .with_tls(
            edge.certs()
                .map(|store| edgecache_tls::server_config(store.clone()))
                .transpose()
                .map_err(|e| EdgeError::Config(format!("edge.tls: {e}")))?,
        );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if options.reload_on_sighup {
        tokio::spawn(reload_on_sighup(edge.clone(), stop_rx.clone()));
    }
    if let (Some(api), Some(token)) = (&config.purge.api, &config.purge.token) {
        let client = purge_client(&config, api, token)?;
        let me = Registration {
            public_url: format!("{}://{}", serve.scheme(), local_addr(&listener)?),
            admin_url: admin_listener
                .as_ref()
                .map(|l| local_addr(l).map(|a| format!("http://{a}")))
                .transpose()?,
        };
        tokio::spawn(purge_sync::follow(
            edge.clone(),
            client,
            me,
            config.purge.poll_wait.0,
            stop_rx.clone(),
        ));
    }
    let admin_task = admin_listener.map(|l| {
        let app = admin::router(edge.clone());
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            edgecache_tls::serve(l, app, Serve::plain(), async move {
                let _ = rx.wait_for(|stop| *stop).await;
            })
            .await
        })
    });
    let app = Router::new()
        .fallback(proxy::handle)
        .with_state(edge.clone());
    info!(pop = edge.pop(), scheme = serve.scheme(), "edge serving");
    let mut rx = stop_rx;
    let result = edgecache_tls::serve(listener, app, serve, async move {
        tokio::select! {
            () = shutdown => {}
            _ = rx.wait_for(|stop| *stop) => {}
        }
    })
    .await;
    let _ = stop_tx.send(true);
    if let Some(disk) = &edge.disk {
        disk.flush();
    }
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    result.map_err(|source| EdgeError::Io {
        context: "serving".into(),
        source,
    })
}

/// The purge API client, trusting `edge.purge.ca` when set.
fn purge_client(config: &EdgeConfig, api: &str, token: &str) -> Result<PurgeClient, EdgeError> {
    let bad = |e: String| EdgeError::Config(e);
    let client = match &config.purge.ca {
        None => PurgeClient::new(api, token),
        Some(ca) => {
            let pem = edgecache_tls::cert::load_ca_pem(ca)
                .map_err(|e| bad(format!("edge.purge.ca: {e}")))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("edge.purge.ca: {e}")))?;
            let http = reqwest::Client::builder()
                .tls_certs_only(roots)
                .build()
                .map_err(|e| bad(format!("edge.purge.ca: cannot build a client: {e}")))?;
            PurgeClient::with_http(http, api, token)
        }
    };
    client.map_err(|e| bad(format!("edge.purge.api: {e}")))
}

/// Reloads the config on every SIGHUP until the edge stops; a refused config is logged.
async fn reload_on_sighup(edge: Arc<Edge>, mut stop: tokio::sync::watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot watch SIGHUP; reload with POST /reload");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                received = hup.recv() => if received.is_none() { return },
            }
            info!(pop = edge.pop(), "SIGHUP: reloading the config");
            if let Err(e) = edge.reload().await {
                tracing::error!(pop = edge.pop(), key = e.key().unwrap_or(""), error = %e, "config reload refused; the running config stays");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (edge, stop.changed().await);
    }
}
