//! Range requests (RFC 9110 §14): which bytes of a representation a `Range` header selects.

use std::ops::RangeInclusive;

use http::HeaderValue;
use http_range_header::RangeUnsatisfiableError;

/// How much of the representation to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RangePlan {
    /// `200` with everything: no `Range`, or one that is ignored.
    Full,
    /// `206` with these ranges, in the order asked for; never empty.
    Partial(Vec<RangeInclusive<u64>>),
    /// `416`: every range starts past the end.
    Unsatisfiable,
}

impl RangePlan {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            RangePlan::Full => "full",
            RangePlan::Partial(ranges) if ranges.len() == 1 => "single-range",
            RangePlan::Partial(_) => "multi-range",
            RangePlan::Unsatisfiable => "unsatisfiable",
        }
    }
}

/// Plans the response to a `Range` header over a representation of `len` bytes.
///
/// A server may always ignore `Range` (§14.2), so anything the parser refuses, from bad
/// syntax to too many or overlapping ranges, gets the full representation; only ranges that
/// are well-formed but all past the end get `416`.
pub(crate) fn plan(range: Option<&HeaderValue>, len: u64) -> RangePlan {
    let Some(value) = range.and_then(|v| v.to_str().ok()) else {
        return RangePlan::Full;
    };
    let Ok(parsed) = http_range_header::parse_range_header(value) else {
        return RangePlan::Full;
    };
    match parsed.validate(len) {
        // Only possible on an empty file asked for a suffix: the whole (empty) body is the answer.
        Ok(ranges) if ranges.is_empty() => RangePlan::Full,
        Ok(ranges) => RangePlan::Partial(ranges),
        Err(RangeUnsatisfiableError::Unsatisfiable) => RangePlan::Unsatisfiable,
        Err(_) => RangePlan::Full,
    }
}

/// Number of bytes in `range`.
pub(crate) fn range_len(range: &RangeInclusive<u64>) -> u64 {
    range.end() - range.start() + 1
}

/// `Content-Range` of a part: `bytes 0-99/1000`.
pub(crate) fn content_range(range: &RangeInclusive<u64>, len: u64) -> String {
    format!("bytes {}-{}/{len}", range.start(), range.end())
}

/// `Content-Range` of a `416`: `bytes */1000`.
pub(crate) fn unsatisfied_range(len: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("bytes */{len}"))
        .unwrap_or(HeaderValue::from_static("bytes */0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_for(header: &str, len: u64) -> RangePlan {
        plan(Some(&HeaderValue::from_str(header).unwrap()), len)
    }

    #[test]
    fn no_header_is_full() {
        assert_eq!(plan(None, 10), RangePlan::Full);
    }

    #[test]
    fn single_ranges_are_clamped_to_the_end() {
        assert_eq!(plan_for("bytes=0-4", 10), RangePlan::Partial(vec![0..=4]));
        assert_eq!(plan_for("bytes=5-", 10), RangePlan::Partial(vec![5..=9]));
        assert_eq!(plan_for("bytes=-3", 10), RangePlan::Partial(vec![7..=9]));
        assert_eq!(plan_for("bytes=-30", 10), RangePlan::Partial(vec![0..=9]));
        assert_eq!(plan_for("bytes=8-100", 10), RangePlan::Partial(vec![8..=9]));
        assert_eq!(plan_for("bytes=9-9", 10), RangePlan::Partial(vec![9..=9]));
        assert_eq!(plan_for("BYTES=0-0", 10), RangePlan::Partial(vec![0..=0]));
    }

    #[test]
    fn several_ranges_keep_their_order() {
        assert_eq!(
            plan_for("bytes=6-7, 0-1", 10),
            RangePlan::Partial(vec![6..=7, 0..=1])
        );
    }

    #[test]
    fn unsatisfiable_only_when_every_range_is_past_the_end() {
        assert_eq!(plan_for("bytes=10-", 10), RangePlan::Unsatisfiable);
        assert_eq!(plan_for("bytes=10-20", 10), RangePlan::Unsatisfiable);
        assert_eq!(plan_for("bytes=-0", 10), RangePlan::Unsatisfiable);
        assert_eq!(plan_for("bytes=0-0", 0), RangePlan::Unsatisfiable);
        assert_eq!(
            plan_for("bytes=20-30, 2-3", 10),
            RangePlan::Partial(vec![2..=3])
        );
    }

    #[test]
    fn invalid_or_abusive_headers_are_ignored() {
        assert_eq!(plan_for("bytes=5-3", 10), RangePlan::Full, "reversed");
        assert_eq!(plan_for("items=0-1", 10), RangePlan::Full, "unknown unit");
        assert_eq!(plan_for("bytes=", 10), RangePlan::Full);
        assert_eq!(plan_for("bytes=a-b", 10), RangePlan::Full);
        assert_eq!(plan_for("bytes=0-1 ", 10), RangePlan::Full);
        assert_eq!(
            plan_for("bytes=0-5, 1-6, 2-7", 10),
            RangePlan::Full,
            "overlapping"
        );
        let many: Vec<String> = (0..101).map(|i| format!("{i}-{i}")).collect();
        assert_eq!(
            plan_for(&format!("bytes={}", many.join(",")), 1000),
            RangePlan::Full
        );
        assert_eq!(
            plan(Some(&HeaderValue::from_bytes(b"bytes=\xff").unwrap()), 10),
            RangePlan::Full
        );
    }

    #[test]
    fn empty_file_suffix_range_is_full() {
        assert_eq!(plan_for("bytes=-5", 0), RangePlan::Full);
    }

    #[test]
    fn huge_files_and_offsets_do_not_overflow() {
        let two_gib = 2 * 1024 * 1024 * 1024;
        assert_eq!(
            plan_for("bytes=2147483647-99999999999999999999999", two_gib),
            RangePlan::Partial(vec![2_147_483_647..=two_gib - 1])
        );
        assert_eq!(range_len(&(0..=u64::MAX - 1)), u64::MAX);
    }

    #[test]
    fn content_range_formats() {
        assert_eq!(content_range(&(0..=99), 1000), "bytes 0-99/1000");
        assert_eq!(unsatisfied_range(1000), "bytes */1000");
        assert_eq!(
            RangePlan::Partial(vec![0..=1, 3..=4]).as_str(),
            "multi-range"
        );
    }
}
