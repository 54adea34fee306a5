//! Prometheus text for `/metrics`: purges accepted, errors, long-polls, and per-PoP progress.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::wire::PopInfo;

/// Error reasons counted by `edgecache_purge_api_errors_total`, as `PurgeApiError::reason`.
const REASONS: [&str; 9] = [
    "unauthorized",
    "bad_request",
    "too_large",
    "unsupported_media_type",
    "rate_limited",
    "auth_locked",
    "not_found",
    "method_not_allowed",
    "internal",
];

/// A per-PoP gauge: name, help text and how to read its value.
type PopGauge = (&'static str, &'static str, fn(&PopInfo) -> String);

/// Counters kept by the service; per-PoP values are computed at scrape time.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    accepted: AtomicU64,
    errors: [AtomicU64; REASONS.len()],
    polls_waiting: AtomicI64,
}

/// Decrements the waiting-poll gauge when a long-poll ends, however it ends.
pub(crate) struct PollGuard<'a>(&'a Metrics);

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.0.polls_waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub(crate) fn purge_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self, reason: &str) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn poll_waiting(&self) -> PollGuard<'_> {
        self.polls_waiting.fetch_add(1, Ordering::Relaxed);
        PollGuard(self)
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub(crate) fn render(&self, last_seq: u64, pops: &[PopInfo]) -> String {
        let mut out = String::with_capacity(2048);
        header(
            &mut out,
            "edgecache_purges_accepted_total",
            "counter",
            "Purges accepted and logged since this process started.",
        );
        let accepted = self.accepted.load(Ordering::Relaxed);
        let _ = writeln!(out, "edgecache_purges_accepted_total {accepted}");
        header(
            &mut out,
            "edgecache_purge_log_last_seq",
            "gauge",
            "Newest seq in the purge log.",
        );
        let _ = writeln!(out, "edgecache_purge_log_last_seq {last_seq}");
        header(
            &mut out,
            "edgecache_purge_api_errors_total",
            "counter",
            "Requests refused or failed, by reason.",
        );
        for (reason, count) in REASONS.iter().zip(&self.errors) {
            let count = count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "edgecache_purge_api_errors_total{{reason=\"{reason}\"}} {count}"
            );
        }
        header(
            &mut out,
            "edgecache_purge_polls_waiting",
            "gauge",
            "Long-polls from edges currently waiting for a purge.",
        );
        let waiting = self.polls_waiting.load(Ordering::Relaxed);
        let _ = writeln!(out, "edgecache_purge_polls_waiting {waiting}");
        let per_pop: [PopGauge; 4] = [
            (
                "edgecache_purge_pop_applied_seq",
                "Highest seq the PoP reported applied.",
                |p| p.last_applied_seq.to_string(),
            ),
            (
                "edgecache_purge_pop_behind_purges",
                "Purges in the log the PoP has not applied.",
                |p| p.behind.to_string(),
            ),
            (
                "edgecache_purge_pop_lag_seconds",
                "Age of the oldest purge the PoP has not applied; 0 when up to date.",
                |p| format!("{:.3}", p.lag_seconds),
            ),
            (
                "edgecache_purge_pop_live",
                "1 if the PoP was heard from within the PoP timeout.",
                |p| u8::from(p.live).to_string(),
            ),
        ];
        for (name, help, value) in per_pop {
            header(&mut out, name, "gauge", help);
            for pop in pops {
                // PoP names are restricted to [A-Za-z0-9._-]: nothing to escape.
                let _ = writeln!(out, "{name}{{pop=\"{}\"}} {}", pop.name, value(pop));
            }
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pop(name: &str, applied: u64, behind: u64, lag: f64, live: bool) -> PopInfo {
        PopInfo {
            name: name.into(),
            url: "http://x".into(),
            admin_url: None,
            live,
            last_applied_seq: applied,
            last_seen_ms: 0,
            lag_seconds: lag,
            behind,
        }
    }

    #[test]
    fn counters_and_pop_gauges_are_rendered() {
        let metrics = Metrics::default();
        metrics.purge_accepted();
        metrics.purge_accepted();
        metrics.error("rate_limited");
        metrics.error("no-such-reason");
        let text = metrics.render(
            7,
            &[pop("us-east", 7, 0, 0.0, true), pop("eu", 4, 3, 2.5, false)],
        );
        for line in [
            "edgecache_purges_accepted_total 2",
            "edgecache_purge_log_last_seq 7",
            "edgecache_purge_api_errors_total{reason=\"rate_limited\"} 1",
            "edgecache_purge_api_errors_total{reason=\"unauthorized\"} 0",
            "edgecache_purge_pop_applied_seq{pop=\"us-east\"} 7",
            "edgecache_purge_pop_behind_purges{pop=\"eu\"} 3",
            "edgecache_purge_pop_lag_seconds{pop=\"eu\"} 2.500",
            "edgecache_purge_pop_live{pop=\"eu\"} 0",
            "# TYPE edgecache_purge_pop_lag_seconds gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn the_waiting_gauge_follows_open_polls() {
        let metrics = Metrics::default();
        let one = metrics.poll_waiting();
        let two = metrics.poll_waiting();
        drop(one);
        assert!(
            metrics
                .render(0, &[])
                .contains("edgecache_purge_polls_waiting 1\n")
        );
        drop(two);
        assert!(
            metrics
                .render(0, &[])
                .contains("edgecache_purge_polls_waiting 0\n")
        );
    }
}
