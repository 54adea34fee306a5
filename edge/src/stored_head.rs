//! A response head as the cache keeps it: the status code, then every field, in order,
//! names and values back to back, all in one buffer.
//!
//! An `http::HeaderMap` costs about 110 bytes per field before its text (hash index,
//! links, a 32-byte handle per name and per value); for the seven or so fields of a typical
//! asset that is several times the text itself, and it is paid by every cached entry. The
//! map a response needs is built from this buffer when one is sent: the values are copied
//! into one new buffer the map's values are slices of, and the common names are stored as
//! one byte naming a constant, so they cost no parsing.
//!
//! Layout: the status code (u16, big-endian; kept here, the entry's struct has no room
//! for it without growing by 8 bytes), then per field: the name as a one-byte code from
//! [`NAMES`] (or 0, a length byte and the lowercase name), then the value:
//!
//! - `0x00..=0x7F`: a length of 0–127, then the value;
//! - `0x80..=0xBF`: with the next byte, a 14-bit length, then the value;
//! - `0xC0`: a u32 length (big-endian), then the value;
//! - `0xC1`: an HTTP date as u32 seconds since the Unix epoch, for `Date`,
//!   `Last-Modified` and `Expires` only. Only a value that is exactly the IMF-fixdate of
//!   those seconds is stored so (as origins send them): 5 bytes instead of 31, and the
//!   same 29 bytes come back.
//!
//! `Edgecache-Cache-Control` lines are kept with the other fields, in one buffer, but
//! [`StoredHead::to_map`] leaves them out: they are for this cache, not its clients.

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Names stored as their index + 1: the fields static assets and their CDNs carry.
static NAMES: [HeaderName; 25] = [
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
    crate::cache_control::EDGECACHE_CACHE_CONTROL,
];

/// The code of `Edgecache-Cache-Control`: stored (a 304 recomputes freshness from it) but
/// never sent to clients.
const HIDDEN: u8 = NAMES.len() as u8;

/// Bytes of the status code at the start of the buffer.
const STATUS_LEN: usize = 2;

/// Value tags, as the module's docs describe.
const LEN_TWO_BYTES: u8 = 0x80;
const LEN_U32: u8 = 0xC0;
const DATE: u8 = 0xC1;
/// Length of an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
const IMF_FIXDATE_LEN: usize = 29;

#[derive(Clone, PartialEq, Eq)]
pub struct StoredHead {
    /// The fields as the module's docs describe. A box, not `Bytes`: a shared `Bytes`
    /// would add a 24-byte reference count to every entry the first time it is served.
    buf: Box<[u8]>,
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

/// The seconds `value` is the IMF-fixdate of, if it is exactly that.
fn compact_date(value: &[u8]) -> Option<u32> {
    if value.len() != IMF_FIXDATE_LEN || !value.ends_with(b" GMT") {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?;
    let at = httpdate::parse_http_date(text).ok()?;
    let secs = u32::try_from(at.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs()).ok()?;
    let mut again = Vec::with_capacity(IMF_FIXDATE_LEN);
    write_date(secs, &mut again);
    (again == value).then_some(secs)
}

fn write_date(secs: u32, out: &mut Vec<u8>) {
    use std::io::Write as _;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(secs));
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}", httpdate::HttpDate::from(at));
}

impl StoredHead {
    /// Copies the fields of `map`, in its order (values of one name stay together, as
    /// `HeaderMap` iterates them).
    pub fn new(status: StatusCode, map: &HeaderMap) -> Self {
        // Room for every name spelled out; the buffer is cut to its length at the end.
        let room: usize = map
            .iter()
            .map(|(n, v)| 2 + n.as_str().len() + 5 + v.len())
            .sum();
        let mut buf = Vec::with_capacity(STATUS_LEN + room);
        buf.extend_from_slice(&status.as_u16().to_be_bytes());
        for (name, value) in map {
            // A name longer than 255 bytes or a value over 4 GiB is not stored; hyper
            // refuses such responses long before.
            let Ok(value_len) = u32::try_from(value.len()) else {
                continue;
            };
            match code_of(name) {
                Some(code) => buf.push(code),
                None => {
                    let Ok(name_len) = u8::try_from(name.as_str().len()) else {
                        continue;
                    };
                    buf.push(0);
                    buf.push(name_len);
                    buf.extend_from_slice(name.as_str().as_bytes());
                }
            }
            let value = value.as_bytes();
            let dated = [header::DATE, header::LAST_MODIFIED, header::EXPIRES].contains(name);
            if let Some(secs) = dated.then(|| compact_date(value)).flatten() {
                buf.push(DATE);
                buf.extend_from_slice(&secs.to_be_bytes());
                continue;
            }
            match value_len {
                0..0x80 => buf.push(value_len as u8),
                0x80..0x4000 => {
                    buf.push(LEN_TWO_BYTES | (value_len >> 8) as u8);
                    buf.push(value_len as u8);
                }
                _ => {
                    buf.push(LEN_U32);
                    buf.extend_from_slice(&value_len.to_be_bytes());
                }
            }
            buf.extend_from_slice(value);
        }
        // Shrunk to fit: an entry keeps no spare capacity for as long as it is cached.
        Self {
            buf: buf.into_boxed_slice(),
        }
    }

    /// Each field's name and value, in order.
    pub fn iter(&self) -> Fields<'_> {
        Fields {
            buf: &self.buf,
            at: STATUS_LEN,
        }
    }

    pub fn status(&self) -> StatusCode {
        // Always there: `new` writes a valid code first.
        let code = u16::from_be_bytes([self.buf[0], self.buf[1]]);
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True when there are no fields.
    pub fn is_empty(&self) -> bool {
        self.buf.len() <= STATUS_LEN
    }

    /// The first value of `name`. A common name is compared by its code, so a lookup on
    /// the hit path (`Cache-Status`) compares one byte per field.
    pub fn get(&self, name: impl AsRef<str>) -> Option<HeaderValue> {
        let wanted = name_matcher(name.as_ref());
        let field = self.iter().find(|f| f.name.is(wanted))?;
        HeaderValue::from_maybe_shared(Bytes::from(field.value.to_vec())).ok()
    }

    pub fn contains_key(&self, name: impl AsRef<str>) -> bool {
        let wanted = name_matcher(name.as_ref());
        self.iter().any(|f| f.name.is(wanted))
    }

    /// The fields clients see, as a map: for a response, or for rules written against
    /// `HeaderMap`. `extra` is room for fields the caller will add. The values are copied
    /// into one new buffer; each value in the map is a slice of it.
    pub fn to_map(&self, extra: usize) -> HeaderMap {
        self.map_of(extra, |f| !f.is_hidden())
    }

    /// Every field, `Edgecache-Cache-Control` included.
    pub fn to_map_with_hidden(&self, extra: usize) -> HeaderMap {
        self.map_of(extra, |_| true)
    }

    /// The values of the `Edgecache-Cache-Control` lines.
    pub fn hidden(&self) -> impl Iterator<Item = Value<'_>> {
        self.iter().filter(Field::is_hidden).map(|f| f.value)
    }

    /// The text of every value of `name` (values that are not UTF-8 are skipped).
    pub fn texts<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> {
        let wanted = name_matcher(name.as_str());
        self.iter()
            .filter(move |f| f.name.is(wanted))
            .filter_map(|f| match f.value {
                Value::Text(t) => std::str::from_utf8(t).ok(),
                Value::Date(_) => None,
            })
    }

    fn map_of(&self, extra: usize, keep: impl Fn(&Field<'_>) -> bool) -> HeaderMap {
        let (fields, text) = self
            .iter()
            .filter(&keep)
            .fold((0, 0), |(n, len), f| (n + 1, len + f.value.len()));
        let mut values = Vec::with_capacity(text);
        for field in self.iter().filter(&keep) {
            field.value.write_to(&mut values);
        }
        let values = Bytes::from(values);
        let mut map = HeaderMap::with_capacity(fields + extra);
        let mut at = 0;
        for field in self.iter().filter(&keep) {
            let end = at + field.value.len();
            // Valid when stored; the checks cost little next to the insert.
            if let (Some(name), Ok(value)) = (
                field.header_name(),
                HeaderValue::from_maybe_shared(values.slice(at..end)),
            ) {
                map.append(name, value);
            }
            at = end;
        }
        map
    }

    /// Heap bytes held: the buffer.
    pub fn heap_size(&self) -> usize {
        self.buf.len()
    }
}

impl fmt::Debug for StoredHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.status())?;
        f.debug_map()
            .entries(self.iter().map(|field| {
                (
                    field.name_str(),
                    String::from_utf8_lossy(&field.value.to_vec()).into_owned(),
                )
            }))
            .finish()
    }
}

/// One stored field.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    name: Name<'a>,
    pub value: Value<'a>,
}

/// A stored value: its bytes, or a date kept as seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Text(&'a [u8]),
    Date(u32),
}

impl Value<'_> {
    /// Length of the value as sent.
    pub fn len(&self) -> usize {
        match self {
            Value::Text(t) => t.len(),
            Value::Date(_) => IMF_FIXDATE_LEN,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Value::Text(t) => out.extend_from_slice(t),
            Value::Date(secs) => write_date(*secs, out),
        }
    }

    /// The value's bytes as sent.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        self.write_to(&mut out);
        out
    }
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
    /// True for `Edgecache-Cache-Control`, which clients never see.
    pub fn is_hidden(&self) -> bool {
        matches!(self.name, Name::Known(i) if i + 1 == usize::from(HIDDEN))
    }

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
        let buf = self.buf;
        let mut at = self.at;
        let code = *buf.get(at)?;
        at += 1;
        let name = if code == 0 {
            let len = usize::from(*buf.get(at)?);
            let name = std::str::from_utf8(buf.get(at + 1..at + 1 + len)?).ok()?;
            at += 1 + len;
            Name::Other(name)
        } else {
            let i = usize::from(code) - 1;
            NAMES.get(i)?;
            Name::Known(i)
        };
        let tag = *buf.get(at)?;
        at += 1;
        let value_len = match tag {
            0..LEN_TWO_BYTES => usize::from(tag),
            LEN_TWO_BYTES..LEN_U32 => {
                let low = *buf.get(at)?;
                at += 1;
                usize::from(tag & 0x3F) << 8 | usize::from(low)
            }
            LEN_U32 | DATE => {
                let word = buf.get(at..at + 4)?;
                let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
                at += 4;
                if tag == DATE {
                    self.at = at;
                    return Some(Field {
                        name,
                        value: Value::Date(word),
                    });
                }
                usize::try_from(word).ok()?
            }
            _ => return None,
        };
        let value = buf.get(at..at + value_len)?;
        self.at = at + value_len;
        Some(Field {
            name,
            value: Value::Text(value),
        })
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
        let stored = StoredHead::new(StatusCode::OK, &map);
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
        let stored = StoredHead::new(StatusCode::OK, &sample());
        assert_eq!(stored.get("set-cookie").unwrap(), "a=1");
        assert_eq!(stored.get(&http::header::ETAG).unwrap(), "\"v1\"");
        assert!(stored.get(&http::header::LAST_MODIFIED).is_none());
        assert!(stored.contains_key("X-Empty"));
        assert!(!stored.contains_key("age"));
    }

    #[test]
    fn common_names_cost_one_byte_and_others_their_text() {
        let map = sample();
        let stored = StoredHead::new(StatusCode::OK, &map);
        let values: usize = map.iter().map(|(_, v)| 1 + v.len()).sum();
        // content-type, set-cookie ×2, etag: a code each; x-empty and x-bytes spelled out.
        let names = 4 + (2 + "x-empty".len()) + (2 + "x-bytes".len());
        assert_eq!(stored.heap_size(), 2 + values + names);
        let empty = StoredHead::new(StatusCode::NO_CONTENT, &HeaderMap::new());
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);
        assert_eq!(empty.status(), StatusCode::NO_CONTENT);
        assert_eq!(stored.status(), StatusCode::OK);
    }

    #[test]
    fn a_value_longer_than_64_kib_is_kept_whole() {
        let mut map = HeaderMap::new();
        let long = "a".repeat(70_000);
        map.insert("x-long", HeaderValue::from_str(&long).unwrap());
        map.insert("etag", HeaderValue::from_static("\"e\""));
        let stored = StoredHead::new(StatusCode::OK, &map);
        assert_eq!(stored.to_map(0), map);
        assert_eq!(stored.get("x-long").unwrap().len(), 70_000);
    }

    #[test]
    fn every_name_in_the_table_round_trips() {
        let mut map = HeaderMap::new();
        for name in &NAMES {
            map.append(name.clone(), HeaderValue::from_static("v"));
        }
        let stored = StoredHead::new(StatusCode::OK, &map);
        assert_eq!(stored.heap_size(), 2 + NAMES.len() * 3);
        assert_eq!(stored.to_map_with_hidden(0), map);
        map.remove(crate::cache_control::EDGECACHE_CACHE_CONTROL);
        assert_eq!(stored.to_map(0), map);
    }

    #[test]
    fn value_lengths_at_every_boundary_round_trip() {
        for len in [0, 1, 127, 128, 16_383, 16_384, 65_535, 65_536] {
            let mut map = HeaderMap::new();
            map.insert("x-v", HeaderValue::from_str(&"v".repeat(len)).unwrap());
            map.insert("etag", HeaderValue::from_static("\"e\""));
            let stored = StoredHead::new(StatusCode::OK, &map);
            assert_eq!(stored.to_map(0), map, "length {len}");
            let tag = match len {
                0..128 => 1,
                128..16_384 => 2,
                _ => 5,
            };
            assert_eq!(stored.heap_size(), 2 + (2 + 3) + tag + len + (1 + 1 + 3));
        }
    }

    #[test]
    fn dates_are_kept_as_seconds_and_come_back_byte_for_byte() {
        let mut map = HeaderMap::new();
        map.insert(
            "date",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        map.insert(
            "last-modified",
            HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
        );
        map.insert(
            "expires",
            HeaderValue::from_static("Sun, 07 Feb 2106 06:28:15 GMT"),
        );
        let stored = StoredHead::new(StatusCode::OK, &map);
        assert_eq!(stored.heap_size(), 2 + 3 * (1 + 5));
        assert_eq!(stored.to_map(0), map);
        assert_eq!(stored.get("date").unwrap(), "Sun, 06 Nov 1994 08:49:37 GMT");
        let first = stored.iter().next().unwrap();
        assert_eq!(first.value, Value::Date(784_111_777));
    }

    #[test]
    fn dates_that_would_not_come_back_the_same_stay_text() {
        for text in [
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "sun, 06 nov 1994 08:49:37 GMT",
            "Mon, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 07 Feb 2106 06:28:16 GMT",
            "Thu, 31 Dec 1969 23:59:59 GMT",
            "not a date at all, but 29 GMT",
        ] {
            let mut map = HeaderMap::new();
            map.insert("last-modified", HeaderValue::from_static(text));
            let stored = StoredHead::new(StatusCode::OK, &map);
            assert_eq!(stored.to_map(0), map, "{text}");
            assert_eq!(stored.heap_size(), 2 + 1 + 1 + text.len(), "{text}");
        }
    }
}
