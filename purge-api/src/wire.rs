//! The JSON bodies of the purge API's endpoints, shared by the server, the client and the edges.

use serde::{Deserialize, Serialize};

use crate::PurgeRequest;

/// One accepted purge as stored in the log and served to edges by `GET /v1/purges`.
///
/// `{"id": "p-42-9f3c0a1b2c3d4e5f", "seq": 42, "accepted_at": 1767225600000, "request": {…}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeRecord {
    /// `p-<seq>-<16 hex digits>`; the random part keeps ids unique across a wiped log.
    pub id: String,
    /// Position in the log: 1, 2, 3, … with no gaps. Edges apply purges in this order.
    pub seq: u64,
    /// When the purge API accepted it, in Unix milliseconds.
    pub accepted_at: u64,
    pub request: PurgeRequest,
}

/// The `202` body of `POST /v1/purge`: `{"id": "p-42-…", "seq": 42}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    pub id: String,
    pub seq: u64,
}

/// `GET /v1/purge/{id}`: the purge and how far it has reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeStatus {
    pub id: String,
    pub seq: u64,
    pub accepted_at: u64,
    pub request: PurgeRequest,
    /// Every registered PoP, live or not, by name.
    pub pops: Vec<PopProgress>,
    /// True once every live PoP has applied this purge (also when no PoP is live).
    pub complete: bool,
}

impl PurgeStatus {
    /// Milliseconds from acceptance until the last live PoP applied it, once complete.
    pub fn propagation_ms(&self) -> Option<u64> {
        if !self.complete {
            return None;
        }
        let last = self
            .pops
            .iter()
            .filter(|p| p.live)
            .filter_map(|p| p.applied_at)
            .max()?;
        Some(last.saturating_sub(self.accepted_at))
    }
}

/// One PoP's progress on one purge: `{"name", "applied", "applied_at"?, "live"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopProgress {
    pub name: String,
    pub applied: bool,
    /// Unix ms of the first report that covered this purge; absent until applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<u64>,
    pub live: bool,
}

/// One entry of `GET /v1/pops`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopInfo {
    pub name: String,
    /// The PoP's public URL.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<String>,
    /// Heard from (register, applied report or long-poll) within the PoP timeout.
    pub live: bool,
    pub last_applied_seq: u64,
    /// Unix ms of the last time the PoP was heard from.
    pub last_seen_ms: u64,
    /// Age of the oldest purge this PoP has not applied; 0 when it is up to date.
    pub lag_seconds: f64,
    /// Purges in the log past `last_applied_seq`.
    pub behind: u64,
}

/// `POST /v1/pops/register`: `{"name", "url", "admin_url"?, "applied_seq"?}`.
///
/// `applied_seq` is the highest `seq` the edge has applied (persisted on its side); leave it
/// out to keep what the registry already knows. It may go down, e.g. for a wiped edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterPop {
    /// 1–64 characters of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    pub url: String,
    /// Shown in `GET /v1/pops` for operators; the purge API never connects to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_seq: Option<u64>,
}

/// `POST /v1/pops/{name}/applied`: `{"seq": N}`, every purge up to `N` is applied.
/// Doubles as a heartbeat; a report lower than the last one changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedReport {
    pub seq: u64,
}

/// `GET /v1/purges?since=N[&limit=M][&wait=S][&pop=NAME]`.
///
/// `purges` holds records with `seq > since` in order, at most `limit`. `last_seq` is the
/// log's newest `seq`: when the last record returned is below it, ask again at once. A
/// `last_seq` below `since` means the log was reset (a new data dir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollResponse {
    pub purges: Vec<PurgeRecord>,
    pub last_seq: u64,
}

/// The body of every error response: `{"error": "tags[2]: must not contain whitespace"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(name: &str, applied_at: Option<u64>, live: bool) -> PopProgress {
        PopProgress {
            name: name.into(),
            applied: applied_at.is_some(),
            applied_at,
            live,
        }
    }

    fn status(pops: Vec<PopProgress>, complete: bool) -> PurgeStatus {
        PurgeStatus {
            id: "p-1-00".into(),
            seq: 1,
            accepted_at: 1_000,
            request: PurgeRequest::default(),
            pops,
            complete,
        }
    }

    #[test]
    fn propagation_is_measured_to_the_last_live_pop() {
        let s = status(
            vec![
                progress("a", Some(1_200), true),
                progress("b", Some(1_450), true),
                progress("dead", None, false),
            ],
            true,
        );
        assert_eq!(s.propagation_ms(), Some(450));
        assert_eq!(status(s.pops.clone(), false).propagation_ms(), None);
        assert_eq!(status(vec![], true).propagation_ms(), None);
    }

    #[test]
    fn applied_at_is_left_out_until_applied() {
        let json = serde_json::to_value(progress("a", None, true)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "a", "applied": false, "live": true})
        );
        let json = serde_json::to_value(progress("a", Some(5), true)).unwrap();
        assert_eq!(json["applied_at"], 5);
    }

    #[test]
    fn register_needs_only_name_and_url() {
        let r: RegisterPop =
            serde_json::from_str(r#"{"name":"us-east","url":"http://127.0.1.1:8080"}"#).unwrap();
        assert_eq!(r.admin_url, None);
        assert_eq!(r.applied_seq, None);
        assert!(serde_json::from_str::<RegisterPop>(r#"{"name":"a","url":"u","x":1}"#).is_err());
    }
}
