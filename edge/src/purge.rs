//! Purge rules: what a purge invalidates, checked when an entry is looked up. Applying a
//! purge by URL, prefix, tag or everything only records a rule, so it costs O(1) however
//! many entries match; a background sweep then removes (or marks stale) what matched, in
//! both tiers, and retires the rules it has fully applied.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use edgecache_purge_api::PurgeRequest;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::entry::CachedResponse;
use crate::key::{CacheKey, KeyRules};

/// What the rules say about one stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Soft-purged: usable only as a stale response (revalidate first, or within
    /// stale-while-revalidate / stale-if-error).
    Stale,
    /// Hard-purged: as if it were not there.
    Gone,
}

/// The latest hard and soft purge times (Unix ms) of one rule; 0 means none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Marks {
    hard: u64,
    soft: u64,
}

impl Marks {
    fn set(&mut self, at: u64, soft: bool) {
        let slot = if soft { &mut self.soft } else { &mut self.hard };
        *slot = (*slot).max(at);
    }

    /// `stored` is when the entry's origin exchange began. A purge in the same millisecond
    /// covers it: which came first cannot be told, and keeping purged content is the error
    /// that matters (a needless refetch is the other).
    fn judge(&self, stored: u64) -> Verdict {
        if self.hard != 0 && self.hard >= stored {
            Verdict::Gone
        } else if self.soft != 0 && self.soft >= stored {
            Verdict::Stale
        } else {
            Verdict::Keep
        }
    }

    /// Drops marks no older than `upto` (their sweep has run).
    fn retire(&mut self, upto: u64) {
        if self.hard <= upto {
            self.hard = 0;
        }
        if self.soft <= upto {
            self.soft = 0;
        }
    }

    fn is_empty(&self) -> bool {
        self.hard == 0 && self.soft == 0
    }
}

/// Every rule in force, and the last purge sequence number applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Rules {
    last_seq: u64,
    all: Marks,
    /// By path-and-query (`/a.js?v=2`, any host) or by full key (`http://host/a.js`).
    urls: HashMap<String, Marks>,
    prefixes: Vec<(String, Marks)>,
    tags: HashMap<String, Marks>,
}

impl Rules {
    fn is_empty(&self) -> bool {
        self.all.is_empty()
            && self.urls.is_empty()
            && self.prefixes.is_empty()
            && self.tags.is_empty()
    }
}

/// The rules of one edge, persisted next to its disk tier when it has one.
pub struct PurgeRules {
    rules: RwLock<Rules>,
    /// Fast path: no rule at all, nothing to check on a hit.
    empty: AtomicBool,
    key_rules: KeyRules,
    state_file: Option<PathBuf>,
    applied: AtomicU64,
}

impl PurgeRules {
    /// Rules kept in memory only (an edge without a disk tier starts empty anyway).
    pub fn in_memory(key_rules: KeyRules) -> Self {
        Self::with_state(key_rules, None, Rules::default())
    }

    /// Rules persisted in `dir/purge-state.json`, loaded if present.
    pub fn persistent(key_rules: KeyRules, dir: &Path) -> Self {
        let path = dir.join("purge-state.json");
        let rules = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                // Losing the rules could resurrect purged content: purge everything instead.
                warn!(path = %path.display(), error = %e, "purge state unreadable; treating all cached content as purged");
                let mut r = Rules::default();
                r.all.set(unix_ms(SystemTime::now()), false);
                r
            }),
            Err(_) => Rules::default(),
        };
        Self::with_state(key_rules, Some(path), rules)
    }

    fn with_state(key_rules: KeyRules, state_file: Option<PathBuf>, rules: Rules) -> Self {
        let empty = rules.is_empty();
        Self {
            rules: RwLock::new(rules),
            empty: AtomicBool::new(empty),
            key_rules,
            state_file,
            applied: AtomicU64::new(0),
        }
    }

    /// The last purge-log sequence number applied (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.read().last_seq
    }

    /// Sets the last applied sequence number (after the purge log was reset).
    pub fn reset_seq(&self, seq: u64) {
        self.write().last_seq = seq;
        self.persist();
    }

    /// Purges applied since start.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    /// Records `request` as applied at `at`; `seq` is its log position, if it came from the
    /// purge API. Persists the rules before returning.
    pub fn apply(&self, request: &PurgeRequest, seq: Option<u64>, at: SystemTime) {
        let at = unix_ms(at);
        let soft = request.soft;
        {
            let mut r = self.write();
            if request.all {
                r.all.set(at, soft);
            }
            for url in &request.urls {
                if let Some(k) = self.url_rule(url) {
                    r.urls.entry(k).or_default().set(at, soft);
                }
            }
            for prefix in &request.prefixes {
                let prefix = prefix_rule(prefix);
                match r.prefixes.iter_mut().find(|(p, _)| *p == prefix) {
                    Some((_, m)) => m.set(at, soft),
                    None => {
                        let mut m = Marks::default();
                        m.set(at, soft);
                        r.prefixes.push((prefix, m));
                    }
                }
            }
            for tag in &request.tags {
                r.tags.entry(tag.clone()).or_default().set(at, soft);
            }
            if let Some(seq) = seq {
                r.last_seq = r.last_seq.max(seq);
            }
            self.empty.store(r.is_empty(), Ordering::Release);
        }
        self.applied.fetch_add(1, Ordering::Relaxed);
        self.persist();
        // Entries are stamped in milliseconds, and a mark covers its own millisecond (see
        // `Marks::judge`). Returning only once the clock has left it means a fetch begun
        // after the purge was applied is never taken for one begun before it. At most 1 ms,
        // usually nothing: persisting took longer.
        let give_up = std::time::Instant::now() + Duration::from_millis(2);
        while unix_ms(SystemTime::now()) <= at && std::time::Instant::now() < give_up {
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// The rule key of a `urls` entry: `/path?query` (any host) or a full cache key.
    fn url_rule(&self, url: &str) -> Option<String> {
        let uri: http::Uri = url.parse().ok()?;
        match uri.authority() {
            None => {
                let k = CacheKey::new("http", "-", &uri, &self.key_rules);
                Some(k.path_and_query().to_owned())
            }
            Some(host) => {
                let scheme = uri.scheme_str().unwrap_or("http");
                Some(
                    CacheKey::new(scheme, host.as_str(), &uri, &self.key_rules)
                        .as_str()
                        .to_owned(),
                )
            }
        }
    }

    /// What the rules say about `entry`, stored under `key`.
    pub fn verdict(&self, key: &CacheKey, entry: &CachedResponse) -> Verdict {
        if self.empty.load(Ordering::Acquire) {
            return Verdict::Keep;
        }
        let stored = entry.stored_at.0;
        let r = self.read();
        let mut verdict = r.all.judge(stored);
        let pq = key.path_and_query();
        let marks = r
            .urls
            .get(pq)
            .into_iter()
            .chain(r.urls.get(key.as_str()))
            .chain(
                r.prefixes
                    .iter()
                    .filter(|(p, _)| pq.starts_with(p.as_str()))
                    .map(|(_, m)| m),
            )
            .chain(entry.tags().filter_map(|t| r.tags.get(t)));
        for m in marks {
            verdict = worse(verdict, m.judge(stored));
            if verdict == Verdict::Gone {
                break;
            }
        }
        verdict
    }

    /// The time up to which rules may be retired once a sweep that starts now has finished.
    pub fn sweep_horizon(&self) -> u64 {
        unix_ms(SystemTime::now())
    }

    /// Retires every mark no newer than `horizon`: a sweep begun after them has applied them
    /// to every stored entry.
    pub fn retire(&self, horizon: u64) {
        {
            let mut r = self.write();
            r.all.retire(horizon);
            r.urls.retain(|_, m| {
                m.retire(horizon);
                !m.is_empty()
            });
            r.prefixes.retain_mut(|(_, m)| {
                m.retire(horizon);
                !m.is_empty()
            });
            r.tags.retain(|_, m| {
                m.retire(horizon);
                !m.is_empty()
            });
            self.empty.store(r.is_empty(), Ordering::Release);
        }
        self.persist();
    }

    /// Number of rules in force (for `/stats`).
    pub fn rule_count(&self) -> usize {
        let r = self.read();
        usize::from(!r.all.is_empty()) + r.urls.len() + r.prefixes.len() + r.tags.len()
    }

    fn persist(&self) {
        let Some(path) = &self.state_file else { return };
        let json = match serde_json::to_vec(&*self.read()) {
            Ok(j) => j,
            Err(e) => {
                warn!(error = %e, "cannot encode purge state");
                return;
            }
        };
        let tmp = path.with_extension("json.tmp");
        let written = std::fs::write(&tmp, json)
            .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            warn!(path = %path.display(), error = %e, "cannot persist purge state");
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Rules> {
        self.rules
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Rules> {
        self.rules
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A `prefixes` entry in the form keys have: its path normalised as request paths are
/// (`/x/../img/` and `/%69mg/` are `/img/`), the rest as written.
fn prefix_rule(prefix: &str) -> String {
    let (path, rest) = prefix
        .find('?')
        .map_or((prefix, ""), |i| prefix.split_at(i));
    match crate::key::normalise_path(path) {
        Ok(path) => format!("{path}{rest}"),
        Err(_) => prefix.to_owned(),
    }
}

fn worse(a: Verdict, b: Verdict) -> Verdict {
    match (a, b) {
        (Verdict::Gone, _) | (_, Verdict::Gone) => Verdict::Gone,
        (Verdict::Stale, _) | (_, Verdict::Stale) => Verdict::Stale,
        _ => Verdict::Keep,
    }
}

/// `entry` as a soft purge leaves it: stale from now on, its stale windows intact.
pub fn mark_stale(entry: &CachedResponse, now: SystemTime) -> CachedResponse {
    let mut stale = entry.clone();
    stale.freshness.lifetime = stale
        .freshness
        .lifetime
        .min(crate::policy::secs32(entry.freshness.age(now)));
    stale.stored_at = now.into();
    stale
}

pub fn unix_ms(t: SystemTime) -> u64 {
    crate::policy::UnixMs::from(t).0
}

/// A purge time strictly after `t`.
pub fn just_after(t: SystemTime) -> SystemTime {
    t + Duration::from_millis(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyConfig;
    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, StatusCode};

    fn entry(tags: &'static str, at: SystemTime) -> CachedResponse {
        let mut h = HeaderMap::new();
        h.insert("cache-control", HeaderValue::from_static("max-age=60"));
        h.insert("surrogate-key", HeaderValue::from_static(tags));
        CachedResponse::new(
            StatusCode::OK,
            &h,
            Bytes::new(),
            &HeaderMap::new(),
            at,
            at,
            &PolicyConfig::default(),
        )
    }

    fn key(host: &str, pq: &str) -> CacheKey {
        CacheKey::new("http", host, &pq.parse().unwrap(), &KeyRules::default())
    }

    fn req(f: impl FnOnce(&mut PurgeRequest)) -> PurgeRequest {
        let mut r = PurgeRequest::default();
        f(&mut r);
        r
    }

    #[test]
    fn each_kind_hits_exactly_what_it_names() {
        let t0 = SystemTime::now();
        let rules = PurgeRules::in_memory(KeyRules::default());
        let e = entry("css", t0);
        let later = just_after(t0);
        rules.apply(
            &req(|r| r.urls = vec!["/a.js?b=2&a=1".into()]),
            Some(1),
            later,
        );
        assert_eq!(rules.verdict(&key("x", "/a.js?a=1&b=2"), &e), Verdict::Gone);
        assert_eq!(rules.verdict(&key("y", "/a.js?a=1&b=2"), &e), Verdict::Gone);
        assert_eq!(rules.verdict(&key("x", "/a.js"), &e), Verdict::Keep);
        rules.apply(&req(|r| r.prefixes = vec!["/img/".into()]), Some(2), later);
        assert_eq!(rules.verdict(&key("x", "/img/a.png"), &e), Verdict::Gone);
        assert_eq!(rules.verdict(&key("x", "/imgs/a.png"), &e), Verdict::Keep);
        rules.apply(
            &req(|r| {
                r.tags = vec!["css".into()];
                r.soft = true;
            }),
            Some(3),
            later,
        );
        assert_eq!(rules.verdict(&key("x", "/site.css"), &e), Verdict::Stale);
        assert_eq!(
            rules.verdict(&key("x", "/site.css"), &entry("js", t0)),
            Verdict::Keep
        );
        assert_eq!(rules.last_seq(), 3);
    }

    #[test]
    fn entries_stored_after_the_purge_are_untouched() {
        let t0 = SystemTime::now();
        let rules = PurgeRules::in_memory(KeyRules::default());
        rules.apply(&req(|r| r.all = true), None, t0);
        let newer = entry("a", t0 + Duration::from_secs(1));
        assert_eq!(rules.verdict(&key("x", "/a"), &newer), Verdict::Keep);
        let older = entry("a", t0 - Duration::from_secs(1));
        assert_eq!(rules.verdict(&key("x", "/a"), &older), Verdict::Gone);
    }

    #[test]
    fn rules_survive_a_restart_and_retire() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = SystemTime::now();
        let rules = PurgeRules::persistent(KeyRules::default(), dir.path());
        rules.apply(&req(|r| r.tags = vec!["t".into()]), Some(7), just_after(t0));
        drop(rules);
        let rules = PurgeRules::persistent(KeyRules::default(), dir.path());
        assert_eq!(rules.last_seq(), 7);
        assert_eq!(
            rules.verdict(&key("x", "/a"), &entry("t", t0)),
            Verdict::Gone
        );
        rules.retire(unix_ms(t0) + 10);
        assert_eq!(rules.rule_count(), 0);
        assert_eq!(rules.last_seq(), 7);
        assert_eq!(
            rules.verdict(&key("x", "/a"), &entry("t", t0)),
            Verdict::Keep
        );
    }

    #[test]
    fn a_purge_covers_fetches_begun_in_its_millisecond() {
        let rules = PurgeRules::in_memory(KeyRules::default());
        let now = SystemTime::now();
        let same_ms = entry("a", now);
        rules.apply(&req(|r| r.urls = vec!["/a".into()]), None, now);
        assert_eq!(rules.verdict(&key("x", "/a"), &same_ms), Verdict::Gone);
        // `apply` returns once its millisecond is over: what is fetched from then on stays.
        let after = entry("a", SystemTime::now());
        assert_eq!(rules.verdict(&key("x", "/a"), &after), Verdict::Keep);
    }

    #[test]
    fn aliases_of_a_path_are_purged_with_it() {
        let t0 = SystemTime::now();
        let rules = PurgeRules::in_memory(KeyRules::default());
        let e = entry("a", t0);
        rules.apply(
            &req(|r| {
                r.urls = vec!["/x/../p".into()];
                r.prefixes = vec!["/x/../%69mg/".into()];
            }),
            None,
            just_after(t0),
        );
        for alias in ["/p", "/x/%2e%2e/p", "/./p", "/%70"] {
            assert_eq!(
                rules.verdict(&key("h", alias), &e),
                Verdict::Gone,
                "{alias}"
            );
        }
        for alias in ["/img/a.png", "/x/../img/a.png", "/%69mg/a.png"] {
            assert_eq!(
                rules.verdict(&key("h", alias), &e),
                Verdict::Gone,
                "{alias}"
            );
        }
    }
}
