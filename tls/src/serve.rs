//! The accept loop of every edgecache HTTP listener: HTTP/1.1 and HTTP/2 (chosen by ALPN
//! over TLS, by the connection preface over TCP), the peer address as axum's
//! `ConnectInfo`, and graceful shutdown: stop accepting, let requests in flight finish
//! within a grace period, then close what is left.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::zero_copy::{FileSender, ZeroCopyIo};

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a listener serves: plain or TLS, and how long shutdown waits for requests in flight.
#[derive(Clone)]
pub struct Serve {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub grace: Duration,
}

impl Default for Serve {
    fn default() -> Self {
        Self {
            tls: None,
            grace: Duration::from_secs(30),
        }
    }
}

impl Serve {
    pub fn plain() -> Self {
        Self::default()
    }

    pub fn with_tls(mut self, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        self.tls = tls;
        self
    }

    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// `http` or `https`, for printed URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Serves `app` on `listener` until `shutdown` completes. Then the listener is closed (new
/// connections are refused), idle connections close, requests in flight finish within
/// `options.grace`, and connections still open after it are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: Serve,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let acceptor = options.tls.clone().map(TlsAcceptor::from);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Small responses must not wait for Nagle's algorithm.
                    let _ = tcp.set_nodelay(true);
                    let app = app.clone();
                    let builder = builder.clone();
                    let stop = stop_rx.clone();
                    match acceptor.clone() {
                        None => {
                            let io = ZeroCopyIo::new(tcp);
                            let sender = io.sender();
                            connections.spawn(connection(io, Some(sender), peer, app, builder, stop))
                        }
                        Some(acceptor) => connections.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(tls)) => connection(tls, None, peer, app, builder, stop).await,
                                Ok(Err(e)) => debug!(peer = %peer, error = %e, "TLS handshake failed"),
                                Err(_) => debug!(peer = %peer, "TLS handshake timed out"),
                            }
                        }),
                    };
                }
                Err(e) => {
                    warn!(listener = %local, error = %e, "accept failed");
                    // Out of file descriptors and the like: give connections a moment to close.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    info!(
        listener = %local,
        connections = connections.len(),
        grace_ms = options.grace.as_millis() as u64,
        "listener closed; finishing requests in flight"
    );
    let drained = tokio::time::timeout(options.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(
            listener = %local,
            connections = connections.len(),
            "grace period over; closing connections still open"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Serves one connection until it ends, or until shutdown asks it to finish its requests.
/// HTTP/1 requests on a connection that can send files (`sender`) carry its [`FileSender`].
async fn connection<I>(
    io: I,
    sender: Option<FileSender>,
    peer: SocketAddr,
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(sender) = &sender
            && req.version() <= http::Version::HTTP_11
        {
            req.extensions_mut().insert(sender.clone());
        }
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, req).await }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let stopping = async move {
        // The borrow `wait_for` returns must not live across an await.
        let _ = stop.wait_for(|stop| *stop).await.map(drop);
    };
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(peer = %peer, error = %e, "connection ended with an error");
    }
}
