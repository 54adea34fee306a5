//! A purge body as the purge API or the admin listener receives it: validation and applying
//! its rules never panic, and a hard purge of everything leaves nothing usable.
#![no_main]

use std::time::{Duration, SystemTime};

use edgecache_edge::entry::CachedResponse;
use edgecache_edge::key::{CacheKey, KeyRules};
use edgecache_edge::policy::PolicyConfig;
use edgecache_edge::purge::{PurgeRules, Verdict};
use edgecache_purge_api::{PurgeRequest, validate_purge};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = serde_json::from_slice::<PurgeRequest>(data) else {
        return;
    };
    if validate_purge(&request, 1000).is_err() {
        return;
    }
    let rules = PurgeRules::in_memory(KeyRules::default());
    let before = SystemTime::now() - Duration::from_secs(1);
    rules.apply(&request, Some(1), SystemTime::now());
    let entry = CachedResponse::new(
        http::StatusCode::OK,
        &http::HeaderMap::new(),
        Default::default(),
        &http::HeaderMap::new(),
        before,
        before,
        &PolicyConfig::default(),
    );
    for url in request.urls.iter().chain(&request.prefixes) {
        if let Ok(uri) = url.parse::<http::Uri>() {
            let key = CacheKey::new("http", "h", &uri, &KeyRules::default());
            let verdict = rules.verdict(&key, &entry);
            if !request.soft && request.urls.contains(url) && uri.authority().is_none() {
                assert_eq!(verdict, Verdict::Gone, "{url}");
            }
        }
    }
    if request.all && !request.soft {
        let key = CacheKey::new("http", "h", &"/x".parse().unwrap(), &KeyRules::default());
        assert_eq!(rules.verdict(&key, &entry), Verdict::Gone);
    }
});
