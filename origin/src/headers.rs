//! Response metadata of one file variant: validators, content type and the caching headers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, LAST_MODIFIED, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::precompressed::Encoding;

/// Tags for purging by tag (Fastly's name; the edge also reads `Cache-Tag`).
pub(crate) static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");

/// The latest instant an HTTP-date can express (9999-12-31T23:59:59Z).
const MAX_HTTP_DATE_SECS: u64 = 253_402_300_799;

/// What conditional requests are compared against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Validators {
    /// Strong entity tag, quotes included.
    pub(crate) etag: String,
    /// Modification time cut to whole seconds, as it appears on the wire.
    pub(crate) last_modified: Option<SystemTime>,
}

impl Validators {
    /// Validators for a file of `len` bytes last modified at `modified`, served with `encoding`.
    ///
    /// The ETag uses the full-precision mtime, so a rewrite within the same second still
    /// changes it, and carries the coding, since each variant has different bytes.
    pub(crate) fn new(len: u64, modified: Option<SystemTime>, encoding: Encoding) -> Self {
        let nanos = modified
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        Validators {
            etag: format!("\"{len:x}-{nanos:x}{}\"", encoding.etag_suffix()),
            last_modified: modified.map(whole_seconds),
        }
    }

    pub(crate) fn etag_header(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.etag).ok()
    }

    pub(crate) fn last_modified_header(&self) -> Option<HeaderValue> {
        let date = httpdate::fmt_http_date(self.last_modified?);
        HeaderValue::from_str(&date).ok()
    }
}

/// Truncates to whole seconds and clamps into the range an HTTP-date can express, so
/// formatting never panics on odd file times.
pub(crate) fn whole_seconds(time: SystemTime) -> SystemTime {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(MAX_HTTP_DATE_SECS);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// `Content-Type` guessed from the URL path's extension, with a charset for text formats
/// because site files are overwhelmingly UTF-8 and browsers otherwise guess.
pub(crate) fn content_type(url_path: &str) -> HeaderValue {
    let mime = mime_guess::from_path(url_path).first_or_octet_stream();
    let essence = mime.essence_str();
    let textual = mime.type_() == mime_guess::mime::TEXT
        || essence.contains("javascript")
        || essence.ends_with("json");
    let value = if textual && mime.get_param("charset").is_none() {
        format!("{essence}; charset=utf-8")
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

/// Everything about the chosen variant that goes into response headers.
#[derive(Debug, Clone)]
pub(crate) struct Representation {
    pub(crate) len: u64,
    pub(crate) content_type: HeaderValue,
    pub(crate) encoding: Encoding,
    pub(crate) validators: Validators,
    pub(crate) cache_control: Option<HeaderValue>,
    pub(crate) surrogate_key: Option<HeaderValue>,
    /// Whether a precompressed sibling exists, so responses depend on `Accept-Encoding`.
    pub(crate) vary: bool,
}

impl Representation {
    /// `Vary`, which every response about this path carries so caches key it right.
    pub(crate) fn insert_vary(&self, headers: &mut HeaderMap) {
        if self.vary {
            headers.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        }
    }

    /// Headers a cache needs to store or refresh the entry: on 200, 206 and 304.
    pub(crate) fn insert_cache_headers(&self, headers: &mut HeaderMap) {
        if let Some(etag) = self.validators.etag_header() {
            headers.insert(ETAG, etag);
        }
        if let Some(date) = self.validators.last_modified_header() {
            headers.insert(LAST_MODIFIED, date);
        }
        if let Some(cache_control) = &self.cache_control {
            headers.insert(CACHE_CONTROL, cache_control.clone());
        }
        if let Some(keys) = &self.surrogate_key {
            headers.insert(SURROGATE_KEY.clone(), keys.clone());
        }
        self.insert_vary(headers);
    }

    /// Headers describing the bytes of a 200 or 206 (besides its length and range).
    pub(crate) fn insert_content_headers(&self, headers: &mut HeaderMap) {
        headers.insert(CONTENT_TYPE, self.content_type.clone());
        if let Some(coding) = self.encoding.as_str() {
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
        }
        headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        self.insert_cache_headers(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_is_strong_and_distinct_per_variant() {
        let mtime = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        let identity = Validators::new(255, Some(mtime), Encoding::Identity);
        assert_eq!(identity.etag, "\"ff-17979cfe362a007b\"");
        let br = Validators::new(255, Some(mtime), Encoding::Brotli);
        let gz = Validators::new(255, Some(mtime), Encoding::Gzip);
        assert!(br.etag.ends_with("-br\"") && gz.etag.ends_with("-gz\""));
        assert_ne!(br.etag, gz.etag);
        assert!(!identity.etag.starts_with("W/"));
    }

    #[test]
    fn etag_changes_within_the_same_second() {
        let a = Validators::new(
            1,
            Some(UNIX_EPOCH + Duration::new(100, 1)),
            Encoding::Identity,
        );
        let b = Validators::new(
            1,
            Some(UNIX_EPOCH + Duration::new(100, 2)),
            Encoding::Identity,
        );
        assert_ne!(a.etag, b.etag);
        assert_eq!(a.last_modified, b.last_modified);
    }

    #[test]
    fn last_modified_is_whole_seconds_and_never_panics() {
        let v = Validators::new(
            1,
            Some(UNIX_EPOCH + Duration::new(784_111_777, 999)),
            Encoding::Identity,
        );
        assert_eq!(
            v.last_modified_header().unwrap(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        let before_epoch = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(whole_seconds(before_epoch), UNIX_EPOCH);
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 4);
        let v = Validators::new(1, Some(far), Encoding::Identity);
        assert_eq!(
            v.last_modified_header().unwrap(),
            "Fri, 31 Dec 9999 23:59:59 GMT"
        );
        assert_eq!(
            Validators::new(1, None, Encoding::Identity).last_modified_header(),
            None
        );
    }

    #[test]
    fn text_types_get_utf8_charset() {
        assert_eq!(content_type("/a.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("/a.css"), "text/css; charset=utf-8");
        assert!(
            content_type("/a.js")
                .to_str()
                .unwrap()
                .ends_with("javascript; charset=utf-8")
        );
        assert_eq!(content_type("/a.json"), "application/json; charset=utf-8");
        assert_eq!(content_type("/a.png"), "image/png");
        assert_eq!(content_type("/noext"), "application/octet-stream");
    }
}
