//! The accept loop of every edgecache HTTP listener: HTTP/1.1 and HTTP/2 (chosen by ALPN
//! over TLS, by the connection preface over TCP), the peer address as axum's
//! `ConnectInfo`, the [`Limits`] a listener facing strangers needs (timeouts, connection
//! caps, HTTP/2 limits), and graceful shutdown: stop accepting, let requests in flight
//! finish within a grace period, then close what is left.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::limits::{
    ConnectionTable, Guarded, GuardedBody, InFlight, Limits, ListenerStats, Refusal,
};
use crate::zero_copy::{FileSender, ZeroCopyIo};

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a listener serves: plain or TLS, and how long shutdown waits for requests in flight.
#[derive(Clone)]
pub struct Serve {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub grace: Duration,
    pub limits: Limits,
    /// What the listener refused and closed; read by the server's metrics.
    pub stats: Arc<ListenerStats>,
}

impl Default for Serve {
    fn default() -> Self {
        Self {
            tls: None,
            grace: Duration::from_secs(30),
            limits: Limits::default(),
            stats: Arc::default(),
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

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn with_stats(mut self, stats: Arc<ListenerStats>) -> Self {
        self.stats = stats;
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
    let limits = options.limits;
    let builder = Arc::new(connection_builder(&limits));
    let table = Arc::new(ConnectionTable::default());
    let stats = options.stats.clone();
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
                    let admission = match table.admit(peer.ip(), &limits, &stats) {
                        Ok(admission) => admission,
                        Err(refusal) => {
                            // Closed at once: a flood must not cost more than the accept.
                            drop(tcp);
                            refused(local, peer, refusal);
                            continue;
                        }
                    };
                    // Small responses must not wait for Nagle's algorithm.
                    let _ = tcp.set_nodelay(true);
                    let conn = Conn {
                        peer,
                        app: app.clone(),
                        builder: builder.clone(),
                        stop: stop_rx.clone(),
                        limits,
                        stats: stats.clone(),
                    };
                    match acceptor.clone() {
                        None => {
                            let io = ZeroCopyIo::new(tcp);
                            let sender = io.sender();
                            connections.spawn(async move {
                                conn.serve(io, Some(sender)).await;
                                drop(admission);
                            })
                        }
                        Some(acceptor) => connections.spawn(async move {
                            let handshake = limits.request_head_timeout.min(HANDSHAKE_TIMEOUT);
                            match tokio::time::timeout(handshake, acceptor.accept(tcp)).await {
                                Ok(Ok(tls)) => conn.serve(tls, None).await,
                                Ok(Err(e)) => debug!(peer = %peer, error = %e, "TLS handshake failed"),
                                Err(_) => debug!(peer = %peer, "TLS handshake timed out"),
                            }
                            drop(admission);
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

/// hyper's connection settings for `limits`: HTTP/1's request-head timeout, HTTP/2's
/// stream, header-list and reset limits.
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_head_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.h2_max_header_list_size)
        .max_pending_accept_reset_streams(limits.h2_max_pending_resets);
    builder
}

/// Logs a refused connection, at most once a second in the whole process: a flood must
/// not turn into a flood of log lines. The counters in [`ListenerStats`] have every one.
fn refused(local: SocketAddr, peer: SocketAddr, refusal: Refusal) {
    static LAST_LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_LOGGED.swap(now, std::sync::atomic::Ordering::Relaxed) != now {
        let why = match refusal {
            Refusal::Total => "max_connections reached",
            Refusal::PerIp => "max_connections_per_ip reached for this address",
        };
        warn!(listener = %local, peer = %peer, why, "connection refused");
    }
}

/// One accepted connection and what serving it needs.
struct Conn {
    peer: SocketAddr,
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stop: watch::Receiver<bool>,
    limits: Limits,
    stats: Arc<ListenerStats>,
}

impl Conn {
    /// Serves the connection until it ends, or until shutdown asks it to finish its
    /// requests. HTTP/1 requests on a connection that can send files (`sender`) carry its
    /// [`FileSender`].
    async fn serve<I>(self, io: I, sender: Option<FileSender>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            peer,
            app,
            builder,
            mut stop,
            limits,
            stats,
        } = self;
        let in_flight = Arc::new(InFlight::default());
        let io = Guarded::new(io, in_flight.clone(), &limits, stats.clone());
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let guard = in_flight.start();
            let mut req = req.map(axum::body::Body::new);
            req.extensions_mut().insert(ConnectInfo(peer));
            if let Some(sender) = &sender
                && req.version() <= http::Version::HTTP_11
            {
                req.extensions_mut().insert(sender.clone());
            }
            let mut app = app.clone();
            async move {
                let resp = tower_service::Service::call(&mut app, req).await?;
                Ok::<_, std::convert::Infallible>(resp.map(|body| GuardedBody::new(body, guard)))
            }
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
            if e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
            {
                stats.head_timed_out();
            }
            debug!(peer = %peer, error = %e, "connection ended with an error");
        }
    }
}
