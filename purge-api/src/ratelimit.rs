//! A token bucket per API token, so one runaway script cannot flood the purge log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One bucket: refills at `rate` tokens a second up to `burst`; each purge takes one.
#[derive(Debug, Clone)]
struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn full(burst: f64, now: Instant) -> Self {
        TokenBucket {
            tokens: burst,
            updated: now,
        }
    }

    /// Takes a token, or says how long until one is available.
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

/// Token buckets keyed by caller. Only authenticated callers reach it, so the map holds at
/// most one bucket per configured token and cannot be grown by strangers.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

impl RateLimiter {
    /// `rate` requests a second on average, `burst` at once. `rate` must be positive.
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        RateLimiter {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admits one request from `caller` at `now`, or returns how long it should wait.
    pub(crate) fn check(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = match buckets.get_mut(caller) {
            Some(bucket) => bucket,
            None => buckets
                .entry(caller.to_owned())
                .or_insert_with(|| TokenBucket::full(self.burst, now)),
        };
        bucket.take(self.rate, self.burst, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_refused_with_a_wait() {
        let limiter = RateLimiter::new(10.0, 3);
        let now = Instant::now();
        for _ in 0..3 {
            limiter.check("t", now).unwrap();
        }
        let wait = limiter.check("t", now).unwrap_err();
        assert!(
            wait > Duration::from_millis(99) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
    }

    #[test]
    fn tokens_refill_at_the_rate_up_to_the_burst() {
        let limiter = RateLimiter::new(10.0, 2);
        let start = Instant::now();
        limiter.check("t", start).unwrap();
        limiter.check("t", start).unwrap();
        assert!(limiter.check("t", start).is_err());
        let later = start + Duration::from_millis(100);
        limiter.check("t", later).unwrap();
        assert!(limiter.check("t", later).is_err());
        // A long idle period refills to the burst, not beyond it.
        let much_later = later + Duration::from_secs(3600);
        limiter.check("t", much_later).unwrap();
        limiter.check("t", much_later).unwrap();
        assert!(limiter.check("t", much_later).is_err());
    }

    #[test]
    fn callers_have_separate_buckets() {
        let limiter = RateLimiter::new(1.0, 1);
        let now = Instant::now();
        limiter.check("a", now).unwrap();
        assert!(limiter.check("a", now).is_err());
        limiter.check("b", now).unwrap();
    }

    #[test]
    fn a_slow_rate_asks_for_a_long_wait() {
        let limiter = RateLimiter::new(0.5, 1);
        let now = Instant::now();
        limiter.check("t", now).unwrap();
        assert_eq!(limiter.check("t", now).unwrap_err(), Duration::from_secs(2));
    }
}
