//! The GeoIP router (`edgecache route`): sends each client to its nearest healthy PoP by an
//! HTTP API (`GET /v1/route`), a 302 redirect for any other path, and GeoDNS.
//!
//! # Layout
//! - [`config`]: the `[router]` table, its defaults and `validate()`.
//! - [`args`]: the flags of `edgecache route` and `--pop NAME=URL@LAT,LON` specs.
//! - [`geo`]: where a client is (local test ranges, MaxMind databases) and distances.
//! - [`health`]: the `/healthz` probe loops and the shared up / down view.
//! - [`select`]: PoPs ordered for one client; the origin when all are down.
//! - [`http`]: the HTTP routes.
//! - [`dashboard`]: the live dashboard page and its JSON, from the PoPs' admin `/stats`.
//! - [`dns`]: the hickory request handler for the zone.

pub mod args;
pub mod config;
pub mod dashboard;
pub mod dns;
pub mod geo;
pub mod health;
pub mod http;
pub mod metrics;
pub mod select;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::ServerFuture;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use args::{RouteArgs, config_from, parse_pop_spec};
pub use config::{DashboardConfig, HealthConfig, PopConfig, RouterConfig};

use dashboard::Dashboard;
use dns::GeoDns;
use geo::GeoDb;
use select::RouteTable;

/// How long a DNS-over-TCP connection may sit idle before it is closed.
const DNS_TCP_IDLE: Duration = Duration::from_secs(10);

/// Everything that can go wrong in the router, from its config to one request.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// A config value is unusable; `key` is its dotted path, e.g. `router.pops[1].lat`.
    #[error("{key}: {message}")]
    Config { key: String, message: String },
    /// A GeoIP database could not be read.
    #[error("router.geoip: cannot open {}: {source}", path.display())]
    GeoIp {
        path: PathBuf,
        #[source]
        source: maxminddb::MaxMindDbError,
    },
    /// The request is malformed; the text says what (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// A listener failed.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The DNS server stopped with an error.
    #[error("dns: {0}")]
    Dns(#[source] hickory_proto::ProtoError),
    /// The health-probe HTTP client could not be built.
    #[error("health probe client: {0}")]
    Client(#[source] reqwest::Error),
    /// A server task panicked.
    #[error("task failed: {0}")]
    Task(String),
}

impl RouterError {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        RouterError::Config {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Serves the HTTP API on `http` and, when given, GeoDNS on the UDP socket and TCP listener
/// of `dns`, probing every PoP, until `shutdown` completes.
pub async fn run(
    http: TcpListener,
    dns: Option<(UdpSocket, TcpListener)>,
    config: RouterConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RouterError> {
    config.validate()?;
    let paths = config.geoip.clone();
    let geo = tokio::task::spawn_blocking(move || GeoDb::open(&paths))
        .await
        .map_err(|err| RouterError::Task(err.to_string()))??;
    let pops = select::pops_of(&config)?;
    // Dropping this set (when `run` returns) stops the probes.
    let mut probes = JoinSet::new();
    let health = health::spawn_probes(&pops, &config.health, &mut probes)?;
    let dashboard = if config.dashboard.enabled {
        let dashboard = Arc::new(Dashboard::new(&config, health.clone())?);
        probes.spawn(dashboard.clone().sample_forever());
        Some(dashboard)
    } else {
        None
    };
    let table = Arc::new(RouteTable::new(&config, geo, health)?);

    let http_addr = http.local_addr().map_err(|source| RouterError::Io {
        context: "router.listen",
        source,
    })?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers: JoinSet<Result<(), RouterError>> = JoinSet::new();
    let app = http::app(table.clone(), dashboard);
    let mut stop = stop_rx.clone();
    servers.spawn(async move {
        // The shared listener: request-head and idle timeouts, connection caps.
        edgecache_tls::serve(http, app, edgecache_tls::Serve::plain(), async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(|source| RouterError::Io {
            context: "router.listen: serve",
            source,
        })
    });

    let mut dns_addr = None;
    if let Some((udp, tcp)) = dns {
        dns_addr = udp.local_addr().ok();
        let mut server = ServerFuture::new(GeoDns::new(table.clone(), &config.zone_name())?);
        server.register_socket(udp);
        server.register_listener(tcp, DNS_TCP_IDLE);
        let mut stop = stop_rx.clone();
        servers.spawn(async move {
            let failed = tokio::select! {
                result = server.block_until_done() => Some(result),
                _ = stop.wait_for(|s| *s) => None,
            };
            match failed {
                Some(result) => result.map_err(RouterError::Dns),
                None => server.shutdown_gracefully().await.map_err(RouterError::Dns),
            }
        });
    }
    tracing::info!(
        http = %http_addr,
        dns = ?dns_addr,
        zone = %config.zone_name(),
        pops = table.pops().len(),
        geoip = config.geoip.len(),
        "router serving"
    );

    // Until shutdown, or until one server fails (which stops the others).
    let mut shutdown = std::pin::pin!(shutdown);
    let mut stopping = false;
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            () = &mut shutdown, if !stopping => {
                stopping = true;
                stop_tx.send_replace(true);
            }
            joined = servers.join_next() => {
                let Some(joined) = joined else { break };
                let result = joined.map_err(|err| RouterError::Task(err.to_string())).and_then(|r| r);
                if let Err(err) = result {
                    tracing::error!(error = %err, "router server failed");
                    if outcome.is_ok() {
                        outcome = Err(err);
                    }
                }
                stopping = true;
                stop_tx.send_replace(true);
            }
        }
    }
    drop(probes);
    tracing::info!("router stopped");
    outcome
}
