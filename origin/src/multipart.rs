//! `multipart/byteranges` framing (RFC 9110 §14.6) for a `206` answering several ranges.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::HeaderValue;

use crate::body::Segment;
use crate::range::{content_range, range_len};

/// A multipart body laid out ahead of time, so its exact length is known before streaming.
#[derive(Debug, Clone)]
pub(crate) struct Multipart {
    boundary: String,
    segments: Vec<Segment>,
    len: u64,
}

impl Multipart {
    /// Frames `ranges` of a `total`-byte representation whose parts are of `content_type`.
    pub(crate) fn new(ranges: &[RangeInclusive<u64>], content_type: &str, total: u64) -> Self {
        Self::with_boundary(boundary(), ranges, content_type, total)
    }

    fn with_boundary(
        boundary: String,
        ranges: &[RangeInclusive<u64>],
        content_type: &str,
        total: u64,
    ) -> Self {
        let mut segments = Vec::with_capacity(ranges.len() * 2 + 1);
        let mut len = 0u64;
        for (i, range) in ranges.iter().enumerate() {
            // The CRLF before each delimiter belongs to the delimiter (RFC 2046 §5.1.1),
            // so the first part has none.
            let separator = if i == 0 { "" } else { "\r\n" };
            let head = format!(
                "{separator}--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: {}\r\n\r\n",
                content_range(range, total)
            );
            len += head.len() as u64 + range_len(range);
            segments.push(Segment::Bytes(Bytes::from(head)));
            segments.push(Segment::File {
                start: *range.start(),
                len: range_len(range),
            });
        }
        let tail = format!("\r\n--{boundary}--\r\n");
        len += tail.len() as u64;
        segments.push(Segment::Bytes(Bytes::from(tail)));
        Multipart {
            boundary,
            segments,
            len,
        }
    }

    /// `Content-Type` of the whole response.
    pub(crate) fn content_type(&self) -> HeaderValue {
        HeaderValue::from_str(&format!("multipart/byteranges; boundary={}", self.boundary))
            .unwrap_or(HeaderValue::from_static("multipart/byteranges"))
    }

    /// Exact byte length of the body.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn into_segments(self) -> Vec<Segment> {
        self.segments
    }
}

/// A boundary unlikely to occur in any file: 128 bits from the std hasher's per-process
/// random keys mixed with a counter, so it is unpredictable to someone crafting a file.
fn boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let state = RandomState::new();
    let a = state.hash_one(n);
    let b = state.hash_one(!n);
    format!("edgecache-{a:016x}{b:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(multipart: &Multipart, file: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for segment in multipart.clone().into_segments() {
            match segment {
                Segment::Bytes(bytes) => out.extend_from_slice(&bytes),
                Segment::File { start, len } => {
                    out.extend_from_slice(&file[start as usize..(start + len) as usize])
                }
            }
        }
        out
    }

    #[test]
    fn frames_parts_with_type_range_and_closing_delimiter() {
        let file = b"0123456789";
        let multipart = Multipart::with_boundary("B".into(), &[0..=1, 7..=9], "text/plain", 10);
        let expected = "--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/10\r\n\r\n01\
                        \r\n--B\r\nContent-Type: text/plain\r\nContent-Range: bytes 7-9/10\r\n\r\n789\
                        \r\n--B--\r\n";
        let body = rendered(&multipart, file);
        assert_eq!(String::from_utf8(body.clone()).unwrap(), expected);
        assert_eq!(multipart.len(), body.len() as u64);
        assert_eq!(multipart.content_type(), "multipart/byteranges; boundary=B");
    }

    #[test]
    fn boundaries_differ_and_are_valid_tokens() {
        let a = boundary();
        let b = boundary();
        assert_ne!(a, b);
        assert_eq!(a.len(), "edgecache-".len() + 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
        let multipart = Multipart::new(&[0..=0, 2..=2], "image/png", 3);
        assert!(
            multipart
                .content_type()
                .to_str()
                .unwrap()
                .ends_with(&multipart.boundary)
        );
    }
}
