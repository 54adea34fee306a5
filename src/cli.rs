//! The command line: one subcommand per server. Flags override the config file.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use edgecache_edge::EdgeConfig;
use edgecache_edge::config::{ByteSize, OriginEntry};
use edgecache_origin::OriginConfig;
use edgecache_purge_api::{PurgeApiConfig, PurgeClient, PurgeRequest};

use crate::config::{ConfigError, load_optional};
use crate::telemetry::LogFormat;
use edgecache_tls::TlsConfig;

#[derive(Debug, Parser)]
#[command(name = "edgecache", version, about = "A CDN you run yourself")]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole CDN on one machine: origin, three PoPs, purge API, router.
    Up(crate::up::UpArgs),
    /// Run an edge node (PoP): a shared HTTP cache in front of an origin.
    Edge(EdgeArgs),
    /// Run the static origin server.
    Origin(OriginArgs),
    /// Run the purge API: the durable purge log every PoP follows.
    PurgeApi(PurgeApiArgs),
    /// Purge content from every PoP through the purge API.
    Purge(PurgeArgs),
    /// The GeoIP router: HTTP routing API, 302 redirector and GeoDNS.
    Route(crate::router::RouteArgs),
    /// Fetch a path through the nearest healthy PoP, falling back to the next, then the origin.
    Get(crate::client::GetArgs),
    /// Prefetch a list of URL paths into PoPs, so first visitors get hits.
    Warm(crate::warm::WarmArgs),
    /// Parse and validate a config file: every table, every key; non-zero exit names the bad key.
    CheckConfig(CheckConfigArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    /// The config file (`edgecache.toml`).
    pub file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct PurgeApiArgs {
    /// Config file (TOML, `[purge_api]` table).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen address; port 0 picks a free port.
    #[arg(long)]
    pub listen: Option<String>,
    /// Bearer token clients and edges must present.
    #[arg(long, env = "EDGECACHE_PURGE_TOKEN")]
    pub token: Option<String>,
    /// Where the purge log lives.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    /// The purge API.
    #[arg(long, default_value = "http://127.0.0.1:8070")]
    pub api: String,
    /// Bearer token.
    #[arg(long, env = "EDGECACHE_PURGE_TOKEN")]
    pub token: String,
    /// A URL path with its query (`/app.js?v=2`) or a full URL; repeatable.
    #[arg(long = "url")]
    pub urls: Vec<String>,
    /// A path prefix (`/img/`); repeatable.
    #[arg(long = "prefix")]
    pub prefixes: Vec<String>,
    /// A surrogate key / cache tag; repeatable.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Everything.
    #[arg(long)]
    pub all: bool,
    /// Mark stale instead of removing.
    #[arg(long)]
    pub soft: bool,
    /// Wait until every live PoP has applied it, and print how long that took.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// PEM file of the CA to verify an HTTPS purge API against (default: system roots).
    #[arg(long)]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct EdgeArgs {
    /// Config file (TOML, `[edge]` table).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Origin base URL (replaces the config's origins).
    #[arg(long)]
    pub origin: Option<String>,
    /// Public listen address; port 0 picks a free port.
    #[arg(long)]
    pub listen: Option<String>,
    /// Admin listen address (health, metrics, stats).
    #[arg(long)]
    pub admin: Option<String>,
    /// Bearer token the admin listener's POST /purge and POST /reload require.
    #[arg(long, env = "EDGECACHE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// PoP name, as shown in `Cache-Status`.
    #[arg(long)]
    pub pop: Option<String>,
    /// Memory tier size, e.g. 256MiB.
    #[arg(long)]
    pub memory_size: Option<ByteSize>,
    /// A parent PoP (shield) to fetch misses from before the origin.
    #[arg(long)]
    pub parent: Option<String>,
    /// Directory of the disk tier (enables it).
    #[arg(long)]
    pub disk_dir: Option<PathBuf>,
    /// Disk tier size, e.g. 10GiB.
    #[arg(long)]
    pub disk_size: Option<ByteSize>,
    /// The purge API to follow.
    #[arg(long)]
    pub purge_api: Option<String>,
    /// Bearer token for the purge API.
    #[arg(long, env = "EDGECACHE_PURGE_TOKEN")]
    pub purge_token: Option<String>,
    /// PEM file of the CA to verify an HTTPS purge API against.
    #[arg(long)]
    pub purge_ca: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct OriginArgs {
    /// Config file (TOML, `[origin]` table).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Directory to serve.
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Listen address; port 0 picks a free port.
    #[arg(long)]
    pub listen: Option<String>,
    /// Serve dot-files under this path prefix, e.g. /.well-known/ (repeatable; replaces
    /// the config's allow_dot_paths). Dot-files are 404 otherwise.
    #[arg(long = "allow-dot-path", value_name = "PREFIX")]
    pub allow_dot_paths: Vec<String>,
}

/// Runs the chosen command to completion.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    raise_descriptor_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => crate::up::up(args).await,
            Command::Edge(args) => run_edge(args).await,
            Command::Origin(args) => run_origin(args).await,
            Command::PurgeApi(args) => run_purge_api(args).await,
            Command::Purge(args) => run_purge(args).await,
            Command::Get(args) => crate::client::get_command(args).await,
            Command::Warm(args) => crate::warm::warm_command(args).await,
            Command::Route(args) => run_route(args).await,
            Command::CheckConfig(args) => {
                print!("{}", crate::config::check_config(&args.file)?);
                Ok(())
            }
        }
    })
}

/// The edge config from the file, with flags applied on top.
pub fn edge_config(args: &EdgeArgs) -> Result<EdgeConfig, ConfigError> {
    let file = load_optional(args.config.as_deref())?;
    let mut config = file.edge.unwrap_or_default();
    if let Some(origin) = &args.origin {
        config.origins = vec![OriginEntry::http(origin.clone())];
    }
    if let Some(listen) = &args.listen {
        config.listen.clone_from(listen);
    }
    if let Some(admin) = &args.admin {
        config.admin.clone_from(admin);
    }
    if let Some(token) = &args.admin_token {
        config.admin_token = Some(edgecache_edge::config::Secret(token.clone()));
    }
    if let Some(pop) = &args.pop {
        config.pop.clone_from(pop);
    }
    if let Some(size) = args.memory_size {
        config.memory.size = size;
    }
    if let Some(parent) = &args.parent {
        config.parent = Some(parent.clone());
    }
    if let Some(dir) = &args.disk_dir {
        config.disk.dir = Some(dir.clone());
    }
    if let Some(size) = args.disk_size {
        config.disk.size = size;
    }
    if let Some(api) = &args.purge_api {
        config.purge.api = Some(api.clone());
    }
    if let Some(token) = &args.purge_token {
        config.purge.token = Some(token.clone());
    }
    if let Some(ca) = &args.purge_ca {
        config.purge.ca = Some(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(TlsConfig::new(cert, key));
    }
    config
        .validate()
        .map_err(|e| ConfigError::from_validation(&e.to_string()))?;
    Ok(config)
}

/// Prints a server's address line on stdout for the script or supervisor that started it.
/// A server keeps running when nobody reads stdout any more (closed pipe): the line is then
/// only logged, where `println!` would have panicked and taken the server down with it.
/// Raises the soft limit on open descriptors to the hard limit. Every connection and every
/// body file the disk tier keeps open takes one, and many systems start services with a
/// soft limit of 1024, far below what a loaded edge needs (and below the hard limit).
fn raise_descriptor_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let below = match (limit.current, limit.maximum) {
        (Some(current), Some(maximum)) => current < maximum,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if !below {
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::debug!(
            from = ?limit.current,
            to = ?limit.maximum,
            "raised the soft limit on open descriptors"
        ),
        // An unlimited hard limit cannot be the soft one (the kernel caps descriptors).
        Err(e) => tracing::debug!(
            error = %e,
            limit = ?limit.current,
            "the soft limit on open descriptors stays as it is"
        ),
    }
}

fn announce(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        tracing::warn!(error = %e, line, "stdout is closed; the address line is only logged");
    }
}

async fn run_edge(args: EdgeArgs) -> anyhow::Result<()> {
    let config = edge_config(&args)?;
    let listener = bind(&config.listen, "edge.listen").await?;
    let admin = bind(&config.admin, "edge.admin").await?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    announce(&format!(
        "listening on {scheme}://{}",
        listener.local_addr()?
    ));
    announce(&format!("admin on http://{}", admin.local_addr()?));
    // A reload reads the same file and applies the same flags; without a file there is
    // nothing to reload.
    let options = edgecache_edge::RunOptions {
        config_source: args.config.is_some().then(|| {
            let args = std::sync::Arc::new(args);
            let source: edgecache_edge::ConfigSource =
                std::sync::Arc::new(move || edge_config(&args).map_err(|e| e.keyed_message()));
            source
        }),
        reload_on_sighup: true,
    };
    edgecache_edge::run_with(listener, Some(admin), config, options, shutdown_signal()).await?;
    Ok(())
}

async fn run_origin(args: OriginArgs) -> anyhow::Result<()> {
    let file = load_optional(args.config.as_deref())?;
    let mut config = match (file.origin, &args.root) {
        (Some(mut c), Some(root)) => {
            c.root.clone_from(root);
            c
        }
        (Some(c), None) => c,
        (None, Some(root)) => OriginConfig::new(root.clone()),
        (None, None) => anyhow::bail!("origin.root: give --root DIR or [origin] root in --config"),
    };
    if let Some(listen) = &args.listen {
        config.listen = Some(listen.clone());
    }
    if !args.allow_dot_paths.is_empty() {
        config.allow_dot_paths.clone_from(&args.allow_dot_paths);
    }
    config.validate()?;
    let addr = config
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:8000".into());
    let listener = bind(&addr, "origin.listen").await?;
    announce(&format!("listening on http://{}", listener.local_addr()?));
    edgecache_origin::run(listener, config, shutdown_signal()).await?;
    Ok(())
}

async fn run_purge_api(args: PurgeApiArgs) -> anyhow::Result<()> {
    let file = load_optional(args.config.as_deref())?;
    let mut config = file
        .purge_api
        .unwrap_or_else(|| PurgeApiConfig::new("", "./edgecache-data"));
    if let Some(listen) = &args.listen {
        config.listen.clone_from(listen);
    }
    if let Some(token) = &args.token {
        config.token.clone_from(token);
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir.clone_from(dir);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(TlsConfig::new(cert, key));
    }
    config.validate()?;
    let listener = bind(&config.listen, "purge_api.listen").await?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    announce(&format!(
        "listening on {scheme}://{}",
        listener.local_addr()?
    ));
    edgecache_purge_api::run(listener, config, shutdown_signal()).await?;
    Ok(())
}

async fn run_purge(args: PurgeArgs) -> anyhow::Result<()> {
    let request = PurgeRequest {
        urls: args.urls,
        prefixes: args.prefixes,
        tags: args.tags,
        all: args.all,
        soft: args.soft,
    };
    if request.is_empty() {
        anyhow::bail!("name something to purge: --url, --prefix, --tag or --all");
    }
    let client = match &args.ca {
        None => PurgeClient::new(&args.api, &args.token)?,
        Some(ca) => {
            let pem = edgecache_tls::cert::load_ca_pem(ca).context("--ca")?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem).context("--ca")?;
            let http = reqwest::Client::builder().tls_certs_only(roots).build()?;
            PurgeClient::with_http(http, &args.api, &args.token)?
        }
    };
    let started = std::time::Instant::now();
    let accepted = client.purge(&request).await?;
    println!("accepted {} (seq {})", accepted.id, accepted.seq);
    if args.wait {
        let status = client
            .wait_complete(&accepted.id, std::time::Duration::from_secs(args.timeout))
            .await?;
        for pop in &status.pops {
            let when = pop.applied_at.map_or("not applied".to_owned(), |t| {
                format!("applied +{} ms", t.saturating_sub(status.accepted_at))
            });
            let live = if pop.live { "live" } else { "down" };
            println!("  {:<12} {live:<5} {when}", pop.name);
        }
        println!(
            "complete: every live PoP applied it in {} ms",
            started.elapsed().as_millis()
        );
    }
    Ok(())
}

async fn run_route(args: crate::router::RouteArgs) -> anyhow::Result<()> {
    let file = load_optional(args.config.as_deref())?;
    let config = crate::router::config_from(&args, file.router)?;
    let http = bind(&config.listen, "router.listen").await?;
    announce(&format!("listening on http://{}", http.local_addr()?));
    let dns = match &config.dns_listen {
        Some(addr) => {
            // UDP first, then TCP on the same port, so port 0 gives one address for both.
            let udp = tokio::net::UdpSocket::bind(addr)
                .await
                .with_context(|| format!("router.dns_listen: cannot listen on {addr}"))?;
            let at = udp.local_addr()?;
            let tcp = bind(&at.to_string(), "router.dns_listen").await?;
            announce(&format!("dns on {at}"));
            Some((udp, tcp))
        }
        None => None,
    };
    crate::router::run(http, dns, config, shutdown_signal()).await?;
    Ok(())
}

async fn bind(addr: &str, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("{key}: cannot listen on {addr}"))
}

/// Completes on Ctrl-C or SIGTERM — or, for a child of `edgecache up` (which sets
/// `EDGECACHE_SUPERVISED`), when that parent is gone, so no child outlives it.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    let orphaned = async {
        #[cfg(unix)]
        if std::env::var_os("EDGECACHE_SUPERVISED").is_some() {
            let parent = std::os::unix::process::parent_id();
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                if std::os::unix::process::parent_id() != parent {
                    tracing::warn!("supervisor gone");
                    return;
                }
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
        () = orphaned => {}
    }
    tracing::info!("shutting down");
}
