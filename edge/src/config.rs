//! Edge configuration: the `[edge]` table of `edgecache.toml`, with defaults and validation.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::EdgeError;

/// Everything an edge node needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// Public listener.
    pub listen: String,
    /// Admin listener (health, metrics, stats, purge). Keep it on loopback.
    pub admin: String,
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
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin: "127.0.0.1:9080".into(),
            pop: "local".into(),
            origins: Vec::new(),
            parent: None,
            memory: MemoryConfig::default(),
            disk: DiskConfig::default(),
            cache: CacheConfig::default(),
            purge: PurgeConfig::default(),
            timeouts: TimeoutConfig::default(),
        }
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
}

impl Default for PurgeConfig {
    fn default() -> Self {
        Self {
            api: None,
            token: None,
            allow_purge_method: false,
            poll_wait: HumanDuration(Duration::from_secs(10)),
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
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ignored_query_params: vec!["utm_*".into(), "fbclid".into(), "gclid".into()],
            heuristic_fraction: 0.1,
            heuristic_max: HumanDuration(Duration::from_secs(86_400)),
            stale_if_error: HumanDuration(Duration::from_secs(86_400)),
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

impl EdgeConfig {
    /// Checks every field, naming the first bad key.
    pub fn validate(&self) -> Result<(), EdgeError> {
        let bad = |key: &str, why: String| Err(EdgeError::Config(format!("{key}: {why}")));
        for (key, addr) in [("edge.listen", &self.listen), ("edge.admin", &self.admin)] {
            if let Err(e) = addr.parse::<SocketAddr>() {
                return bad(key, format!("{addr:?} is not an address: {e}"));
            }
        }
        if self.pop.is_empty()
            || !self
                .pop
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return bad(
                "edge.pop",
                format!("{:?} must be letters, digits, '-' or '_'", self.pop),
            );
        }
        if self.origins.is_empty() {
            return bad("edge.origins", "at least one origin is required".into());
        }
        for (i, o) in self.origins.iter().enumerate() {
            validate_origin(&format!("edge.origins[{i}]"), o).map_err(EdgeError::Config)?;
        }
        if let Some(parent) = &self.parent {
            match reqwest::Url::parse(parent) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {
                    let own = format!(
                        "{}:{}",
                        u.host_str().unwrap_or(""),
                        u.port_or_known_default().unwrap_or(0)
                    );
                    if own == self.listen || format!("[{}]", own) == self.listen {
                        return bad(
                            "edge.parent",
                            format!("{parent:?} is this edge itself: a loop"),
                        );
                    }
                }
                _ => return bad("edge.parent", format!("{parent:?} must be an http(s) URL")),
            }
        }
        if let Some(api) = &self.purge.api {
            match reqwest::Url::parse(api) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return bad("edge.purge.api", format!("{api:?} must be an http(s) URL")),
            }
            if self.purge.token.as_deref().is_none_or(str::is_empty) {
                return bad("edge.purge.token", "required with edge.purge.api".into());
            }
        }
        if self.disk.dir.is_some() && self.disk.size.0 == 0 {
            return bad("edge.disk.size", "must be more than 0".into());
        }
        if self.memory.size.0 == 0 {
            return bad("edge.memory.size", "must be more than 0".into());
        }
        if !(0.0..=1.0).contains(&self.cache.heuristic_fraction) {
            return bad(
                "edge.cache.heuristic_fraction",
                "must be between 0 and 1".into(),
            );
        }
        for (key, d) in [
            ("edge.timeouts.connect", self.timeouts.connect),
            ("edge.timeouts.first_byte", self.timeouts.first_byte),
            ("edge.timeouts.idle", self.timeouts.idle),
            ("edge.timeouts.total", self.timeouts.total),
        ] {
            if d.0.is_zero() {
                return bad(key, "must be more than 0".into());
            }
        }
        Ok(())
    }
}

/// Checks one `[[edge.origins]]` entry; the error starts with the bad key.
fn validate_origin(key: &str, o: &OriginEntry) -> Result<(), String> {
    let http_url = |sub: &str, url: &str| match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        Ok(_) => Err(format!(
            "{key}.{sub}: {url:?} must be an http:// or https:// URL"
        )),
        Err(e) => Err(format!("{key}.{sub}: {url:?}: {e}")),
    };
    if o.retry_after.is_some_and(|d| d.0.is_zero()) {
        return Err(format!("{key}.retry_after: must be more than 0"));
    }
    match (&o.url, &o.s3) {
        (Some(_), Some(_)) => Err(format!("{key}: set one of url and s3, not both")),
        (None, None) => Err(format!("{key}: set url (an HTTP origin) or s3 (a bucket)")),
        (Some(url), None) => http_url("url", url).map(drop),
        (None, Some(s3)) => {
            let endpoint = http_url("s3.endpoint", &s3.endpoint)?;
            if endpoint.query().is_some() {
                return Err(format!("{key}.s3.endpoint: must not have a query"));
            }
            let bucket_ok = (3..=63).contains(&s3.bucket.len())
                && s3.bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !bucket_ok {
                return Err(format!(
                    "{key}.s3.bucket: {:?} is not a bucket name (3-63 of a-z, 0-9, '-', '.')",
                    s3.bucket
                ));
            }
            if !s3.path_style
                && endpoint
                    .host_str()
                    .is_some_and(|h| h.parse::<std::net::IpAddr>().is_ok() || h.starts_with('['))
            {
                return Err(format!(
                    "{key}.s3.path_style: false needs an endpoint with a host name, not an IP address"
                ));
            }
            if s3.region.is_empty() {
                return Err(format!("{key}.s3.region: must not be empty"));
            }
            match (&s3.access_key_id, &s3.secret_access_key) {
                (Some(_), None) => {
                    return Err(format!(
                        "{key}.s3.secret_access_key: required with access_key_id"
                    ));
                }
                (None, Some(_)) => {
                    return Err(format!(
                        "{key}.s3.access_key_id: required with secret_access_key"
                    ));
                }
                (Some(id), Some(_)) if id.is_empty() => {
                    return Err(format!("{key}.s3.access_key_id: must not be empty"));
                }
                _ => {}
            }
            if s3.index.is_empty() || s3.index.starts_with('/') {
                return Err(format!(
                    "{key}.s3.index: {:?} must be a key such as \"index.html\"",
                    s3.index
                ));
            }
            Ok(())
        }
    }
}

/// A size in bytes, written `1048576`, `"512KiB"`, `"256MiB"`, `"10GiB"` or `"1GB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a size (e.g. 256MiB)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            "t" | "tb" => 1_000_000_000_000,
            "tib" => 1 << 40,
            other => return Err(format!("{s:?}: unknown unit {other:?} (use KiB, MiB, GiB)")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration, written `"250ms"`, `"5s"`, `"10m"`, `"1h"` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a duration (e.g. 5s)"))?;
        let d = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "" | "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?} (use ms, s, m, h, d)"
                ));
            }
        };
        Ok(HumanDuration(d))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(HumanDuration(Duration::from_secs(n))),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_units() {
        assert_eq!("256MiB".parse::<ByteSize>().unwrap().0, 256 << 20);
        assert_eq!("10GiB".parse::<ByteSize>().unwrap().0, 10 << 30);
        assert_eq!("1GB".parse::<ByteSize>().unwrap().0, 1_000_000_000);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert!("12XB".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn durations_with_units() {
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "2m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(120)
        );
        assert!("5 weeks".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = EdgeConfig::default();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("edge.origins"), "{err}");
        c.origins.push(OriginEntry::http("ftp://x"));
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("edge.origins[0].url"), "{err}");
        c.origins[0].url = Some("http://127.0.0.1:8000".into());
        c.validate().unwrap();
        c.pop = "bad pop".into();
        assert!(c.validate().unwrap_err().to_string().contains("edge.pop"));
    }

    #[test]
    fn origins_need_exactly_one_of_url_and_s3() {
        let mut c = EdgeConfig::default();
        c.origins.push(OriginEntry::http("http://127.0.0.1:8000"));
        c.origins.push(OriginEntry::default());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("edge.origins[1]: set url"), "{err}");
        c.origins[1] = OriginEntry::s3(S3Origin::new(
            "http://127.0.0.1:9000",
            "assets",
            "us-east-1",
        ));
        c.validate().unwrap();
        c.origins[1].url = Some("http://127.0.0.1:8001".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("edge.origins[1]: set one of url and s3"),
            "{err}"
        );
        c.origins[1].url = None;
        c.origins[1].s3.as_mut().unwrap().bucket = "No_Such".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("edge.origins[1].s3.bucket"), "{err}");
        c.origins[1].s3.as_mut().unwrap().bucket = "assets".into();
        c.origins[1].s3.as_mut().unwrap().access_key_id = Some("AKID".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("edge.origins[1].s3.secret_access_key"),
            "{err}"
        );
        c.origins[1].retry_after = Some(HumanDuration(Duration::ZERO));
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("edge.origins[1].retry_after"), "{err}");
    }

    #[test]
    fn s3_origin_from_toml_hides_the_secret() {
        let c: EdgeConfig = toml::from_str(
            r#"
            [[origins]]
            s3 = { endpoint = "http://127.0.0.1:9000", bucket = "assets", region = "us-east-1", access_key_id = "AKIDEXAMPLE", secret_access_key = "very-secret-key" }
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        let s3 = c.origins[0].s3.as_ref().unwrap();
        assert!(s3.path_style);
        assert_eq!(s3.index, "index.html");
        let debug = format!("{c:?}");
        assert!(!debug.contains("very-secret-key"), "{debug}");
        assert!(!debug.contains("AKIDEXAMPLE"), "{debug}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<EdgeConfig>("lisen = \"x\"").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }
}
