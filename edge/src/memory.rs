//! The memory tier: a moka cache bounded in bytes, holding every variant of a URL.

use std::sync::Arc;

use http::HeaderMap;
use moka::ops::compute::Op;
use moka::sync::Cache;

use crate::entry::CachedResponse;
use crate::key::CacheKey;

/// The variants stored for one key, newest first. Most URLs have one, held as it is; a
/// list is allocated only for URLs whose responses vary.
#[derive(Debug, Clone)]
pub enum Variants {
    One(Arc<CachedResponse>),
    /// Two or more, newest first (`Arc<Vec>`: a thin pointer keeps the enum at 16 bytes).
    Many(Arc<Vec<Arc<CachedResponse>>>),
}

impl Variants {
    /// Newest first.
    pub fn entries(&self) -> &[Arc<CachedResponse>] {
        match self {
            Self::One(e) => std::slice::from_ref(e),
            Self::Many(list) => list,
        }
    }

    /// `None` when `entries` is empty.
    fn from_vec(mut entries: Vec<Arc<CachedResponse>>) -> Option<Self> {
        match entries.len() {
            0 => None,
            1 => entries.pop().map(Self::One),
            _ => Some(Self::Many(Arc::new(entries))),
        }
    }

    fn weight(&self, key: &CacheKey) -> u32 {
        let total: usize = key.weight() + self.entries().iter().map(|e| e.weight()).sum::<usize>();
        u32::try_from(total).unwrap_or(u32::MAX)
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A variant matching the request's `Vary` fields.
    Found(Arc<CachedResponse>),
    /// The URL is cached, but no variant matches this request.
    VaryMiss,
    /// Nothing is cached for the URL.
    Miss,
}

/// Bounded in-memory store of responses.
#[derive(Clone)]
pub struct MemoryTier {
    cache: Cache<CacheKey, Variants>,
    max_object_size: usize,
}

/// How many variants of one URL are kept; older ones are dropped.
const MAX_VARIANTS: usize = 16;

impl MemoryTier {
    /// A tier holding at most `capacity` bytes and objects of at most `max_object_size`.
    pub fn new(capacity: u64, max_object_size: usize) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .weigher(|key: &CacheKey, v: &Variants| v.weight(key))
            .build();
        Self {
            cache,
            max_object_size,
        }
    }

    pub fn max_object_size(&self) -> usize {
        self.max_object_size
    }

    /// Finds the newest variant of `key` that matches `request_headers`.
    pub fn lookup(&self, key: &CacheKey, request_headers: &HeaderMap) -> Lookup {
        match self.cache.get(key) {
            None => Lookup::Miss,
            Some(variants) => variants
                .entries()
                .iter()
                .find(|e| e.matches(request_headers))
                .map_or(Lookup::VaryMiss, |e| Lookup::Found(e.clone())),
        }
    }

    /// The variant `entry` was stored as, if it is still that very entry (not replaced).
    pub fn lookup_exact(&self, key: &CacheKey, entry: &Arc<CachedResponse>) -> Lookup {
        match self.cache.get(key) {
            Some(v) if v.entries().iter().any(|e| Arc::ptr_eq(e, entry)) => {
                Lookup::Found(entry.clone())
            }
            Some(_) => Lookup::VaryMiss,
            None => Lookup::Miss,
        }
    }

    /// Stores `entry` as the newest variant of `key`, replacing any variant selected by the
    /// same request header values. Returns false when the object is too large to keep, or
    /// its body is on the disk tier only.
    pub fn store(&self, key: &CacheKey, entry: Arc<CachedResponse>) -> bool {
        if entry.body.len() > self.max_object_size || !entry.body_in_memory() {
            return false;
        }
        self.cache.entry(key.clone()).and_compute_with(|existing| {
            let mut entries = vec![entry.clone()];
            if let Some(existing) = existing {
                entries.extend(
                    existing
                        .value()
                        .entries()
                        .iter()
                        .filter(|e| e.vary() != entry.vary())
                        .take(MAX_VARIANTS - 1)
                        .cloned(),
                );
            }
            // Never empty: it holds `entry`.
            Variants::from_vec(entries).map_or(Op::Nop, Op::Put)
        });
        true
    }

    /// Applies `judge` to every stored entry: `Gone` ones are removed, `Stale` ones replaced
    /// by a stale copy. Returns how many entries changed.
    pub fn sweep(
        &self,
        judge: impl Fn(&CacheKey, &CachedResponse) -> crate::purge::Verdict,
        now: std::time::SystemTime,
    ) -> usize {
        use crate::purge::Verdict;
        let mut changed = 0;
        for (key, variants) in self.cache.iter() {
            let mut kept = Vec::with_capacity(variants.entries().len());
            let mut touched = false;
            for e in variants.entries() {
                match judge(&key, e) {
                    Verdict::Keep => kept.push(e.clone()),
                    Verdict::Stale => {
                        kept.push(Arc::new(crate::purge::mark_stale(e, now)));
                        touched = true;
                    }
                    Verdict::Gone => touched = true,
                }
            }
            if touched {
                changed += variants.entries().len();
                match Variants::from_vec(kept) {
                    None => self.cache.invalidate(&*key),
                    Some(v) => self.cache.insert((*key).clone(), v),
                }
            }
        }
        changed
    }

    /// Drops every variant of `key`.
    pub fn invalidate(&self, key: &CacheKey) {
        self.cache.invalidate(key);
    }

    /// Drops everything.
    pub fn clear(&self) {
        self.cache.invalidate_all();
    }

    /// Number of URLs held (each may have several variants).
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    /// Bytes held, as the weigher counts them.
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyRules;
    use crate::policy::PolicyConfig;
    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};
    use std::time::SystemTime;

    fn entry(vary_value: Option<&'static str>, body: &'static str) -> Arc<CachedResponse> {
        let mut resp = HeaderMap::new();
        resp.insert("vary", HeaderValue::from_static("accept-encoding"));
        let mut req = HeaderMap::new();
        if let Some(v) = vary_value {
            req.insert("accept-encoding", HeaderValue::from_static(v));
        }
        let t = SystemTime::now();
        Arc::new(CachedResponse::new(
            StatusCode::OK,
            &resp,
            Bytes::from_static(body.as_bytes()),
            &req,
            t,
            t,
            &PolicyConfig::default(),
        ))
    }

    fn key() -> CacheKey {
        CacheKey::new("http", "a", &"/x".parse().unwrap(), &KeyRules::default())
    }

    fn req(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("accept-encoding", HeaderValue::from_static(v));
        h
    }

    #[test]
    fn variants_are_kept_side_by_side() {
        let tier = MemoryTier::new(1 << 20, 1 << 20);
        assert!(matches!(tier.lookup(&key(), &req("gzip")), Lookup::Miss));
        tier.store(&key(), entry(Some("gzip"), "g"));
        tier.store(&key(), entry(Some("br"), "b"));
        let Lookup::Found(e) = tier.lookup(&key(), &req("gzip")) else {
            panic!("gzip variant missing")
        };
        assert_eq!(&e.body[..], b"g");
        let Lookup::Found(e) = tier.lookup(&key(), &req("br")) else {
            panic!("br variant missing")
        };
        assert_eq!(&e.body[..], b"b");
        assert!(matches!(
            tier.lookup(&key(), &req("zstd")),
            Lookup::VaryMiss
        ));
    }

    #[test]
    fn same_variant_is_replaced() {
        let tier = MemoryTier::new(1 << 20, 1 << 20);
        tier.store(&key(), entry(Some("gzip"), "old"));
        tier.store(&key(), entry(Some("gzip"), "new"));
        let Lookup::Found(e) = tier.lookup(&key(), &req("gzip")) else {
            panic!("missing")
        };
        assert_eq!(&e.body[..], b"new");
    }

    #[test]
    fn oversize_objects_are_refused() {
        let tier = MemoryTier::new(1 << 20, 2);
        assert!(!tier.store(&key(), entry(None, "too big")));
        assert!(matches!(
            tier.lookup(&key(), &HeaderMap::new()),
            Lookup::Miss
        ));
    }

    #[test]
    fn capacity_bounds_the_bytes_held() {
        let tier = MemoryTier::new(64 * 1024, 1 << 20);
        let body: &'static str = Box::leak("x".repeat(4096).into_boxed_str());
        for i in 0..200 {
            let k = CacheKey::new(
                "http",
                "a",
                &format!("/{i}").parse().unwrap(),
                &KeyRules::default(),
            );
            tier.store(&k, entry(None, body));
        }
        assert!(tier.weighted_size() <= 64 * 1024);
    }
}
