//! Runs an edge: the public listener and the admin listener, until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tracing::info;

use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::node::Edge;
use crate::purge_sync::{self, Registration};
use crate::{admin, proxy};
use edgecache_purge_api::PurgeClient;

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
    let edge = Arc::new(Edge::new(&config)?);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let (Some(api), Some(token)) = (&config.purge.api, &config.purge.token) {
        let client = PurgeClient::new(api, token)
            .map_err(|e| EdgeError::Config(format!("edge.purge.api: {e}")))?;
        let me = Registration {
            public_url: format!("http://{}", local_addr(&listener)?),
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
            axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
        })
    });
    let app = Router::new()
        .fallback(proxy::handle)
        .with_state(edge.clone());
    info!(pop = edge.pop(), "edge serving");
    let listener = listener.tap_io(|tcp| {
        // Small responses must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);
    });
    let mut rx = stop_rx;
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        tokio::select! {
            () = shutdown => {}
            _ = rx.wait_for(|stop| *stop) => {}
        }
    });
    let result = served.await;
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
