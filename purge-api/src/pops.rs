//! The PoP registry: which edges follow the log, how far each got, and which are live.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::PurgeApiError;
use crate::validate::validate_registration;
use crate::wire::RegisterPop;

const POPS_TREE: &str = "pops";
/// Progress points: key `name 0x00 seq(be)` → Unix ms when the PoP first reported `seq`.
/// A purge's `applied_at` on a PoP is the time of the first point at or past its `seq`,
/// so one point per report covers any number of purges applied in one batch.
const PROGRESS_TREE: &str = "pop_progress";

/// What the registry knows about one PoP; stored as JSON under its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PopState {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub admin_url: Option<String>,
    pub last_applied_seq: u64,
    pub last_seen_ms: u64,
    pub registered_at_ms: u64,
}

/// Registered PoPs, cached in memory and written through to sled so a restart keeps them.
pub struct PopRegistry {
    pops: sled::Tree,
    progress: sled::Tree,
    state: Mutex<BTreeMap<String, PopState>>,
    timeout_ms: u64,
}

impl std::fmt::Debug for PopRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PopRegistry")
            .field("pops", &self.list().len())
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

impl PopRegistry {
    /// Loads the registry from `db`. A PoP not heard from for `timeout` is not live.
    pub fn open(db: &sled::Db, timeout: Duration) -> Result<PopRegistry, PurgeApiError> {
        let pops = db.open_tree(POPS_TREE)?;
        let progress = db.open_tree(PROGRESS_TREE)?;
        let mut state = BTreeMap::new();
        for item in pops.iter() {
            let (key, value) = item?;
            let pop: PopState =
                serde_json::from_slice(&value).map_err(|source| PurgeApiError::Corrupt {
                    key: format!("pop {}", String::from_utf8_lossy(&key)),
                    source,
                })?;
            state.insert(pop.name.clone(), pop);
        }
        tracing::debug!(pops = state.len(), "pop registry opened");
        Ok(PopRegistry {
            pops,
            progress,
            state: Mutex::new(state),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Adds or updates a PoP and marks it seen. `applied_seq`, when given, replaces the
    /// stored progress, downwards too (a wiped edge starts again).
    pub fn register(&self, pop: RegisterPop, now_ms: u64) -> Result<PopState, PurgeApiError> {
        validate_registration(&pop)?;
        let mut state = self.lock();
        let old = state.get(&pop.name);
        let old_seq = old.map_or(0, |p| p.last_applied_seq);
        let seq = pop.applied_seq.unwrap_or(old_seq);
        let entry = PopState {
            registered_at_ms: old.map_or(now_ms, |p| p.registered_at_ms),
            name: pop.name,
            url: pop.url,
            admin_url: pop.admin_url,
            last_applied_seq: seq,
            last_seen_ms: now_ms,
        };
        if seq < old_seq {
            for key in self.progress.range(progress_key(&entry.name, seq + 1)..) {
                let (key, _) = key?;
                if !key.starts_with(&progress_prefix(&entry.name)) {
                    break;
                }
                self.progress.remove(key)?;
            }
        } else if seq > old_seq {
            self.progress
                .insert(progress_key(&entry.name, seq), &now_ms.to_be_bytes())?;
        }
        self.store(&entry)?;
        state.insert(entry.name.clone(), entry.clone());
        Ok(entry)
    }

    /// Records that `name` applied every purge up to `seq`; a lower `seq` is a heartbeat.
    pub fn report_applied(
        &self,
        name: &str,
        seq: u64,
        now_ms: u64,
    ) -> Result<PopState, PurgeApiError> {
        let mut state = self.lock();
        let pop = state.get_mut(name).ok_or_else(|| not_registered(name))?;
        pop.last_seen_ms = now_ms;
        if seq > pop.last_applied_seq {
            pop.last_applied_seq = seq;
            self.progress
                .insert(progress_key(name, seq), &now_ms.to_be_bytes())?;
        }
        let pop = pop.clone();
        self.store(&pop)?;
        Ok(pop)
    }

    /// Marks `name` seen (a long-poll); false when no such PoP is registered.
    pub fn touch(&self, name: &str, now_ms: u64) -> bool {
        let mut state = self.lock();
        let Some(pop) = state.get_mut(name) else {
            return false;
        };
        pop.last_seen_ms = now_ms;
        // Liveness is soft state: a lost write only makes the PoP look older after a restart.
        if let Err(err) = self.store(pop) {
            tracing::warn!(pop = name, error = %err, "pop heartbeat not stored");
        }
        true
    }

    /// Forgets a PoP and its progress; false when it was not registered.
    pub fn remove(&self, name: &str) -> Result<bool, PurgeApiError> {
        let mut state = self.lock();
        if state.remove(name).is_none() {
            return Ok(false);
        }
        self.pops.remove(name.as_bytes())?;
        for item in self.progress.scan_prefix(progress_prefix(name)) {
            let (key, _) = item?;
            self.progress.remove(key)?;
        }
        Ok(true)
    }

    /// Every registered PoP, by name.
    pub fn list(&self) -> Vec<PopState> {
        self.lock().values().cloned().collect()
    }

    pub fn get(&self, name: &str) -> Option<PopState> {
        self.lock().get(name).cloned()
    }

    /// When `name` first reported a `seq` at or past `seq`, if it has.
    pub fn applied_at(&self, name: &str, seq: u64) -> Result<Option<u64>, PurgeApiError> {
        let Some(item) = self.progress.range(progress_key(name, seq)..).next() else {
            return Ok(None);
        };
        let (key, value) = item?;
        if !key.starts_with(&progress_prefix(name)) {
            return Ok(None);
        }
        Ok(<[u8; 8]>::try_from(value.as_ref())
            .ok()
            .map(u64::from_be_bytes))
    }

    /// Heard from within the timeout at `now_ms`.
    pub fn is_live(&self, pop: &PopState, now_ms: u64) -> bool {
        now_ms.saturating_sub(pop.last_seen_ms) <= self.timeout_ms
    }

    fn store(&self, pop: &PopState) -> Result<(), PurgeApiError> {
        let value = serde_json::to_vec(pop).map_err(|source| PurgeApiError::Corrupt {
            key: format!("pop {}", pop.name),
            source,
        })?;
        self.pops.insert(pop.name.as_bytes(), value)?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PopState>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn not_registered(name: &str) -> PurgeApiError {
    PurgeApiError::NotFound(format!("no PoP named {name:?} is registered"))
}

/// Pop names never contain 0x00 (see `validate`), so the prefix cannot match another PoP.
fn progress_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 9);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

fn progress_key(name: &str, seq: u64) -> Vec<u8> {
    let mut key = progress_prefix(name);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(15);

    fn registration(name: &str, applied_seq: Option<u64>) -> RegisterPop {
        RegisterPop {
            name: name.into(),
            url: format!("http://{name}.test:8080"),
            admin_url: None,
            applied_seq,
        }
    }

    fn registry(dir: &tempfile::TempDir) -> (sled::Db, PopRegistry) {
        let db = sled::open(dir.path()).unwrap();
        let pops = PopRegistry::open(&db, TIMEOUT).unwrap();
        (db, pops)
    }

    #[test]
    fn reports_advance_progress_and_record_when() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, pops) = registry(&dir);
        pops.register(registration("us", None), 1_000).unwrap();
        assert_eq!(pops.applied_at("us", 1).unwrap(), None);
        pops.report_applied("us", 3, 2_000).unwrap();
        let state = pops.report_applied("us", 2, 2_500).unwrap();
        assert_eq!(state.last_applied_seq, 3, "a lower report does not go back");
        assert_eq!(state.last_seen_ms, 2_500, "but it is a heartbeat");
        pops.report_applied("us", 5, 3_000).unwrap();
        assert_eq!(pops.applied_at("us", 1).unwrap(), Some(2_000));
        assert_eq!(pops.applied_at("us", 3).unwrap(), Some(2_000));
        assert_eq!(pops.applied_at("us", 4).unwrap(), Some(3_000));
        assert_eq!(pops.applied_at("us", 6).unwrap(), None);
    }

    #[test]
    fn progress_of_one_pop_is_not_read_as_another_s() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, pops) = registry(&dir);
        pops.register(registration("us", None), 0).unwrap();
        pops.register(registration("us-east", Some(9)), 500)
            .unwrap();
        pops.report_applied("us", 2, 1_000).unwrap();
        assert_eq!(pops.applied_at("us", 3).unwrap(), None);
        assert_eq!(pops.applied_at("us-east", 3).unwrap(), Some(500));
    }

    #[test]
    fn unknown_pops_are_not_found_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, pops) = registry(&dir);
        let err = pops.report_applied("ghost", 1, 0).unwrap_err();
        assert_eq!(err.to_string(), "no PoP named \"ghost\" is registered");
        assert!(!pops.touch("ghost", 0));
        assert!(pops.list().is_empty());
    }

    #[test]
    fn liveness_follows_the_last_heartbeat() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, pops) = registry(&dir);
        let pop = pops.register(registration("eu", None), 10_000).unwrap();
        assert!(pops.is_live(&pop, 10_000 + 15_000));
        assert!(!pops.is_live(&pop, 10_000 + 15_001));
        assert!(pops.touch("eu", 20_000));
        assert!(pops.is_live(&pops.get("eu").unwrap(), 30_000));
    }

    #[test]
    fn re_registering_lower_forgets_later_progress() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, pops) = registry(&dir);
        pops.register(registration("ap", None), 0).unwrap();
        pops.report_applied("ap", 5, 1_000).unwrap();
        let again = pops.register(registration("ap", Some(2)), 2_000).unwrap();
        assert_eq!(again.last_applied_seq, 2);
        assert_eq!(again.registered_at_ms, 0);
        assert_eq!(pops.applied_at("ap", 3).unwrap(), None);
        pops.report_applied("ap", 4, 3_000).unwrap();
        assert_eq!(pops.applied_at("ap", 3).unwrap(), Some(3_000));
        let same = pops.register(registration("ap", None), 4_000).unwrap();
        assert_eq!(same.last_applied_seq, 4, "no applied_seq keeps progress");
    }

    #[test]
    fn a_bad_registration_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, pops) = registry(&dir);
        let err = pops.register(registration("a b", None), 0).unwrap_err();
        assert!(err.to_string().starts_with("name:"), "{err}");
        assert!(pops.list().is_empty());
    }

    #[test]
    fn the_registry_survives_a_reopen_and_remove_forgets() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (db, pops) = registry(&dir);
            pops.register(registration("us", None), 100).unwrap();
            pops.register(registration("eu", None), 100).unwrap();
            pops.report_applied("us", 7, 200).unwrap();
            db.flush().unwrap();
        }
        let (_db, pops) = registry(&dir);
        let names: Vec<_> = pops.list().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["eu", "us"]);
        assert_eq!(pops.get("us").unwrap().last_applied_seq, 7);
        assert_eq!(pops.applied_at("us", 7).unwrap(), Some(200));
        assert!(pops.remove("us").unwrap());
        assert!(!pops.remove("us").unwrap());
        assert_eq!(pops.applied_at("us", 7).unwrap(), None);
        assert_eq!(pops.list().len(), 1);
    }
}
