//! Origin health for failover: a per-origin circuit breaker. An origin that fails
//! [`FAILURE_THRESHOLD`] times in a row is skipped for its `retry_after`, then one live
//! request at a time probes it again (half-open) until one succeeds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Consecutive failures (connect error, timeout, broken response, 5xx) that open the breaker.
pub const FAILURE_THRESHOLD: u32 = 3;

/// The breaker's state, as shown in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breaker {
    /// Taking traffic.
    Closed,
    /// Skipped until the retry time.
    Open,
    /// The retry time has passed: one request at a time probes the origin.
    HalfOpen,
}

impl Breaker {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    skip_until: Option<Instant>,
    /// When the current half-open probe started; a probe older than `retry_after` is taken
    /// as abandoned (its request was cancelled), so another may start.
    probe_started: Option<Instant>,
}

/// Health of one origin. Time comes in as `now`, so the rules are tested without sleeping.
#[derive(Debug)]
pub struct OriginHealth {
    retry_after: Duration,
    state: Mutex<State>,
}

impl OriginHealth {
    pub fn new(retry_after: Duration) -> Self {
        Self {
            retry_after,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent across a panic elsewhere: every update is one step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The breaker's state at `now`.
    pub fn breaker(&self, now: Instant) -> Breaker {
        match self.lock().skip_until {
            None => Breaker::Closed,
            Some(until) if now < until => Breaker::Open,
            Some(_) => Breaker::HalfOpen,
        }
    }

    /// Whether a request may go to this origin now. In the half-open state this admits one
    /// probe and skips the rest until it finishes.
    pub fn admit(&self, now: Instant) -> bool {
        let mut s = self.lock();
        match s.skip_until {
            None => true,
            Some(until) if now < until => false,
            Some(_) => match s.probe_started {
                Some(t) if now.saturating_duration_since(t) < self.retry_after => false,
                _ => {
                    s.probe_started = Some(now);
                    true
                }
            },
        }
    }

    /// Records a success; returns true if the origin was being skipped until now.
    pub fn record_success(&self) -> bool {
        let mut s = self.lock();
        let recovered = s.skip_until.is_some();
        *s = State::default();
        recovered
    }

    /// Records a failure at `now`; returns true if it (re)opened the breaker.
    pub fn record_failure(&self, now: Instant) -> bool {
        let mut s = self.lock();
        s.failures = s.failures.saturating_add(1);
        if s.failures >= FAILURE_THRESHOLD {
            s.skip_until = Some(now + self.retry_after);
            s.probe_started = None;
            true
        } else {
            false
        }
    }

    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Duration = Duration::from_secs(10);

    #[test]
    fn opens_after_three_failures_in_a_row() {
        let h = OriginHealth::new(RETRY);
        let t0 = Instant::now();
        assert!(!h.record_failure(t0));
        assert!(!h.record_failure(t0));
        assert!(h.admit(t0));
        assert!(h.record_failure(t0));
        assert_eq!(h.breaker(t0), Breaker::Open);
        assert!(!h.admit(t0 + Duration::from_secs(9)));
    }

    #[test]
    fn a_success_resets_the_count() {
        let h = OriginHealth::new(RETRY);
        let t0 = Instant::now();
        h.record_failure(t0);
        h.record_failure(t0);
        assert!(!h.record_success());
        assert!(!h.record_failure(t0));
        assert_eq!(h.breaker(t0), Breaker::Closed);
    }

    #[test]
    fn half_open_admits_one_probe_then_recovers() {
        let h = OriginHealth::new(RETRY);
        let t0 = Instant::now();
        for _ in 0..3 {
            h.record_failure(t0);
        }
        let later = t0 + RETRY;
        assert_eq!(h.breaker(later), Breaker::HalfOpen);
        assert!(h.admit(later), "the probe");
        assert!(!h.admit(later), "one probe at a time");
        assert!(h.record_success());
        assert_eq!(h.breaker(later), Breaker::Closed);
        assert!(h.admit(later));
    }

    #[test]
    fn a_failed_probe_skips_the_origin_again() {
        let h = OriginHealth::new(RETRY);
        let t0 = Instant::now();
        for _ in 0..3 {
            h.record_failure(t0);
        }
        let later = t0 + RETRY;
        assert!(h.admit(later));
        assert!(h.record_failure(later));
        assert!(!h.admit(later + Duration::from_secs(1)));
        assert!(h.admit(later + RETRY));
    }

    #[test]
    fn an_abandoned_probe_does_not_block_forever() {
        let h = OriginHealth::new(RETRY);
        let t0 = Instant::now();
        for _ in 0..3 {
            h.record_failure(t0);
        }
        assert!(h.admit(t0 + RETRY));
        assert!(
            h.admit(t0 + RETRY * 2),
            "the first probe never reported back"
        );
    }
}
