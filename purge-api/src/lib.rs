//! The purge service: a durable, ordered purge log that edges follow, its wire types and client.
//!
//! `POST /v1/purge` appends a [`PurgeRequest`] to a sled-backed log under the next `seq` and
//! answers `202` only once the record is on disk. Edges register, follow the log with a
//! long-poll on `GET /v1/purges?since=SEQ&wait=SECONDS` (the long-poll *is* the low-latency
//! push path: the purge API never opens a connection to an edge) and report the highest
//! `seq` they applied, which drives `GET /v1/purge/{id}` and the lag metrics.
//!
//! # Layout
//!
//! - `config` — [`PurgeApiConfig`], its defaults and `validate()`
//! - `server` — [`PurgeApi`] (shared state), [`router`] and [`run`]
//! - `routes` — one handler per endpoint
//! - `log` — [`PurgeLog`]: the durable, ordered purge log and its long-poll wake-up
//! - `pops` — [`PopRegistry`]: registered PoPs, their progress and liveness
//! - `validate` — what a purge request may contain
//! - `auth` — bearer token check (constant time); `ratelimit` — per-token token bucket
//! - `metrics` — Prometheus text for `/metrics`
//! - `wire` — the JSON bodies of every endpoint, shared with the edges
//! - `client` — [`PurgeClient`], used by the edges and `edgecache purge`
//! - `error` — [`PurgeApiError`], mapped to a status and `{"error": "..."}`

use serde::{Deserialize, Serialize};

mod auth;
mod client;
mod config;
mod error;
mod log;
mod metrics;
mod pops;
mod ratelimit;
mod routes;
mod server;
mod validate;
mod wire;

pub use auth::{bearer_token, token_matches};
pub use client::{ClientError, PurgeClient};
pub use config::PurgeApiConfig;
pub use error::PurgeApiError;
pub use log::PurgeLog;
pub use pops::{PopRegistry, PopState};
pub use server::{PurgeApi, router, run};
pub use validate::{MAX_ENTRY_LEN, validate_purge};
pub use wire::{
    Accepted, AppliedReport, ErrorBody, PollResponse, PopInfo, PopProgress, PurgeRecord,
    PurgeStatus, RegisterPop,
};

/// A purge request as accepted by `POST /v1/purge` and the edge's admin `POST /purge`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PurgeRequest {
    /// Paths with their query (`/app.js?v=2`) or full URLs.
    pub urls: Vec<String>,
    /// Path prefixes (`/img/`).
    pub prefixes: Vec<String>,
    /// Surrogate keys / cache tags set by the origin.
    pub tags: Vec<String>,
    /// Purge everything.
    pub all: bool,
    /// Mark stale instead of removing.
    pub soft: bool,
}

impl PurgeRequest {
    /// True when the request names nothing to purge.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty() && self.prefixes.is_empty() && self.tags.is_empty() && !self.all
    }
}

/// Milliseconds since the Unix epoch, the time unit of every timestamp on the wire.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_request_names_nothing() {
        assert!(PurgeRequest::default().is_empty());
        let r = PurgeRequest {
            tags: vec!["a".into()],
            ..Default::default()
        };
        assert!(!r.is_empty());
    }

    #[test]
    fn missing_fields_default_and_unknown_fields_are_refused() {
        let r: PurgeRequest = serde_json::from_str(r#"{"prefixes":["/img/"]}"#).unwrap();
        assert_eq!(r.prefixes, ["/img/"]);
        assert!(!r.all && !r.soft);
        let err = serde_json::from_str::<PurgeRequest>(r#"{"url":["/a"]}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `url`"), "{err}");
    }

    #[test]
    fn unix_ms_is_after_2020() {
        assert!(unix_ms() > 1_577_836_800_000);
    }
}
