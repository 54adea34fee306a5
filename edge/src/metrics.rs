//! Counters of the edge, exposed as Prometheus text on `/metrics` and JSON on `/stats`.

mod latency;
mod listener;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::cache_status::CacheState;
use crate::disk::{DiskStats, DiskTier};
use crate::memory::MemoryTier;

pub use latency::RequestDurations;

type Labels = Vec<(&'static str, &'static str)>;

/// Outcome labels of origin fetches.
const FETCH_OUTCOMES: [&str; 4] = ["ok", "not_modified", "server_error", "failed"];

/// The edge's metrics. Counters are resolved once so the request path only does atomic adds.
pub struct Metrics {
    registry: Registry,
    requests: Vec<Counter>,
    durations: RequestDurations,
    served_bytes: Counter,
    fetches: Vec<Counter>,
    fetch_seconds: Histogram,
    collapsed: Counter,
    memory_bytes: Gauge,
    memory_entries: Gauge,
    purges_applied: Counter,
    purge_last_seq: Gauge,
    purge_lag: Histogram,
}

/// Outcome of one origin fetch.
#[derive(Debug, Clone, Copy)]
pub enum FetchOutcome {
    Ok,
    NotModified,
    ServerError,
    Failed,
}

impl Metrics {
    pub fn new(
        pop: &str,
        disk: Option<&DiskTier>,
        listener: Arc<edgecache_tls::ListenerStats>,
    ) -> Self {
        let mut registry = Registry::with_labels(
            [(
                std::borrow::Cow::Borrowed("pop"),
                std::borrow::Cow::Owned(pop.to_owned()),
            )]
            .into_iter(),
        );
        let requests_family = Family::<Labels, Counter>::default();
        registry.register(
            "edgecache_requests",
            "Requests served, by cache state",
            requests_family.clone(),
        );
        let requests = CacheState::ALL
            .iter()
            .map(|s| requests_family.get_or_create_owned(&vec![("cache", s.as_str())]))
            .collect();
        let durations = RequestDurations::new();
        registry.register_collector(Box::new(durations.clone()));
        let served_bytes = Counter::default();
        registry.register(
            "edgecache_served_bytes",
            "Response body bytes sent to clients",
            served_bytes.clone(),
        );
        let fetch_family = Family::<Labels, Counter>::default();
        registry.register(
            "edgecache_origin_fetches",
            "Requests sent to the origin, by outcome",
            fetch_family.clone(),
        );
        let fetches = FETCH_OUTCOMES
            .iter()
            .map(|o| fetch_family.get_or_create_owned(&vec![("outcome", *o)]))
            .collect();
        let fetch_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        registry.register(
            "edgecache_origin_fetch_seconds",
            "Time from sending an origin request to its response head",
            fetch_seconds.clone(),
        );
        let collapsed = Counter::default();
        registry.register(
            "edgecache_collapsed_requests",
            "Requests that waited on another request's origin fetch",
            collapsed.clone(),
        );
        let memory_bytes = Gauge::default();
        registry.register(
            "edgecache_memory_bytes",
            "Bytes held by the memory tier",
            memory_bytes.clone(),
        );
        let memory_entries = Gauge::default();
        registry.register(
            "edgecache_memory_entries",
            "URLs held by the memory tier",
            memory_entries.clone(),
        );
        let purges_applied = Counter::default();
        registry.register(
            "edgecache_purges_applied",
            "Purges applied by this PoP",
            purges_applied.clone(),
        );
        let purge_last_seq = Gauge::default();
        registry.register(
            "edgecache_purge_last_seq",
            "Position in the purge log of the last purge applied",
            purge_last_seq.clone(),
        );
        let purge_lag = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "edgecache_purge_lag_seconds",
            "Time from the purge API accepting a purge to this PoP applying it",
            purge_lag.clone(),
        );
        if let Some(disk) = disk {
            registry.register_collector(Box::new(DiskCollector(disk.clone())));
        }
        registry.register_collector(Box::new(listener::ListenerCollector(listener)));
        Self {
            registry,
            requests,
            durations,
            served_bytes,
            fetches,
            fetch_seconds,
            collapsed,
            memory_bytes,
            memory_entries,
            purges_applied,
            purge_last_seq,
            purge_lag,
        }
    }

    /// One purge applied; `lag` in seconds when it came from the purge API.
    pub fn purge_applied(&self, last_seq: u64, lag: Option<f64>) {
        self.purges_applied.inc();
        self.purge_last_seq
            .set(i64::try_from(last_seq).unwrap_or(i64::MAX));
        if let Some(lag) = lag {
            self.purge_lag.observe(lag);
        }
    }

    pub fn purges_applied(&self) -> u64 {
        self.purges_applied.get()
    }

    /// One request answered: its cache state and the time to its response head.
    pub fn request(&self, state: CacheState, elapsed: Duration) {
        self.requests[state.index()].inc();
        self.durations.observe(state, elapsed);
    }

    /// Response body bytes sent to a client.
    pub fn served_bytes(&self, bytes: u64) {
        self.served_bytes.inc_by(bytes);
    }

    /// A counter of body bytes sent, for bodies counted as they stream.
    pub fn served_bytes_counter(&self) -> Counter {
        self.served_bytes.clone()
    }

    pub fn fetch(&self, outcome: FetchOutcome, seconds: f64) {
        self.fetches[outcome as usize].inc();
        if !matches!(outcome, FetchOutcome::Failed) {
            self.fetch_seconds.observe(seconds);
        }
    }

    pub fn collapsed(&self) {
        self.collapsed.inc();
    }

    /// Total origin requests so far.
    pub fn origin_fetches(&self) -> u64 {
        self.fetches.iter().map(Counter::get).sum()
    }

    /// Prometheus text exposition.
    pub fn render(&self, memory: &MemoryTier) -> String {
        self.memory_bytes
            .set(i64::try_from(memory.weighted_size()).unwrap_or(i64::MAX));
        self.memory_entries
            .set(i64::try_from(memory.entry_count()).unwrap_or(i64::MAX));
        let mut out = String::with_capacity(4096);
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// The `/stats` document.
    pub fn stats(&self, pop: &str, memory: &MemoryTier, disk: Option<&DiskTier>) -> Stats {
        let requests: Vec<(&'static str, u64)> = CacheState::ALL
            .iter()
            .map(|s| (s.as_str(), self.requests[s.index()].get()))
            .collect();
        let total: u64 = requests.iter().map(|(_, n)| n).sum();
        let from_cache: u64 = CacheState::ALL
            .iter()
            .filter(|s| s.served_from_cache())
            .map(|s| self.requests[s.index()].get())
            .sum();
        Stats {
            pop: pop.to_owned(),
            requests: requests.into_iter().collect(),
            requests_total: total,
            served_from_cache: from_cache,
            hit_ratio: if total == 0 {
                0.0
            } else {
                from_cache as f64 / total as f64
            },
            origin_fetches: self.origin_fetches(),
            served_bytes: self.served_bytes.get(),
            collapsed_requests: self.collapsed.get(),
            memory: TierStats {
                entries: memory.entry_count(),
                bytes: memory.weighted_size(),
            },
            disk: disk.map(DiskTier::stats),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub pop: String,
    pub requests: std::collections::BTreeMap<&'static str, u64>,
    pub requests_total: u64,
    /// Requests answered from the cache without a full origin fetch (the hit ratio's numerator).
    pub served_from_cache: u64,
    pub hit_ratio: f64,
    pub origin_fetches: u64,
    /// Response body bytes sent to clients.
    pub served_bytes: u64,
    pub collapsed_requests: u64,
    pub memory: TierStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskStats>,
}

#[derive(Debug, Serialize)]
pub struct TierStats {
    pub entries: u64,
    pub bytes: u64,
}

/// Disk-tier figures, read from the tier at each scrape.
#[derive(Debug)]
struct DiskCollector(DiskTier);

impl Collector for DiskCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.stats();
        for (name, help, value) in [
            (
                "edgecache_disk_bytes",
                "Bytes held by the disk tier",
                s.bytes,
            ),
            (
                "edgecache_disk_entries",
                "Responses held by the disk tier",
                s.entries,
            ),
            (
                "edgecache_disk_index_cache_bytes",
                "Memory held by decoded disk-tier records of recently looked-up keys",
                s.index_cache_bytes,
            ),
        ] {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        for (name, help, value) in [
            (
                "edgecache_disk_evictions",
                "Disk-tier entries evicted or refused admission",
                s.evictions,
            ),
            (
                "edgecache_disk_corrupt",
                "Corrupt or truncated disk-tier entries dropped",
                s.corrupt_dropped,
            ),
            (
                "edgecache_disk_read_bytes",
                "Body bytes read from the disk tier",
                s.read_bytes,
            ),
            (
                "edgecache_disk_sent_bytes",
                "Body bytes sent straight from disk-tier files (sendfile), not read into memory",
                s.sent_bytes,
            ),
            (
                "edgecache_disk_write_bytes",
                "Body bytes written to the disk tier",
                s.write_bytes,
            ),
        ] {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for DiskTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiskTier")
    }
}
