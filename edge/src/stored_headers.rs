//! Response header fields as the cache keeps them: every field, in order, names and values
//! back to back in one buffer.
//!
//! An `http::HeaderMap` costs about 110 bytes per field before its text (hash index,
//! links, a 32-byte handle per name and per value); for the seven or so fields of a typical
//! asset that is several times the text itself, and it is paid by every cached entry. The
//! map a response needs is built from this buffer when one is sent; its values are
//! slices of the buffer, so that costs no copy of the text, and the common names are
//! stored as one byte naming a constant, so they cost no parsing either.
//!
//! Layout, per field: the name as a one-byte code from [`NAMES`] (or 0, a length byte
//! and the lowercase name), then the value's length (u16 big-endian; `0xFFFF` and a u32
//! when longer) and the value.

use std::fmt;

use bytes::{BufMut, Bytes};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Names stored as their index + 1: the fields static assets and their CDNs carry.
static NAMES: [HeaderName; 24] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::DATE,
    header::ACCEPT_RANGES,
    header::VARY,
    header::EXPIRES,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_DISPOSITION,
    header::CONTENT_LOCATION,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::STRICT_TRANSPORT_SECURITY,
    header::X_CONTENT_TYPE_OPTIONS,
    header::SERVER,
    header::SET_COOKIE,
    header::LINK,
    header::LOCATION,
    crate::cache_control::CDN_CACHE_CONTROL,
    crate::cache_status::CACHE_STATUS,
    crate::entry::SURROGATE_KEY,
    crate::entry::CACHE_TAG,
];

/// A value length that does not fit in the u16: the u32 follows.
const LONG_VALUE: u16 = u16::MAX;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoredHeaders {
    /// The field count (u16 BE), then the fields as the module's docs describe.
    buf: Bytes,
}

fn code_of(name: &HeaderName) -> Option<u8> {
    NAMES
        .iter()
        .position(|n| n == name)
        .and_then(|i| u8::try_from(i + 1).ok())
}

/// Which stored names `name` (any letter case) is: a code of [`NAMES`], or spelled out.
fn name_matcher(name: &str) -> Name<'_> {
    match NAMES
        .iter()
        .position(|n| n.as_str().eq_ignore_ascii_case(name))
    {
        Some(i) => Name::Known(i),
        None => Name::Other(name),
    }
}

impl StoredHeaders {
    /// Copies the fields of `map`, in its order (values of one name stay together, as
    /// `HeaderMap` iterates them).
    pub fn from_map(map: &HeaderMap) -> Self {
        // Room for every name spelled out; the buffer is cut to its length at the end.
        let room: usize = map
            .iter()
            .map(|(n, v)| 2 + n.as_str().len() + 6 + v.len())
            .sum();
        let mut buf = Vec::with_capacity(2 + room);
        buf.put_u16(0);
        let mut count: u16 = 0;
        for (name, value) in map {
            // A name longer than 255 bytes, a value over 4 GiB or a 65,536th field are not
            // stored; hyper refuses such responses long before.
            let Ok(value_len) = u32::try_from(value.len()) else {
                continue;
            };
            match code_of(name) {
                Some(code) => buf.put_u8(code),
                None => {
                    let Ok(name_len) = u8::try_from(name.as_str().len()) else {
                        continue;
                    };
                    buf.put_u8(0);
                    buf.put_u8(name_len);
                    buf.put_slice(name.as_str().as_bytes());
                }
            }
            match u16::try_from(value_len) {
                Ok(short) if short != LONG_VALUE => buf.put_u16(short),
                _ => {
                    buf.put_u16(LONG_VALUE);
                    buf.put_u32(value_len);
                }
            }
            buf.put_slice(value.as_bytes());
            count += 1;
            if count == u16::MAX {
                break;
            }
        }
        buf[..2].copy_from_slice(&count.to_be_bytes());
        // Shrunk to fit: an entry keeps no spare capacity for as long as it is cached.
        Self {
            buf: Bytes::from(buf.into_boxed_slice()),
        }
    }

    /// Each field's name and value, in order.
    pub fn iter(&self) -> Fields<'_> {
        Fields {
            buf: &self.buf,
            at: 2,
        }
    }

    pub fn len(&self) -> usize {
        self.buf
            .get(..2)
            .map_or(0, |n| usize::from(u16::from_be_bytes([n[0], n[1]])))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first value of `name`. A common name is compared by its code, so a lookup on
    /// the hit path (`Cache-Status`) compares one byte per field.
    pub fn get(&self, name: impl AsRef<str>) -> Option<HeaderValue> {
        let wanted = name_matcher(name.as_ref());
        self.iter()
            .find(|f| f.name.is(wanted))
            .and_then(|f| self.value(f.value))
    }

    pub fn contains_key(&self, name: impl AsRef<str>) -> bool {
        let wanted = name_matcher(name.as_ref());
        self.iter().any(|f| f.name.is(wanted))
    }

    /// A value as a slice of the buffer (no copy).
    fn value(&self, value: &[u8]) -> Option<HeaderValue> {
        HeaderValue::from_maybe_shared(self.buf.slice_ref(value)).ok()
    }

    /// The fields as a map, for a response or for rules written against `HeaderMap`.
    /// `extra` is room for fields the caller will add.
    pub fn to_map(&self, extra: usize) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.len() + extra);
        for field in self.iter() {
            // Valid when stored; the checks cost little next to the insert.
            if let (Some(name), Some(value)) = (field.header_name(), self.value(field.value)) {
                map.append(name, value);
            }
        }
        map
    }

    /// Heap bytes held: the buffer.
    pub fn heap_size(&self) -> usize {
        self.buf.len()
    }
}

impl fmt::Debug for StoredHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .map(|field| (field.name_str(), String::from_utf8_lossy(field.value))),
            )
            .finish()
    }
}

/// One stored field.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    name: Name<'a>,
    pub value: &'a [u8],
}

/// A stored name: an index into [`NAMES`], or the lowercase name itself.
#[derive(Debug, Clone, Copy)]
enum Name<'a> {
    Known(usize),
    Other(&'a str),
}

impl Name<'_> {
    fn is(self, other: Name<'_>) -> bool {
        match (self, other) {
            (Name::Known(a), Name::Known(b)) => a == b,
            (Name::Other(a), Name::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }
}

impl<'a> Field<'a> {
    /// The name as text (stored names are valid, lowercase ASCII).
    pub fn name_str(&self) -> &'a str {
        match self.name {
            Name::Known(i) => NAMES[i].as_str(),
            Name::Other(s) => s,
        }
    }

    /// The name as a `HeaderName`; `None` only if the stored bytes were not a valid name,
    /// which they always are (they came from one).
    pub fn header_name(&self) -> Option<HeaderName> {
        match self.name {
            Name::Known(i) => Some(NAMES[i].clone()),
            Name::Other(s) => HeaderName::from_bytes(s.as_bytes()).ok(),
        }
    }
}

pub struct Fields<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = Field<'a>;

    fn next(&mut self) -> Option<Field<'a>> {
        let mut at = self.at;
        let code = *self.buf.get(at)?;
        at += 1;
        let name = if code == 0 {
            let len = usize::from(*self.buf.get(at)?);
            let name = std::str::from_utf8(self.buf.get(at + 1..at + 1 + len)?).ok()?;
            at += 1 + len;
            Name::Other(name)
        } else {
            let i = usize::from(code) - 1;
            NAMES.get(i)?;
            Name::Known(i)
        };
        let short = self.buf.get(at..at + 2)?;
        let mut value_len = usize::from(u16::from_be_bytes([short[0], short[1]]));
        at += 2;
        if value_len == usize::from(LONG_VALUE) {
            let long = self.buf.get(at..at + 4)?;
            value_len = u32::from_be_bytes([long[0], long[1], long[2], long[3]]) as usize;
            at += 4;
        }
        let value = self.buf.get(at..at + value_len)?;
        self.at = at + value_len;
        Some(Field { name, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("content-type", HeaderValue::from_static("text/css"));
        map.append("set-cookie", HeaderValue::from_static("a=1"));
        map.append("set-cookie", HeaderValue::from_static("b=2"));
        map.insert("etag", HeaderValue::from_static("\"v1\""));
        map.insert("x-empty", HeaderValue::from_static(""));
        map.insert("x-bytes", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        map
    }

    #[test]
    fn every_field_comes_back_in_order() {
        let map = sample();
        let stored = StoredHeaders::from_map(&map);
        assert_eq!(stored.len(), 6);
        assert_eq!(stored.to_map(0), map);
        let order: Vec<_> = stored.iter().map(|f| f.name_str().to_owned()).collect();
        let expected: Vec<_> = map.iter().map(|(n, _)| n.as_str().to_owned()).collect();
        assert_eq!(order, expected);
        let cookies: Vec<_> = stored
            .to_map(0)
            .get_all("set-cookie")
            .iter()
            .cloned()
            .collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
    }

    #[test]
    fn lookups_find_the_first_value() {
        let stored = StoredHeaders::from_map(&sample());
        assert_eq!(stored.get("set-cookie").unwrap(), "a=1");
        assert_eq!(stored.get(&http::header::ETAG).unwrap(), "\"v1\"");
        assert!(stored.get(&http::header::LAST_MODIFIED).is_none());
        assert!(stored.contains_key("X-Empty"));
        assert!(!stored.contains_key("age"));
    }

    #[test]
    fn common_names_cost_one_byte_and_others_their_text() {
        let map = sample();
        let stored = StoredHeaders::from_map(&map);
        let values: usize = map.iter().map(|(_, v)| 2 + v.len()).sum();
        // content-type, set-cookie ×2, etag: a code each; x-empty and x-bytes spelled out.
        let names = 4 + (2 + "x-empty".len()) + (2 + "x-bytes".len());
        assert_eq!(stored.heap_size(), 2 + values + names);
        assert!(StoredHeaders::default().is_empty());
        assert_eq!(StoredHeaders::default().len(), 0);
    }

    #[test]
    fn a_value_longer_than_64_kib_is_kept_whole() {
        let mut map = HeaderMap::new();
        let long = "a".repeat(70_000);
        map.insert("x-long", HeaderValue::from_str(&long).unwrap());
        map.insert("etag", HeaderValue::from_static("\"e\""));
        let stored = StoredHeaders::from_map(&map);
        assert_eq!(stored.to_map(0), map);
        assert_eq!(stored.get("x-long").unwrap().len(), 70_000);
    }

    #[test]
    fn every_name_in_the_table_round_trips() {
        let mut map = HeaderMap::new();
        for name in &NAMES {
            map.append(name.clone(), HeaderValue::from_static("v"));
        }
        let stored = StoredHeaders::from_map(&map);
        assert_eq!(stored.heap_size(), 2 + NAMES.len() * 4);
        assert_eq!(stored.to_map(0), map);
    }
}
