//! Edge configuration: the `[edge]` table of `edgecache.toml`, with defaults and validation.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod units;
mod validate;

pub use edgecache_tls::TlsConfig;
pub use units::{ByteSize, HumanDuration};

/// Everything an edge node needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Public listener.
    pub listen: String,
    /// Admin listener (health, metrics, stats, purge). Keep it on loopback.
    pub admin: String,
    /// Bearer token the admin listener's mutations (`POST /purge`, `POST /reload`) require.
    /// None: they are open to whoever reaches the admin listener.
    pub admin_token: Option<Secret>,
    /// PoP name, shown in `Cache-Status` (`edgecache-<pop>`).
    pub pop: String,
    /// Origins, tried in order.
    pub origins: Vec<OriginEntry>,
    /// A parent PoP (shield): misses go there first (it caches too), then to the origins
    /// if it fails.
    pub parent: Option<String>,
    pub memory: MemoryConfig,
    /// The disk tier; off unless `dir` is set.
    pub disk: DiskConfig,
    pub cache: CacheConfig,
    pub timeouts: TimeoutConfig,
    pub purge: PurgeConfig,
    /// What the edge tells the origin about a request: forwarding headers and the headers
    /// it removes.
    pub forwarding: ForwardingConfig,
    /// What one client may hold of the public listener: timeouts and connection caps.
    pub limits: LimitsConfig,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) on the public listener with this certificate.
    pub tls: Option<TlsConfig>,
    /// How long shutdown waits for responses in flight before closing their connections.
    pub shutdown_grace: HumanDuration,
    /// Access-log lines (target `edgecache::access`) written per second at most; the rest
    /// are counted on the next line. 0 turns the access log off.
    pub access_log_per_second: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin: "127.0.0.1:9080".into(),
            admin_token: None,
            pop: "local".into(),
            origins: Vec::new(),
            parent: None,
            memory: MemoryConfig::default(),
            disk: DiskConfig::default(),
            cache: CacheConfig::default(),
            purge: PurgeConfig::default(),
            timeouts: TimeoutConfig::default(),
            forwarding: ForwardingConfig::default(),
            limits: LimitsConfig::default(),
            tls: None,
            shutdown_grace: HumanDuration(Duration::from_secs(30)),
            access_log_per_second: 100,
        }
    }
}

/// A credential from the config: never shown by `Debug`, so never logged.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

/// One origin: an HTTP(S) server (`url`) or an S3-style bucket (`s3`), exactly one of them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginEntry {
    /// Base URL of an HTTP(S) origin, e.g. `http://127.0.0.1:8000`.
    #[serde(default)]
    pub url: Option<String>,
    /// An S3-style bucket.
    #[serde(default)]
    pub s3: Option<S3Origin>,
    /// How long the origin is skipped after failing 3 times in a row before live traffic
    /// probes it again. Default 10 s.
    #[serde(default)]
    pub retry_after: Option<HumanDuration>,
    /// PEM file of the CA(s) an HTTPS origin's certificate is verified against, instead of
    /// the system's roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

impl OriginEntry {
    /// An HTTP(S) origin at `url`.
    pub fn http(url: impl Into<String>) -> Self {
        Self {
            url: Some(url.into()),
            ..Self::default()
        }
    }

    /// An S3-style origin.
    pub fn s3(s3: S3Origin) -> Self {
        Self {
            s3: Some(s3),
            ..Self::default()
        }
    }

    /// How long the origin is skipped after repeated failures.
    pub fn retry_after(&self) -> Duration {
        self.retry_after.map_or(Duration::from_secs(10), |d| d.0)
    }
}

/// An S3-style bucket as an origin. Without `access_key_id` / `secret_access_key` the
/// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) environment is used,
/// and without either, requests go unsigned (a public bucket).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Origin {
    /// e.g. `https://s3.eu-west-1.amazonaws.com` or `http://127.0.0.1:9000`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// `{endpoint}/{bucket}/{key}` when true, `{bucket}.{endpoint host}/{key}` when false.
    #[serde(default = "default_true")]
    pub path_style: bool,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// The key served for `/` and for paths ending in `/`.
    #[serde(default = "default_index")]
    pub index: String,
    /// How long a missing key (404 without its own `Cache-Control`) is cached.
    #[serde(default = "default_negative_ttl")]
    pub negative_ttl: HumanDuration,
}

fn default_negative_ttl() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

fn default_true() -> bool {
    true
}

fn default_index() -> String {
    "index.html".into()
}

impl S3Origin {
    /// A bucket with defaults: path-style, no credentials in the config, `index.html`.
    pub fn new(
        endpoint: impl Into<String>,
        bucket: impl Into<String>,
        region: impl Into<String>,
    ) -> Self {
        Self {
            endpoint: endpoint.into(),
            bucket: bucket.into(),
            region: region.into(),
            path_style: true,
            access_key_id: None,
            secret_access_key: None,
            index: default_index(),
            negative_ttl: default_negative_ttl(),
        }
    }
}

// Credentials stay out of logs and error messages, even when a whole config is printed.
impl fmt::Debug for S3Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |v: &Option<String>| v.as_ref().map(|_| "<hidden>");
        f.debug_struct("S3Origin")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("access_key_id", &hidden(&self.access_key_id))
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("index", &self.index)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Bytes the memory tier may hold (bodies + headers).
    pub size: ByteSize,
    /// Larger bodies are not kept in memory.
    pub max_object_size: ByteSize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            size: ByteSize(256 << 20),
            max_object_size: ByteSize(8 << 20),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PurgeConfig {
    /// The purge API to follow (`http://127.0.0.1:8070`); none, no remote purges.
    pub api: Option<String>,
    /// Bearer token for the purge API.
    pub token: Option<String>,
    /// Accept the `PURGE` method on the public listener. Off: anyone could empty the
    /// cache. Use the admin listener's `POST /purge` instead.
    pub allow_purge_method: bool,
    /// How long one long-poll for new purges waits.
    pub poll_wait: HumanDuration,
    /// PEM file of the CA(s) an HTTPS purge API is verified against, instead of the
    /// system's roots.
    pub ca: Option<PathBuf>,
}

impl Default for PurgeConfig {
    fn default() -> Self {
        Self {
            api: None,
            token: None,
            allow_purge_method: false,
            poll_wait: HumanDuration(Duration::from_secs(10)),
            ca: None,
        }
    }
}

impl fmt::Debug for PurgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PurgeConfig")
            .field("api", &self.api)
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .field("allow_purge_method", &self.allow_purge_method)
            .field("poll_wait", &self.poll_wait)
            .field("ca", &self.ca)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskConfig {
    /// Directory of the disk tier (created if missing). No directory, no disk tier.
    pub dir: Option<std::path::PathBuf>,
    /// Bytes of bodies the disk tier may hold.
    pub size: ByteSize,
}

impl Default for DiskConfig {
    fn default() -> Self {
        Self {
            dir: None,
            size: ByteSize(10 << 30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Query parameters left out of cache keys; `name*` matches a prefix.
    pub ignored_query_params: Vec<String>,
    /// Heuristic freshness as a fraction of the time since `Last-Modified`.
    pub heuristic_fraction: f64,
    /// Longest heuristic freshness lifetime.
    pub heuristic_max: HumanDuration,
    /// How stale a cached response may be and still be served when the origin is down or
    /// answers 5xx, if the response set no longer `stale-if-error`. Responses with
    /// `must-revalidate`, `proxy-revalidate`, `s-maxage` or `no-cache` are never served stale.
    pub stale_if_error: HumanDuration,
    /// What is done with a response carrying `Set-Cookie`.
    pub set_cookie: SetCookie,
}

/// How the cache treats responses that set a cookie: one visitor's session cookie must not
/// be replayed to every later visitor of the same URL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SetCookie {
    /// Stored without its `Set-Cookie` (the client whose request fetched it still gets the
    /// origin's field); not stored at all on heuristic freshness (nginx and Varnish store
    /// neither).
    #[default]
    Strip,
    /// Never stored: every request for it reaches the origin.
    Bypass,
    /// Stored and replayed with its `Set-Cookie`, as RFC 9111 allows a shared cache to.
    Store,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ignored_query_params: vec!["utm_*".into(), "fbclid".into(), "gclid".into()],
            heuristic_fraction: 0.1,
            heuristic_max: HumanDuration(Duration::from_secs(86_400)),
            stale_if_error: HumanDuration(Duration::from_secs(86_400)),
            set_cookie: SetCookie::Strip,
        }
    }
}

/// The `[edge.limits]` table: the public listener's [`edgecache_tls::Limits`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// An HTTP/1 request head must arrive whole within this.
    pub request_head_timeout: HumanDuration,
    /// A connection with no request in progress is closed after this.
    pub idle_timeout: HumanDuration,
    /// A write that makes no progress for this long closes the connection.
    pub send_timeout: HumanDuration,
    /// Connections open at once; more are refused.
    pub max_connections: usize,
    /// Connections open at once from one client address; more are refused.
    pub max_connections_per_ip: usize,
    /// HTTP/2 streams one connection may have open at once.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 request header list size.
    pub h2_max_header_list_size: ByteSize,
    /// HTTP/2 streams a client may reset before the edge saw them, per connection.
    pub h2_max_pending_resets: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = edgecache_tls::Limits::default();
        Self {
            request_head_timeout: HumanDuration(l.request_head_timeout),
            idle_timeout: HumanDuration(l.idle_timeout),
            send_timeout: HumanDuration(l.send_timeout),
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            h2_max_concurrent_streams: l.h2_max_concurrent_streams,
            h2_max_header_list_size: ByteSize(u64::from(l.h2_max_header_list_size)),
            h2_max_pending_resets: l.h2_max_pending_resets,
        }
    }
}

impl LimitsConfig {
    /// The listener limits these settings describe.
    pub fn limits(&self) -> edgecache_tls::Limits {
        edgecache_tls::Limits {
            request_head_timeout: self.request_head_timeout.0,
            idle_timeout: self.idle_timeout.0,
            send_timeout: self.send_timeout.0,
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams,
            h2_max_header_list_size: u32::try_from(self.h2_max_header_list_size.0)
                .unwrap_or(u32::MAX),
            h2_max_pending_resets: self.h2_max_pending_resets,
        }
    }
}

/// The `[edge.forwarding]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardingConfig {
    /// Peers (addresses or CIDR blocks, e.g. a shield PoP or a load balancer) whose
    /// `X-Forwarded-For`, `X-Forwarded-Host`, `X-Forwarded-Proto` and `Forwarded` are kept
    /// and extended. From anyone else the edge writes them afresh.
    pub trusted_peers: Vec<String>,
    /// Request headers removed before a request goes upstream: headers some origins and
    /// frameworks act on (rewriting the URL, the method or the scheme) that are not part of
    /// the cache key. Replaces the default list.
    pub strip_headers: Vec<String>,
}

/// Headers known to make origins answer for another URL, method, scheme or host than the
/// one keyed, or to spoof the client's address.
pub const DEFAULT_STRIP_HEADERS: [&str; 16] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-host",
    "x-original-host",
    "x-url-scheme",
    "front-end-https",
    "x-real-ip",
    "true-client-ip",
];

impl Default for ForwardingConfig {
    fn default() -> Self {
        Self {
            trusted_peers: Vec::new(),
            strip_headers: DEFAULT_STRIP_HEADERS
                .iter()
                .map(|&h| h.to_owned())
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    /// TCP (and TLS) connect to the origin.
    pub connect: HumanDuration,
    /// From sending the request to the response head.
    pub first_byte: HumanDuration,
    /// Longest pause between two body reads.
    pub idle: HumanDuration,
    /// The whole origin exchange, body included.
    pub total: HumanDuration,
    /// Idle origin connections are closed after this. Keep it below the origin's own
    /// keep-alive timeout (5 s for Node.js, 75 s for nginx) so a request never races the
    /// origin closing the connection it was sent on.
    pub pool_idle: HumanDuration,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            connect: HumanDuration(Duration::from_secs(5)),
            first_byte: HumanDuration(Duration::from_secs(30)),
            idle: HumanDuration(Duration::from_secs(30)),
            total: HumanDuration(Duration::from_secs(600)),
            pool_idle: HumanDuration(Duration::from_secs(4)),
        }
    }
}
