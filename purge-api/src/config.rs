//! Purge API configuration: the `[purge_api]` table, its defaults and `validate()`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use edgecache_tls::TlsConfig;
use serde::Deserialize;

use crate::error::PurgeApiError;

/// The `[purge_api]` config table; every key but `token` has a default.
///
/// ```toml
/// [purge_api]
/// listen = "127.0.0.1:8070"
/// token = "change-me"            # required; edges and `edgecache purge` send the same one
/// data_dir = "./edgecache-data"  # the log lives in DATA_DIR/purge-log
/// rate_per_second = 100.0        # POST /v1/purge per token, on average …
/// burst = 200                    # … and at once
/// pop_timeout_seconds = 15       # a PoP not heard from for this long is not live
/// poll_max_wait_seconds = 10     # longest long-poll; below pop_timeout_seconds
/// max_body_bytes = 1048576       # larger purge bodies get 413
/// max_entries = 1000             # per list (urls, prefixes, tags) in one purge
/// tls = { cert = "cert.pem", key = "key.pem" }  # serve HTTPS (re-read when changed)
/// ```
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeApiConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub token: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default = "default_rate")]
    pub rate_per_second: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
    #[serde(default = "default_pop_timeout")]
    pub pop_timeout_seconds: u64,
    #[serde(default = "default_poll_max_wait")]
    pub poll_max_wait_seconds: u64,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this certificate.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_listen() -> String {
    "127.0.0.1:8070".to_owned()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./edgecache-data")
}
fn default_rate() -> f64 {
    100.0
}
fn default_burst() -> u32 {
    200
}
fn default_pop_timeout() -> u64 {
    15
}
fn default_poll_max_wait() -> u64 {
    10
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_max_entries() -> usize {
    1000
}

/// The token never appears in logs or panics.
impl std::fmt::Debug for PurgeApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgeApiConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .field("data_dir", &self.data_dir)
            .field("rate_per_second", &self.rate_per_second)
            .field("burst", &self.burst)
            .field("pop_timeout_seconds", &self.pop_timeout_seconds)
            .field("poll_max_wait_seconds", &self.poll_max_wait_seconds)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_entries", &self.max_entries)
            .field("tls", &self.tls)
            .finish()
    }
}

impl PurgeApiConfig {
    /// A config with every default and the given token and data dir.
    pub fn new(token: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        PurgeApiConfig {
            listen: default_listen(),
            token: token.into(),
            data_dir: data_dir.into(),
            rate_per_second: default_rate(),
            burst: default_burst(),
            pop_timeout_seconds: default_pop_timeout(),
            poll_max_wait_seconds: default_poll_max_wait(),
            max_body_bytes: default_max_body(),
            max_entries: default_max_entries(),
            tls: None,
        }
    }

    /// The sled directory: `data_dir/purge-log`, so the purge API can share a data dir
    /// with the edges' disk caches (`edgecache up`).
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("purge-log")
    }

    pub fn pop_timeout(&self) -> Duration {
        Duration::from_secs(self.pop_timeout_seconds)
    }

    pub fn poll_max_wait(&self) -> Duration {
        Duration::from_secs(self.poll_max_wait_seconds)
    }

    /// Checks every value, naming the first bad key, e.g. `purge_api.token: must not be empty`.
    pub fn validate(&self) -> Result<(), PurgeApiError> {
        if let Err(err) = self.listen.parse::<SocketAddr>() {
            return Err(PurgeApiError::config(
                "purge_api.listen",
                format!("{:?} is not IP:PORT: {err}", self.listen),
            ));
        }
        if self.token.is_empty() {
            return Err(PurgeApiError::config(
                "purge_api.token",
                "must not be empty",
            ));
        }
        if !self.token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(PurgeApiError::config(
                "purge_api.token",
                "must be printable ASCII without spaces (it travels in a header)",
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(PurgeApiError::config(
                "purge_api.data_dir",
                "must not be empty",
            ));
        }
        if !(self.rate_per_second.is_finite() && self.rate_per_second > 0.0) {
            return Err(PurgeApiError::config(
                "purge_api.rate_per_second",
                "must be a positive number",
            ));
        }
        if self.burst == 0 {
            return Err(PurgeApiError::config(
                "purge_api.burst",
                "must be at least 1",
            ));
        }
        if self.pop_timeout_seconds == 0 {
            return Err(PurgeApiError::config(
                "purge_api.pop_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self.poll_max_wait_seconds == 0 || self.poll_max_wait_seconds >= self.pop_timeout_seconds
        {
            return Err(PurgeApiError::config(
                "purge_api.poll_max_wait_seconds",
                format!(
                    "must be at least 1 and less than pop_timeout_seconds ({}), \
                     or PoPs waiting in a long-poll look dead",
                    self.pop_timeout_seconds
                ),
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(PurgeApiError::config(
                "purge_api.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if self.max_entries == 0 {
            return Err(PurgeApiError::config(
                "purge_api.max_entries",
                "must be at least 1",
            ));
        }
        if let Some(tls) = &self.tls {
            tls.validate("purge_api.tls")
                .map_err(|e| match e.split_once(": ") {
                    Some((key, why)) => PurgeApiError::config(key, why),
                    None => PurgeApiError::config("purge_api.tls", e),
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(config: &PurgeApiConfig) -> String {
        config.validate().unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid_given_a_token() {
        let config = PurgeApiConfig::new("t0k3n", "/tmp/x");
        config.validate().unwrap();
        assert_eq!(config.listen, "127.0.0.1:8070");
        assert_eq!(config.log_dir(), PathBuf::from("/tmp/x/purge-log"));
        assert_eq!(config.pop_timeout(), Duration::from_secs(15));
    }

    #[test]
    fn a_table_fills_in_defaults_and_refuses_unknown_keys() {
        let config: PurgeApiConfig =
            serde_json::from_str(r#"{"token": "t", "burst": 5, "rate_per_second": 2.5}"#).unwrap();
        assert_eq!((config.burst, config.rate_per_second), (5, 2.5));
        assert_eq!(config.max_entries, 1000);
        assert_eq!(config.data_dir, PathBuf::from("./edgecache-data"));
        let err = serde_json::from_str::<PurgeApiConfig>(r#"{"tokens": "t"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `tokens`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let ok = PurgeApiConfig::new("t", "d");
        assert_eq!(
            error(&PurgeApiConfig::new("", "d")),
            "purge_api.token: must not be empty"
        );
        assert!(error(&PurgeApiConfig::new("a b", "d")).starts_with("purge_api.token:"));
        let mut c = ok.clone();
        c.listen = "localhost".into();
        assert!(error(&c).starts_with("purge_api.listen: \"localhost\" is not IP:PORT"));
        let mut c = ok.clone();
        c.rate_per_second = 0.0;
        assert!(error(&c).starts_with("purge_api.rate_per_second:"));
        let mut c = ok.clone();
        c.burst = 0;
        assert!(error(&c).starts_with("purge_api.burst:"));
        let mut c = ok.clone();
        c.poll_max_wait_seconds = 15;
        assert!(error(&c).starts_with("purge_api.poll_max_wait_seconds:"));
        let mut c = ok.clone();
        c.max_body_bytes = 10;
        assert!(error(&c).starts_with("purge_api.max_body_bytes:"));
        let mut c = ok;
        c.data_dir = PathBuf::new();
        assert_eq!(error(&c), "purge_api.data_dir: must not be empty");
    }

    #[test]
    fn debug_output_hides_the_token() {
        let text = format!("{:?}", PurgeApiConfig::new("hunter2", "d"));
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"));
    }
}
