//! Live reload: a new config replaces the origins, timeouts, freshness rules, forwarding
//! rules, the `PURGE` switch and the TLS certificate in place, without dropping connections or the cache. An
//! invalid config is refused as a whole and the running one stays.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::Serialize;
use tracing::{info, warn};

use crate::config::EdgeConfig;
use crate::node::{Edge, policy_of};

/// Where a reload reads the new config from: the config file, with the command line's
/// flags applied on top. Its error starts with the bad key (`edge.origins[0].url: …`).
pub type ConfigSource = Arc<dyn Fn() -> Result<EdgeConfig, String> + Send + Sync>;

/// Why a reload was refused; the running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config is invalid; the message starts with the bad key.
    #[error("{0}")]
    Invalid(String),
    /// The edge was started without a config file.
    #[error("this edge was started without a config file: nothing to reload")]
    NoSource,
}

impl ReloadError {
    /// The key to blame, if the error names one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Invalid(message) => message
                .split_once(": ")
                .map(|(key, _)| key)
                .filter(|key| key.starts_with("edge") && !key.contains(' ')),
            Self::NoSource => None,
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// Keys whose new values only take effect after a restart; they keep their old values.
    pub restart_required: Vec<&'static str>,
}

/// The reload state of an edge: where configs come from and the one in force.
pub(crate) struct Reloader {
    source: std::sync::OnceLock<ConfigSource>,
    /// Also serialises reloads.
    current: tokio::sync::Mutex<EdgeConfig>,
}

impl Reloader {
    pub fn new(config: EdgeConfig) -> Self {
        Self {
            source: std::sync::OnceLock::new(),
            current: tokio::sync::Mutex::new(config),
        }
    }
}

impl Edge {
    /// Sets where [`Edge::reload`] reads configs from. Only the first call counts.
    pub fn set_config_source(&self, source: ConfigSource) {
        let _ = self.reloader.source.set(source);
    }

    /// Reads the config again from its source and applies it.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let source = self
            .reloader
            .source
            .get()
            .ok_or(ReloadError::NoSource)?
            .clone();
        let config = tokio::task::spawn_blocking(move || source())
            .await
            .map_err(|e| ReloadError::Invalid(format!("reading the config failed: {e}")))?
            .map_err(|m| ReloadError::Invalid(without_prefix(&m)))?;
        self.apply_config(config).await
    }

    /// Applies `new` in place of the running config, or refuses it whole.
    pub async fn apply_config(&self, new: EdgeConfig) -> Result<ReloadReport, ReloadError> {
        let invalid = |e: crate::EdgeError| ReloadError::Invalid(without_prefix(&e.to_string()));
        new.validate().map_err(invalid)?;
        let mut current = self.reloader.current.lock().await;
        let restart_required = restart_required(&current, &new);
        // Everything that can fail first; then the swaps, which cannot.
        let certs = match (&self.certs, &new.tls) {
            (Some(store), Some(tls)) => Some((store, tls)),
            _ => None,
        };
        if let Some((store, tls)) = certs {
            store
                .reload(tls)
                .map_err(|e| ReloadError::Invalid(format!("edge.tls: {e}")))?;
        }
        let forward = crate::forward::ForwardRules::new(&new.forwarding)
            .map_err(|e| ReloadError::Invalid(without_prefix(&e)))?;
        self.upstream.replace(&new).map_err(invalid)?;
        self.policy.store(Arc::new(policy_of(&new)));
        self.forward.store(Arc::new(forward));
        self.allow_purge_method
            .store(new.purge.allow_purge_method, Ordering::Relaxed);
        if restart_required.is_empty() {
            info!(pop = %self.pop, "config reloaded");
        } else {
            warn!(
                pop = %self.pop,
                restart_required = ?restart_required,
                "config reloaded; these keys keep their old values until a restart"
            );
        }
        *current = new;
        Ok(ReloadReport { restart_required })
    }
}

/// `invalid configuration: edge.x: why` → `edge.x: why`, so the message starts with the key.
fn without_prefix(message: &str) -> String {
    message
        .strip_prefix("invalid configuration: ")
        .unwrap_or(message)
        .to_owned()
}

/// Keys that differ between `old` and `new` but cannot change while running.
fn restart_required(old: &EdgeConfig, new: &EdgeConfig) -> Vec<&'static str> {
    let checks = [
        ("edge.listen", old.listen != new.listen),
        ("edge.admin", old.admin != new.admin),
        ("edge.admin_token", old.admin_token != new.admin_token),
        ("edge.pop", old.pop != new.pop),
        ("edge.memory.size", old.memory.size != new.memory.size),
        (
            "edge.memory.max_object_size",
            old.memory.max_object_size != new.memory.max_object_size,
        ),
        ("edge.disk.dir", old.disk.dir != new.disk.dir),
        ("edge.disk.size", old.disk.size != new.disk.size),
        (
            "edge.cache.ignored_query_params",
            old.cache.ignored_query_params != new.cache.ignored_query_params,
        ),
        ("edge.purge.api", old.purge.api != new.purge.api),
        ("edge.purge.token", old.purge.token != new.purge.token),
        ("edge.purge.ca", old.purge.ca != new.purge.ca),
        (
            "edge.purge.poll_wait",
            old.purge.poll_wait != new.purge.poll_wait,
        ),
        ("edge.tls", old.tls.is_some() != new.tls.is_some()),
        ("edge.limits", old.limits != new.limits),
        (
            "edge.shutdown_grace",
            old.shutdown_grace != new.shutdown_grace,
        ),
    ];
    checks
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OriginEntry;

    #[test]
    fn listeners_and_tiers_need_a_restart() {
        let mut old = EdgeConfig::default();
        old.origins.push(OriginEntry::http("http://127.0.0.1:8000"));
        let mut new = old.clone();
        new.origins[0] = OriginEntry::http("http://127.0.0.1:8001");
        new.cache.heuristic_fraction = 0.5;
        assert!(restart_required(&old, &new).is_empty());
        new.listen = "127.0.0.1:1".into();
        new.memory.size.0 += 1;
        assert_eq!(
            restart_required(&old, &new),
            ["edge.listen", "edge.memory.size"]
        );
    }

    #[test]
    fn the_key_of_an_invalid_config() {
        let e = ReloadError::Invalid("edge.origins[0].url: \"ftp://x\" must be…".into());
        assert_eq!(e.key(), Some("edge.origins[0].url"));
        assert_eq!(ReloadError::NoSource.key(), None);
    }
}
