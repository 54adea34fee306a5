//! Purge service wire types shared by the purge API and the edges.
//!
//! The service itself (durable log, fan-out to PoPs) builds on these types.

use serde::{Deserialize, Serialize};

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
}
