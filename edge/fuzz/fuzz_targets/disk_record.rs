//! A disk-tier index record as read back from a damaged or hostile directory: decoding it
//! never panics; it is an entry or an error.
#![no_main]

use std::sync::Arc;

use edgecache_edge::disk::meta::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = serde_json::from_slice::<Record>(data) {
        let len = record.len;
        if let Ok(entry) = record.into_entry(Arc::from(&b"key"[..])) {
            assert_eq!(entry.body_len(), len);
        }
    }
});
