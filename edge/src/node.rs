//! The edge node's shared state: configuration, tiers, coalescing table, origin client
//! and metrics.

use crate::access_log::AccessLog;
use crate::coalesce::Coalescer;
use crate::config::EdgeConfig;
use crate::disk::DiskTier;
use crate::error::EdgeError;
use crate::forward::ForwardRules;
use crate::key::KeyRules;
use crate::memory::MemoryTier;
use crate::metrics::Metrics;
use crate::policy::PolicyConfig;
use crate::purge::PurgeRules;
use crate::reload::Reloader;
use crate::upstream::Upstream;
use arc_swap::ArcSwap;
use edgecache_tls::CertStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One PoP's cache and its connection to the origin.
pub struct Edge {
    pub(crate) pop: String,
    /// This cache's name in `Cache-Status`: `edgecache-<pop>`.
    pub(crate) status_name: String,
    /// Freshness tunables; replaced by a reload.
    pub(crate) policy: ArcSwap<PolicyConfig>,
    pub(crate) key_rules: KeyRules,
    /// What travels upstream: trusted peers, headers removed; replaced by a reload.
    pub(crate) forward: ArcSwap<ForwardRules>,
    pub(crate) memory: MemoryTier,
    pub(crate) disk: Option<DiskTier>,
    pub(crate) coalescer: Coalescer,
    pub(crate) upstream: Upstream,
    pub(crate) metrics: Metrics,
    pub(crate) purges: PurgeRules,
    pub(crate) sweep: Mutex<SweepState>,
    /// False until every purge missed while down is applied; until then nothing is served
    /// from the disk tier and `/readyz` says not ready.
    caught_up: AtomicBool,
    pub(crate) allow_purge_method: AtomicBool,
    /// The public listener's certificate, when it serves HTTPS.
    pub(crate) certs: Option<Arc<CertStore>>,
    pub(crate) reloader: Reloader,
    pub(crate) access_log: AccessLog,
    /// The public listener's connection counters, for metrics.
    pub(crate) listener: Arc<edgecache_tls::ListenerStats>,
    /// What the admin listener's mutations require, if anything.
    pub(crate) admin_token: Option<crate::config::Secret>,
}

/// Whether a purge sweep runs, and whether another round was asked for meanwhile.
#[derive(Debug, Default)]
pub(crate) struct SweepState {
    pub running: bool,
    pub again: bool,
}

impl Edge {
    /// The scheme clients use to reach this edge, for `X-Forwarded-Proto`.
    pub(crate) fn client_scheme(&self) -> &'static str {
        if self.certs.is_some() {
            "https"
        } else {
            "http"
        }
    }

    pub fn new(config: &EdgeConfig) -> Result<Self, EdgeError> {
        config.validate()?;
        let max_object = usize::try_from(config.memory.max_object_size.0).unwrap_or(usize::MAX);
        let key_rules = KeyRules::new(config.cache.ignored_query_params.iter().cloned());
        let disk = match &config.disk.dir {
            Some(dir) => Some(DiskTier::open(dir, config.disk.size.0)?),
            None => None,
        };
        let listener = Arc::new(edgecache_tls::ListenerStats::default());
        Ok(Self {
            access_log: AccessLog::new(config.access_log_per_second),
            pop: config.pop.clone(),
            status_name: format!("edgecache-{}", config.pop),
            policy: ArcSwap::from_pointee(policy_of(config)),
            key_rules: key_rules.clone(),
            forward: ArcSwap::from_pointee(
                ForwardRules::new(&config.forwarding).map_err(EdgeError::Config)?,
            ),
            memory: MemoryTier::new(config.memory.size.0, max_object),
            metrics: Metrics::new(&config.pop, disk.as_ref(), listener.clone()),
            listener,
            admin_token: config.admin_token.clone(),
            purges: match &config.disk.dir {
                Some(dir) => PurgeRules::persistent(key_rules.clone(), dir),
                None => PurgeRules::in_memory(key_rules.clone()),
            },
            disk,
            sweep: Mutex::new(SweepState::default()),
            caught_up: AtomicBool::new(config.purge.api.is_none()),
            allow_purge_method: AtomicBool::new(config.purge.allow_purge_method),
            coalescer: Coalescer::default(),
            upstream: Upstream::new(config)?,
            certs: match &config.tls {
                Some(tls) => Some(
                    CertStore::open(tls)
                        .map_err(|e| EdgeError::Config(format!("edge.tls: {e}")))?,
                ),
                None => None,
            },
            reloader: Reloader::new(config.clone()),
        })
    }

    /// The freshness tunables in force.
    pub(crate) fn policy(&self) -> PolicyConfig {
        **self.policy.load()
    }

    /// Whether `PURGE` on the public listener is accepted.
    pub(crate) fn allows_purge_method(&self) -> bool {
        self.allow_purge_method.load(Ordering::Relaxed)
    }

    /// The public listener's certificate store, when it serves HTTPS.
    pub fn certs(&self) -> Option<&Arc<CertStore>> {
        self.certs.as_ref()
    }

    pub fn pop(&self) -> &str {
        &self.pop
    }

    /// True when the edge has a disk tier (whose content outlives a restart).
    pub fn has_disk(&self) -> bool {
        self.disk.is_some()
    }

    /// True once the edge has applied every purge it missed (always, without a purge API).
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
    }

    pub(crate) fn mark_caught_up(&self) {
        if !self.caught_up.swap(true, Ordering::AcqRel) {
            tracing::info!(pop = %self.pop, seq = self.purges.last_seq(), "caught up with the purge log");
        }
    }
}

/// The freshness tunables of a config.
pub(crate) fn policy_of(config: &EdgeConfig) -> PolicyConfig {
    PolicyConfig {
        heuristic_fraction: config.cache.heuristic_fraction,
        heuristic_max: config.cache.heuristic_max.0.as_secs(),
        stale_if_error_default: config.cache.stale_if_error.0.as_secs(),
        set_cookie: config.cache.set_cookie,
    }
}
