//! Applying purges on an edge: record the rule (O(1)), then sweep both tiers in the
//! background so matching entries go (hard) or turn stale (soft), and retire the rules the
//! sweep has applied.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use edgecache_purge_api::PurgeRequest;
use tracing::{debug, info};

use crate::node::Edge;
use crate::purge::unix_ms;

/// Rules stay at least this long after a sweep, and longer than any origin exchange may
/// last: an entry whose fetch began before the purge and was stored after the sweep passed
/// it is judged by the rule at lookup, so the rule must outlive every such fetch.
const RETIRE_AFTER: Duration = Duration::from_secs(300);

impl Edge {
    /// Applies a purge: `seq` is its position in the purge log, `accepted_at` (Unix ms)
    /// when the purge API accepted it.
    pub fn apply_purge(&self, request: &PurgeRequest, seq: Option<u64>, accepted_at: Option<u64>) {
        self.purges.apply(request, seq, SystemTime::now());
        let lag = accepted_at.map(crate::purge_sync::lag_seconds);
        self.metrics.purge_applied(self.purges.last_seq(), lag);
        debug!(?seq, lag_seconds = lag, "purge applied");
    }

    /// Starts a sweep, or asks the running one to go round once more.
    pub fn sweep_soon(self: &Arc<Self>) {
        {
            let mut s = self
                .sweep
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if s.running {
                s.again = true;
                return;
            }
            s.running = true;
        }
        let edge = self.clone();
        tokio::task::spawn_blocking(move || {
            loop {
                edge.sweep_once();
                let mut s = edge
                    .sweep
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if !s.again {
                    s.running = false;
                    break;
                }
                s.again = false;
            }
        });
    }

    fn sweep_once(&self) {
        let started = SystemTime::now();
        let judge = |key: &crate::key::CacheKey, entry: &crate::entry::CachedResponse| {
            self.purges.verdict(key, entry)
        };
        let (memory_changed, disk_changed) = (
            self.memory.sweep(judge, started),
            self.disk.as_ref().map_or(0, |d| d.sweep(judge, started)),
        );
        let keep_for = RETIRE_AFTER.max(self.upstream.total_timeout() + Duration::from_secs(60));
        let horizon = started.checked_sub(keep_for).unwrap_or(started);
        self.purges.retire(unix_ms(horizon));
        info!(
            memory = memory_changed,
            disk = disk_changed,
            rules_left = self.purges.rule_count(),
            elapsed_ms = started.elapsed().map_or(0, |d| d.as_millis() as u64),
            "purge sweep done"
        );
    }
}
