//! Reads every PoP's admin `GET /stats` and the purge API's `GET /v1/pops` on a timer, and
//! turns successive counter samples into rates.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use edgecache_purge_api::{ClientError, PopInfo as PurgePop, PurgeClient};
use serde::{Deserialize, Serialize};

/// Samples kept per PoP: rates are taken over this many intervals, so one slow read does
/// not make the figure jump.
pub const RATE_SAMPLES: usize = 5;

/// The part of an edge's `/stats` document the dashboard shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PopStats {
    pub requests_total: u64,
    pub served_from_cache: u64,
    pub hit_ratio: f64,
    pub origin_fetches: u64,
    pub served_bytes: u64,
    pub memory: TierStats,
    pub disk: Option<TierStats>,
    pub purge: EdgePurge,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TierStats {
    pub entries: u64,
    pub bytes: u64,
}

/// The edge's own view of its purge progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgePurge {
    pub last_seq: u64,
    pub caught_up: bool,
}

/// Why a read failed, in a few words for the table.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no answer in {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("{0}")]
    Http(String),
    #[error("status {0}")]
    Status(u16),
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// Counters at one instant.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    requests: u64,
    bytes: u64,
}

/// One PoP's recent samples, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

/// Requests and body bytes per second over the samples kept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rates {
    pub requests_per_second: f64,
    pub bytes_per_second: f64,
}

impl History {
    /// Adds a sample. Counters that went down mean the PoP restarted: the older samples
    /// are of another process and are dropped.
    pub fn record(&mut self, at: Instant, stats: &PopStats) {
        let sample = Sample {
            at,
            requests: stats.requests_total,
            bytes: stats.served_bytes,
        };
        if let Some(last) = self.samples.back()
            && (sample.requests < last.requests || sample.bytes < last.bytes)
        {
            self.samples.clear();
        }
        self.samples.push_back(sample);
        while self.samples.len() > RATE_SAMPLES + 1 {
            self.samples.pop_front();
        }
    }

    /// Forgets every sample: the PoP could not be read, so a rate would span the outage.
    pub fn clear(&mut self) {
        self.samples.clear();
    }

    /// The rates from the oldest sample to the newest; `None` until there are two.
    pub fn rates(&self) -> Option<Rates> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let seconds = last.at.checked_duration_since(first.at)?.as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        Some(Rates {
            requests_per_second: (last.requests - first.requests) as f64 / seconds,
            bytes_per_second: (last.bytes - first.bytes) as f64 / seconds,
        })
    }
}

/// `GET {admin}/stats` within `timeout`.
pub async fn read_stats(
    http: &reqwest::Client,
    admin: &str,
    timeout: Duration,
) -> Result<PopStats, ReadError> {
    let url = format!("{admin}/stats");
    let read = async {
        let response = http
            .get(&url)
            .send()
            .await
            .map_err(|e| ReadError::Http(crate::client::describe(&e)))?;
        if !response.status().is_success() {
            return Err(ReadError::Status(response.status().as_u16()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| ReadError::Http(crate::client::describe(&e)))?;
        serde_json::from_slice(&body).map_err(|e| ReadError::Decode(e.to_string()))
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ReadError::Timeout(timeout))?
}

/// `GET /v1/pops` on the purge API within `timeout`.
pub async fn read_purge_pops(
    client: &PurgeClient,
    timeout: Duration,
) -> Result<Vec<PurgePop>, ReadError> {
    match tokio::time::timeout(timeout, client.pops()).await {
        Err(_) => Err(ReadError::Timeout(timeout)),
        Ok(Err(ClientError::Http { source, .. })) => {
            Err(ReadError::Http(crate::client::describe(&source)))
        }
        Ok(Err(e)) => Err(ReadError::Http(e.to_string())),
        Ok(Ok(pops)) => Ok(pops),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(requests: u64, bytes: u64) -> PopStats {
        PopStats {
            requests_total: requests,
            served_bytes: bytes,
            ..PopStats::default()
        }
    }

    #[test]
    fn rates_span_the_samples_kept() {
        let t0 = Instant::now();
        let mut h = History::default();
        h.record(t0, &stats(100, 1_000));
        assert_eq!(h.rates(), None, "one sample is no rate");
        h.record(t0 + Duration::from_secs(2), &stats(140, 5_000));
        assert_eq!(
            h.rates(),
            Some(Rates {
                requests_per_second: 20.0,
                bytes_per_second: 2_000.0
            })
        );
        for i in 3..=10 {
            h.record(t0 + Duration::from_secs(2 * i), &stats(140 + 10 * i, 5_000));
        }
        // The last RATE_SAMPLES intervals: 10 requests per 2 s.
        assert_eq!(h.rates().unwrap().requests_per_second, 5.0);
        assert_eq!(h.rates().unwrap().bytes_per_second, 0.0);
    }

    #[test]
    fn a_restarted_pop_starts_its_rates_again() {
        let t0 = Instant::now();
        let mut h = History::default();
        h.record(t0, &stats(500, 9_000));
        h.record(t0 + Duration::from_secs(1), &stats(3, 10));
        assert_eq!(h.rates(), None);
        h.record(t0 + Duration::from_secs(2), &stats(13, 20));
        assert_eq!(h.rates().unwrap().requests_per_second, 10.0);
        h.clear();
        assert_eq!(h.rates(), None);
    }

    #[test]
    fn edge_stats_documents_are_read_leniently() {
        let doc = r#"{"pop":"us-east","requests":{"hit":3,"miss":1},"requests_total":4,
            "served_from_cache":3,"hit_ratio":0.75,"origin_fetches":1,"served_bytes":400,
            "collapsed_requests":0,"memory":{"entries":1,"bytes":900},
            "purge":{"last_seq":7,"applied":7,"rules":0,"caught_up":true}}"#;
        let s: PopStats = serde_json::from_str(doc).unwrap();
        assert_eq!((s.requests_total, s.served_from_cache), (4, 3));
        assert_eq!(s.served_bytes, 400);
        assert_eq!(s.memory.bytes, 900);
        assert_eq!(s.disk, None);
        assert_eq!(s.purge.last_seq, 7);
        let old: PopStats = serde_json::from_str(r#"{"requests_total":2}"#).unwrap();
        assert_eq!(old.served_bytes, 0);
    }
}
