//! Decoded index records of recently looked-up keys, so that a hit on a body kept on disk
//! only does not read the index and parse its JSON again.
//!
//! Every change to a key's records (store, refresh, removal, eviction) drops the key here.
//! A lookup that read the index while a change was being made does not keep what it read:
//! each change bumps a generation, and a lookup keeps its result only if the generation it
//! started with is still current once the result is in the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use moka::sync::Cache;

use crate::entry::CachedResponse;

/// Bytes of decoded records kept (heads only: their bodies stay on disk).
const CAPACITY: u64 = 32 << 20;

/// Every stored variant of one key, as decoded from the index. Empty: the index has none.
pub type Variants = Arc<[Arc<CachedResponse>]>;

pub struct Heads {
    cache: Cache<Box<str>, Variants>,
    generation: AtomicU64,
}

// The signature is moka's.
#[allow(clippy::borrowed_box)]
fn weigh(key: &Box<str>, variants: &Variants) -> u32 {
    let heads: usize = variants.iter().map(|e| e.weight()).sum();
    u32::try_from(key.len() + 64 + heads).unwrap_or(u32::MAX)
}

impl Default for Heads {
    fn default() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(CAPACITY)
                .weigher(weigh)
                .build(),
            generation: AtomicU64::new(0),
        }
    }
}

impl Heads {
    pub fn get(&self, key: &str) -> Option<Variants> {
        self.cache.get(key)
    }

    /// The generation to hand to [`Self::keep`]: read it before reading the index.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Keeps what a lookup read from the index, unless a change happened since `generation`.
    pub fn keep(&self, key: &str, variants: Variants, generation: u64) {
        self.cache.insert(key.into(), variants);
        // A change that raced the insert may have dropped the key before it was inserted.
        if self.generation.load(Ordering::SeqCst) != generation {
            self.cache.invalidate(key);
        }
    }

    /// Call after changing any record of the key that `rkey` (a record key) belongs to.
    pub fn changed(&self, rkey: &[u8]) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let text = rkey.split(|b| *b == 0).next().unwrap_or_default();
        if let Ok(key) = std::str::from_utf8(text) {
            self.cache.invalidate(key);
        }
    }

    /// Bytes held, by the weigher's estimate.
    pub fn weighted_size(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.weighted_size()
    }

    #[cfg(test)]
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Variants {
        let mut headers = http::HeaderMap::new();
        headers.insert("cache-control", "max-age=60".parse().unwrap());
        let now = std::time::SystemTime::now();
        let entry = CachedResponse::new(
            http::StatusCode::OK,
            &headers,
            bytes::Bytes::new(),
            &http::HeaderMap::new(),
            now,
            now,
            &crate::policy::PolicyConfig::default(),
        );
        Arc::from(vec![Arc::new(entry)])
    }

    #[test]
    fn a_change_drops_the_key_it_names() {
        let heads = Heads::default();
        heads.keep("http://a/x", one(), heads.generation());
        heads.keep("http://a/y", one(), heads.generation());
        assert!(heads.get("http://a/x").is_some());
        heads.changed(b"http://a/x\0accept-encoding=gzip\x1f");
        assert!(heads.get("http://a/x").is_none());
        assert!(heads.get("http://a/y").is_some());
    }

    #[test]
    fn a_lookup_that_raced_a_change_keeps_nothing() {
        let heads = Heads::default();
        let before = heads.generation();
        // The change lands while the lookup reads the index.
        heads.changed(b"http://a/x\0");
        heads.keep("http://a/x", one(), before);
        assert!(heads.get("http://a/x").is_none());
        assert_eq!(heads.entry_count(), 0);
        // A lookup started after it keeps its result.
        heads.keep("http://a/x", one(), heads.generation());
        assert!(heads.get("http://a/x").is_some());
    }
}
