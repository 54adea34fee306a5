//! The disk tier's index record: a stored response's metadata, serialised as JSON.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use crate::cache_control::EDGECACHE_CACHE_CONTROL;
use crate::entry::{CachedResponse, DiskRef};
use crate::policy::{Freshness, UnixMs, born_ms, secs32};

/// One stored response, without its body.
#[derive(Debug, Serialize, Deserialize)]
pub struct Record {
    pub status: u16,
    /// Header values are kept byte for byte: each byte becomes the char of the same code.
    pub headers: Vec<(String, String)>,
    pub targeted: Vec<(String, String)>,
    pub vary: Vec<(String, Option<String>)>,
    pub tags: Vec<String>,
    pub stored_at_ms: u64,
    pub freshness: FreshnessRecord,
    pub file: u64,
    pub len: u64,
    pub crcs: Vec<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FreshnessRecord {
    pub lifetime: u64,
    pub stale_while_revalidate: u64,
    pub stale_if_error: u64,
    pub must_revalidate: bool,
    pub no_cache: bool,
    pub corrected_initial_age: u64,
    pub response_time_ms: u64,
    pub heuristic: bool,
}

impl Record {
    pub fn from_entry(e: &CachedResponse, file: u64, len: u64, crcs: &[u32]) -> Self {
        let f = &e.freshness;
        Self {
            status: e.status().as_u16(),
            headers: e
                .headers
                .iter()
                .filter(|f| !f.is_hidden())
                .map(|f| (f.name_str().to_owned(), latin1(&f.value.to_vec())))
                .collect(),
            targeted: e
                .headers
                .hidden()
                .map(|v| {
                    let name = EDGECACHE_CACHE_CONTROL.as_str().to_owned();
                    (name, latin1(&v.to_vec()))
                })
                .collect(),
            vary: e
                .vary()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                .collect(),
            tags: e.tags().map(str::to_owned).collect(),
            stored_at_ms: e.stored_at.0,
            freshness: FreshnessRecord {
                lifetime: f.lifetime.into(),
                stale_while_revalidate: f.stale_while_revalidate.into(),
                stale_if_error: f.stale_if_error.into(),
                must_revalidate: f.must_revalidate,
                no_cache: f.no_cache,
                // The record keeps the two numbers `born_ms` was made of; a time before
                // the epoch is written as an age at the epoch.
                corrected_initial_age: u64::try_from(-f.born_ms).map_or(0, |ms| ms.div_ceil(1000)),
                response_time_ms: u64::try_from(f.born_ms).unwrap_or(0),
                heuristic: f.heuristic,
            },
            file,
            len,
            crcs: crcs.to_vec(),
        }
    }

    /// The entry this record describes, with an empty body and `disk` set.
    pub fn into_entry(self, record_key: Arc<[u8]>) -> Result<CachedResponse, String> {
        let status = StatusCode::from_u16(self.status).map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            let (k, v) = header(k, v)?;
            headers.append(k, v);
        }
        for (k, v) in &self.targeted {
            let (k, v) = header(k, v)?;
            headers.append(k, v);
        }
        // Records written before lengths were left out of the stored fields have one.
        headers.remove(http::header::CONTENT_LENGTH);
        let vary = self
            .vary
            .into_iter()
            .map(|(k, v)| {
                HeaderName::from_bytes(k.as_bytes())
                    .map(|k| (k, v))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        let f = self.freshness;
        Ok(CachedResponse::from_parts(
            crate::stored_head::StoredHead::new(status, &headers),
            Freshness {
                lifetime: secs32(f.lifetime),
                stale_while_revalidate: secs32(f.stale_while_revalidate),
                stale_if_error: secs32(f.stale_if_error),
                born_ms: born_ms(UnixMs(f.response_time_ms), f.corrected_initial_age),
                must_revalidate: f.must_revalidate,
                no_cache: f.no_cache,
                heuristic: f.heuristic,
            },
            vary,
            UnixMs(self.stored_at_ms),
            Some(Box::new(DiskRef {
                record: record_key,
                file: self.file,
                len: self.len,
                crcs: self.crcs.into(),
            })),
        ))
    }
}

fn header(k: &str, v: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?;
    let bytes: Vec<u8> = v
        .chars()
        .map(|c| u8::try_from(u32::from(c)).map_err(|_| format!("header {k}: not a byte")))
        .collect::<Result<_, _>>()?;
    let value = HeaderValue::from_bytes(&bytes).map_err(|e| e.to_string())?;
    Ok((name, value))
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyConfig;
    use std::time::{Duration, SystemTime};

    #[test]
    fn round_trips_an_entry_byte_for_byte() {
        let mut h = HeaderMap::new();
        h.insert("cache-control", HeaderValue::from_static("max-age=60"));
        h.insert("etag", HeaderValue::from_bytes(b"\"abc\xfc\"").unwrap());
        h.insert("vary", HeaderValue::from_static("accept-encoding"));
        h.insert(
            "edgecache-cache-control",
            HeaderValue::from_static("max-age=90"),
        );
        let mut req = HeaderMap::new();
        req.insert("accept-encoding", HeaderValue::from_static("br"));
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let e = CachedResponse::describe(StatusCode::OK, &h, &req, t, t, &PolicyConfig::default());
        let rec = Record::from_entry(&e, 7, 5, &[1, 2]);
        let json = serde_json::to_vec(&rec).unwrap();
        let back: Record = serde_json::from_slice(&json).unwrap();
        let e2 = back.into_entry(Arc::from(&b"k"[..])).unwrap();
        assert_eq!(e2.headers.to_map(0), e.headers.to_map(0));
        let hidden = |e: &CachedResponse| -> Vec<Vec<u8>> {
            e.headers.hidden().map(|v| v.to_vec()).collect()
        };
        assert_eq!(hidden(&e2), hidden(&e));
        assert_eq!(e2.headers.hidden().count(), 1);
        assert!(!e2.headers.to_map(0).contains_key(EDGECACHE_CACHE_CONTROL));
        assert_eq!(e2.vary(), e.vary());
        assert_eq!(e2.freshness, e.freshness);
        assert_eq!(e2.stored_at, e.stored_at);
        let d = e2.disk.unwrap();
        assert_eq!((d.file, d.len, &d.crcs[..]), (7, 5, &[1u32, 2][..]));
    }

    #[test]
    fn a_record_written_with_a_content_length_loads_without_it() {
        // Records written before lengths were left out of the stored fields.
        let json = br#"{"status":200,"headers":[["content-type","text/css"],
            ["content-length","5"],["date","Sun, 06 Nov 1994 08:49:37 GMT"]],
            "targeted":[],"vary":[],"tags":[],"stored_at_ms":784111777000,
            "freshness":{"lifetime":60,"stale_while_revalidate":0,"stale_if_error":0,
            "must_revalidate":false,"no_cache":false,"corrected_initial_age":3,
            "response_time_ms":784111777000,"heuristic":false},
            "file":1,"len":5,"crcs":[9]}"#;
        let record: Record = serde_json::from_slice(json).unwrap();
        let e = record.into_entry(Arc::from(&b"k"[..])).unwrap();
        assert!(!e.headers.contains_key("content-length"));
        assert_eq!(e.body_len(), 5);
        assert_eq!(
            e.headers.get("date").unwrap(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        // Three seconds old when it arrived: the age counts from then.
        let arrived = SystemTime::UNIX_EPOCH + Duration::from_millis(784_111_777_000);
        assert_eq!(e.freshness.age(arrived), 3);
        assert_eq!(e.freshness.age(arrived + Duration::from_secs(10)), 13);
    }
}
