//! A client's `Range` header: never a plan for bytes outside the object.
#![no_main]

use edgecache_edge::respond::{RangePlan, plan_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u32, &str)| {
    let (len, range) = input;
    let len = u64::from(len);
    if let RangePlan::Single(start, end) = plan_range(range, len) {
        assert!(start <= end && end < len);
    }
});
