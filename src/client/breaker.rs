//! The circuit breaker: after repeated failures a base URL is skipped for a while, then probed once.
//!
//! Policy code takes `now` as an argument, so the state machine is tested without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When to stop trying a base URL and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// How long an open breaker skips its URL before letting one probe through.
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 2,
            open_for: Duration::from_secs(10),
        }
    }
}

/// What a breaker says about its URL right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests go through.
    Closed,
    /// Requests skip the URL until `open_for` has passed.
    Open,
    /// `open_for` has passed: the next request probes the URL (or a probe is in flight).
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// Whether one request may use the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker is closed.
    Allowed,
    /// The breaker was half-open and this request is its one probe.
    Probe,
    /// The breaker is open (or another request is probing): skip the URL.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe was let through at `since`. A probe that never reports (its caller gave up)
    /// is replaced by a new one after `open_for`, so the URL cannot stay stuck here.
    Probing {
        since: Instant,
    },
}

/// One URL's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    state: State,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: State::Closed { failures: 0 },
        }
    }
}

impl Breaker {
    /// Decides whether a request may go to the URL, and takes the probe slot if it is due.
    pub fn admit(&mut self, policy: &BreakerPolicy, now: Instant) -> Admission {
        match self.state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } if now < until => Admission::Skip,
            State::Probing { since } if now < since + policy.open_for => Admission::Skip,
            State::Open { .. } | State::Probing { .. } => {
                self.state = State::Probing { since: now };
                Admission::Probe
            }
        }
    }

    /// A response head that is not 5xx: the URL works.
    pub fn record_success(&mut self) {
        self.state = State::Closed { failures: 0 };
    }

    /// A connect error, a timeout or a 5xx.
    pub fn record_failure(&mut self, policy: &BreakerPolicy, now: Instant) {
        self.state = match self.state {
            State::Closed { failures } if failures + 1 < policy.failures.max(1) => State::Closed {
                failures: failures + 1,
            },
            State::Closed { .. } | State::Probing { .. } => State::Open {
                until: now + policy.open_for,
            },
            // A request admitted before the breaker opened failed late: keep the window.
            open @ State::Open { .. } => open,
        };
    }

    /// The state as a request arriving at `now` would see it.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::Probing { .. } => BreakerState::HalfOpen,
        }
    }
}

/// The breakers of every base URL the client has used.
#[derive(Debug, Default)]
pub struct Breakers {
    policy: BreakerPolicy,
    by_url: Mutex<HashMap<String, Breaker>>,
}

impl Breakers {
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            by_url: Mutex::default(),
        }
    }

    pub fn admit(&self, url: &str, now: Instant) -> Admission {
        let mut map = self.by_url.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(url) {
            Some(b) => b.admit(&self.policy, now),
            // A URL never seen has never failed: no entry needed yet.
            None => Admission::Allowed,
        }
    }

    pub fn record_success(&self, url: &str) {
        let mut map = self.by_url.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get_mut(url) {
            b.record_success();
        }
    }

    pub fn record_failure(&self, url: &str, now: Instant) {
        let mut map = self.by_url.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(url.to_owned())
            .or_default()
            .record_failure(&self.policy, now);
    }

    pub fn state(&self, url: &str, now: Instant) -> BreakerState {
        let map = self.by_url.lock().unwrap_or_else(|e| e.into_inner());
        map.get(url).map_or(BreakerState::Closed, |b| b.state(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failures: 2,
        open_for: Duration::from_secs(10),
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn one_failure_keeps_it_closed() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.record_failure(&POLICY, t0);
        assert_eq!(b.state(t0), BreakerState::Closed);
        assert_eq!(b.admit(&POLICY, t0), Admission::Allowed);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.record_failure(&POLICY, t0);
        b.record_success();
        b.record_failure(&POLICY, t0);
        assert_eq!(b.admit(&POLICY, t0), Admission::Allowed);
    }

    #[test]
    fn consecutive_failures_open_it_for_open_for() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.record_failure(&POLICY, t0);
        b.record_failure(&POLICY, t0);
        assert_eq!(b.state(t0), BreakerState::Open);
        assert_eq!(b.admit(&POLICY, t0 + secs(9)), Admission::Skip);
        assert_eq!(b.state(t0 + secs(10)), BreakerState::HalfOpen);
    }

    #[test]
    fn half_open_lets_exactly_one_probe_through() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.record_failure(&POLICY, t0);
        b.record_failure(&POLICY, t0);
        let t1 = t0 + secs(10);
        assert_eq!(b.admit(&POLICY, t1), Admission::Probe);
        assert_eq!(b.admit(&POLICY, t1), Admission::Skip);
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
    }

    #[test]
    fn a_successful_probe_closes_it() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.record_failure(&POLICY, t0);
        b.record_failure(&POLICY, t0);
        assert_eq!(b.admit(&POLICY, t0 + secs(10)), Admission::Probe);
        b.record_success();
        assert_eq!(b.state(t0 + secs(10)), BreakerState::Closed);
        assert_eq!(b.admit(&POLICY, t0 + secs(10)), Admission::Allowed);
    }

    #[test]
    fn a_failed_probe_reopens_it_for_a_full_window() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.record_failure(&POLICY, t0);
        b.record_failure(&POLICY, t0);
        let t1 = t0 + secs(10);
        assert_eq!(b.admit(&POLICY, t1), Admission::Probe);
        b.record_failure(&POLICY, t1 + secs(1));
        assert_eq!(b.state(t1 + secs(1)), BreakerState::Open);
        assert_eq!(b.admit(&POLICY, t1 + secs(10)), Admission::Skip);
        assert_eq!(b.admit(&POLICY, t1 + secs(11)), Admission::Probe);
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced_after_open_for() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.record_failure(&POLICY, t0);
        b.record_failure(&POLICY, t0);
        assert_eq!(b.admit(&POLICY, t0 + secs(10)), Admission::Probe);
        assert_eq!(b.admit(&POLICY, t0 + secs(19)), Admission::Skip);
        assert_eq!(b.admit(&POLICY, t0 + secs(20)), Admission::Probe);
    }

    #[test]
    fn a_late_failure_does_not_extend_an_open_window() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.record_failure(&POLICY, t0);
        b.record_failure(&POLICY, t0);
        b.record_failure(&POLICY, t0 + secs(5));
        assert_eq!(b.admit(&POLICY, t0 + secs(10)), Admission::Probe);
    }

    #[test]
    fn breakers_are_per_url() {
        let t0 = Instant::now();
        let breakers = Breakers::new(POLICY);
        breakers.record_failure("http://a", t0);
        breakers.record_failure("http://a", t0);
        assert_eq!(breakers.admit("http://a", t0), Admission::Skip);
        assert_eq!(breakers.admit("http://b", t0), Admission::Allowed);
        assert_eq!(breakers.state("http://b", t0), BreakerState::Closed);
        breakers.record_success("http://a");
        assert_eq!(breakers.state("http://a", t0), BreakerState::Closed);
    }
}
