//! Request durations by cache state: lock-free histograms for the request path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::cache_status::CacheState;

/// Upper bounds of the buckets, in seconds: 100 µs doubling to about 13 s.
const BOUNDS: [f64; 18] = {
    let mut b = [0.0; 18];
    let mut i = 0;
    let mut v = 0.0001;
    while i < b.len() {
        b[i] = v;
        v *= 2.0;
        i += 1;
    }
    b
};

/// One histogram: a counter per bucket (the last is `+Inf`) and the sum in nanoseconds.
///
/// prometheus-client's histogram takes a mutex per observation; every request observes
/// one of these, so they are plain atomics instead.
#[derive(Debug)]
struct Buckets {
    counts: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Buckets {
    fn new() -> Buckets {
        Buckets {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BOUNDS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Cumulative `(upper bound, count)` pairs, the total count and the sum in seconds.
    fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((BOUNDS.get(i).copied().unwrap_or(f64::INFINITY), cumulative));
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        (buckets, cumulative, sum)
    }
}

/// `edgecache_request_duration_seconds{cache=STATE}`: from a request's arrival to its
/// response head, one histogram per cache state.
#[derive(Debug, Clone)]
pub struct RequestDurations {
    states: std::sync::Arc<[Buckets; CacheState::ALL.len()]>,
}

impl RequestDurations {
    pub fn new() -> RequestDurations {
        RequestDurations {
            states: std::sync::Arc::new(std::array::from_fn(|_| Buckets::new())),
        }
    }

    pub fn observe(&self, state: CacheState, elapsed: Duration) {
        self.states[state.index()].observe(elapsed);
    }
}

impl Default for RequestDurations {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for RequestDurations {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "edgecache_request_duration_seconds",
            "Time from a request's arrival to its response head, by cache state",
            None,
            MetricType::Histogram,
        )?;
        for state in CacheState::ALL {
            let (buckets, count, sum) = self.states[state.index()].snapshot();
            let labels = [("cache", state.as_str())];
            family
                .encode_family(&labels)?
                .encode_histogram::<Vec<(String, String)>>(sum, count, &buckets, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_cumulative_buckets() {
        let b = Buckets::new();
        b.observe(Duration::from_micros(50));
        b.observe(Duration::from_micros(150));
        b.observe(Duration::from_secs(60));
        let (buckets, count, sum) = b.snapshot();
        assert_eq!(count, 3);
        assert_eq!(buckets[0], (0.0001, 1));
        assert_eq!(buckets[1], (0.0002, 2));
        assert_eq!(buckets[BOUNDS.len() - 1].1, 2);
        assert_eq!(buckets[BOUNDS.len()], (f64::INFINITY, 3));
        assert!((sum - 60.0002).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn the_collector_writes_one_histogram_per_state() {
        let d = RequestDurations::new();
        d.observe(CacheState::Hit, Duration::from_micros(300));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(d));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("# TYPE edgecache_request_duration_seconds histogram"),
            "{out}"
        );
        assert!(
            out.contains(
                "edgecache_request_duration_seconds_bucket{le=\"0.0004\",cache=\"hit\"} 1"
            ) || out.contains(
                "edgecache_request_duration_seconds_bucket{cache=\"hit\",le=\"0.0004\"} 1"
            ),
            "{out}"
        );
        assert!(
            out.contains("edgecache_request_duration_seconds_count{cache=\"miss\"} 0"),
            "{out}"
        );
    }
}
