//! The edge node's shared state: configuration, tiers, coalescing table, origin client
//! and metrics.

use crate::coalesce::Coalescer;
use crate::config::EdgeConfig;
use crate::disk::DiskTier;
use crate::error::EdgeError;
use crate::key::KeyRules;
use crate::memory::MemoryTier;
use crate::metrics::Metrics;
use crate::policy::PolicyConfig;
use crate::upstream::Upstream;

/// One PoP's cache and its connection to the origin.
pub struct Edge {
    pub(crate) pop: String,
    /// This cache's name in `Cache-Status`: `edgecache-<pop>`.
    pub(crate) status_name: String,
    pub(crate) policy: PolicyConfig,
    pub(crate) key_rules: KeyRules,
    pub(crate) memory: MemoryTier,
    pub(crate) disk: Option<DiskTier>,
    pub(crate) coalescer: Coalescer,
    pub(crate) upstream: Upstream,
    pub(crate) metrics: Metrics,
}

impl Edge {
    pub fn new(config: &EdgeConfig) -> Result<Self, EdgeError> {
        config.validate()?;
        let max_object = usize::try_from(config.memory.max_object_size.0).unwrap_or(usize::MAX);
        let disk = match &config.disk.dir {
            Some(dir) => Some(DiskTier::open(dir, config.disk.size.0)?),
            None => None,
        };
        Ok(Self {
            pop: config.pop.clone(),
            status_name: format!("edgecache-{}", config.pop),
            policy: PolicyConfig {
                heuristic_fraction: config.cache.heuristic_fraction,
                heuristic_max: config.cache.heuristic_max.0.as_secs(),
                stale_if_error_default: config.cache.stale_if_error.0.as_secs(),
            },
            key_rules: KeyRules::new(config.cache.ignored_query_params.iter().cloned()),
            memory: MemoryTier::new(config.memory.size.0, max_object),
            metrics: Metrics::new(&config.pop, disk.as_ref()),
            disk,
            coalescer: Coalescer::default(),
            upstream: Upstream::new(config)?,
        })
    }

    pub fn pop(&self) -> &str {
        &self.pop
    }
}
