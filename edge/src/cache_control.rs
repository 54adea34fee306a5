//! Parsing of `Cache-Control` and its targeted siblings (RFC 9111 §5.2, RFC 9213).

use http::HeaderMap;
use http::header::{CACHE_CONTROL, HeaderName, PRAGMA};

/// `CDN-Cache-Control` (RFC 9213): targeted at every CDN.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
/// `Edgecache-Cache-Control`: targeted at edgecache only; wins over `CDN-Cache-Control`.
pub const EDGECACHE_CACHE_CONTROL: HeaderName = HeaderName::from_static("edgecache-cache-control");

/// Delta-seconds past this are clamped to it (RFC 9111 §1.2.2).
pub const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// The directives a shared cache acts on. Unknown directives are ignored.
///
/// Seconds-valued directives hold `Some(0)` when the value was present but invalid, because
/// RFC 9111 §4.2.1 encourages treating invalid freshness information as stale.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub max_stale: Option<MaxStale>,
    pub min_fresh: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub immutable: bool,
    pub only_if_cached: bool,
    /// Fields named by `no-cache="…"`: the response may be reused without them.
    pub no_cache_fields: Vec<String>,
    /// Fields named by `private="…"`: a shared cache may store the response without them.
    pub private_fields: Vec<String>,
    /// True when any directive at all was present.
    pub present: bool,
}

/// `max-stale` with or without a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxStale {
    Any,
    Seconds(u64),
}

impl CacheControl {
    /// Parses every `Cache-Control` line of `headers`.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_header(headers, &CACHE_CONTROL)
    }

    /// Parses every line of the header `name`.
    pub fn from_header(headers: &HeaderMap, name: &HeaderName) -> Self {
        let mut cc = CacheControl::default();
        for value in headers.get_all(name) {
            // A line that is not visible ASCII is ignored as a whole, never half-applied.
            if let Ok(text) = value.to_str() {
                cc.parse_into(text);
            }
        }
        cc
    }

    /// The directives the edge follows for a response: `Edgecache-Cache-Control`, else
    /// `CDN-Cache-Control`, else `Cache-Control` (RFC 9213 §2.2: a targeted field, when
    /// present and valid, is used instead of `Cache-Control`).
    pub fn for_response(headers: &HeaderMap) -> (Self, Targeted) {
        for (name, which) in [
            (&EDGECACHE_CACHE_CONTROL, Targeted::Edgecache),
            (&CDN_CACHE_CONTROL, Targeted::Cdn),
        ] {
            if let Some(cc) = Self::from_targeted(headers, name) {
                return (cc, which);
            }
        }
        (Self::from_headers(headers), Targeted::None)
    }

    /// Parses a targeted field as the Structured Fields Dictionary RFC 9213 §2.1 makes it.
    /// `None` when absent, empty or invalid: the field is then ignored as a whole. A member
    /// of the wrong type is ignored on its own.
    pub fn from_targeted(headers: &HeaderMap, name: &HeaderName) -> Option<Self> {
        let mut joined: Vec<u8> = Vec::new();
        for v in headers.get_all(name) {
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        if joined.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        let dict: sfv::Dictionary = sfv::Parser::new(&joined).parse().ok()?;
        if dict.is_empty() {
            return None;
        }
        let mut cc = CacheControl {
            present: true,
            ..CacheControl::default()
        };
        for (key, entry) in &dict {
            let sfv::ListEntry::Item(item) = entry else {
                continue;
            };
            let seconds = || {
                item.bare_item
                    .as_integer()
                    .map(i64::from)
                    .filter(|n| *n >= 0)
                    .map(|n| (n as u64).min(DELTA_SECONDS_MAX))
            };
            let flag = || item.bare_item.as_boolean() == Some(true);
            match key.as_str() {
                "max-age" => cc.max_age = seconds().or(cc.max_age),
                "s-maxage" => cc.s_maxage = seconds().or(cc.s_maxage),
                "stale-while-revalidate" => {
                    cc.stale_while_revalidate = seconds().or(cc.stale_while_revalidate)
                }
                "stale-if-error" => cc.stale_if_error = seconds().or(cc.stale_if_error),
                "no-store" => cc.no_store |= flag(),
                "no-cache" => cc.no_cache |= flag(),
                "private" => cc.private |= flag(),
                "public" => cc.public |= flag(),
                "must-revalidate" => cc.must_revalidate |= flag(),
                "proxy-revalidate" => cc.proxy_revalidate |= flag(),
                "immutable" => cc.immutable |= flag(),
                _ => {}
            }
        }
        Some(cc)
    }

    /// Request directives, with `Pragma: no-cache` standing in for `Cache-Control: no-cache`
    /// when the request has no `Cache-Control` (RFC 9111 §5.4).
    pub fn for_request(headers: &HeaderMap) -> Self {
        let mut cc = Self::from_headers(headers);
        if !cc.present
            && headers
                .get_all(PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|d| d.trim().eq_ignore_ascii_case("no-cache"))
        {
            cc.no_cache = true;
        }
        cc
    }

    /// Parses one field line, adding to what is already known. The first occurrence of a
    /// directive wins (RFC 9111 §4.2.1).
    pub fn parse_into(&mut self, line: &str) {
        for (name, value) in Directives::new(line) {
            self.present = true;
            let mut lower = [0u8; 24];
            let Some(name) = ascii_lower(name, &mut lower) else {
                continue;
            };
            match name {
                "max-age" => set_seconds(&mut self.max_age, value),
                "s-maxage" => set_seconds(&mut self.s_maxage, value),
                "min-fresh" => set_seconds(&mut self.min_fresh, value),
                "stale-while-revalidate" => set_seconds(&mut self.stale_while_revalidate, value),
                "stale-if-error" => set_seconds(&mut self.stale_if_error, value),
                "max-stale" if self.max_stale.is_none() => {
                    self.max_stale = Some(match value {
                        None => MaxStale::Any,
                        Some(v) => MaxStale::Seconds(parse_delta_prefix(v).unwrap_or(0)),
                    });
                }
                "no-store" => self.no_store = true,
                // The qualified forms name fields to drop, not the response (RFC 9111
                // §5.2.2.4, §5.2.2.7); an empty list means the unqualified directive.
                "no-cache" => match field_list(value) {
                    Some(fields) => self.no_cache_fields.extend(fields),
                    None => self.no_cache = true,
                },
                "private" => match field_list(value) {
                    Some(fields) => self.private_fields.extend(fields),
                    None => self.private = true,
                },
                "public" => self.public = true,
                "must-revalidate" => self.must_revalidate = true,
                "proxy-revalidate" => self.proxy_revalidate = true,
                "must-understand" => self.must_understand = true,
                "immutable" => self.immutable = true,
                "only-if-cached" => self.only_if_cached = true,
                _ => {}
            }
        }
    }
}

/// Lower-cases a directive name into `buf` without allocating; names longer than any
/// known directive are not interesting and give `None`.
fn ascii_lower<'b>(name: &str, buf: &'b mut [u8; 24]) -> Option<&'b str> {
    let bytes = name.as_bytes();
    let out = buf.get_mut(..bytes.len())?;
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

/// Which field the response directives came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Targeted {
    None,
    Cdn,
    Edgecache,
}

/// Sets a seconds-valued directive once (the first occurrence wins); a value that does not
/// start with a digit makes it 0, i.e. stale.
fn set_seconds(slot: &mut Option<u64>, value: Option<&str>) {
    if slot.is_none() {
        *slot = Some(value.and_then(parse_delta_prefix).unwrap_or(0));
    }
}

/// The field names of a qualified `no-cache` / `private`, lower-cased.
fn field_list(value: Option<&str>) -> Option<Vec<String>> {
    let fields: Vec<String> = value?
        .split(',')
        .map(|f| f.trim().to_ascii_lowercase())
        .filter(|f| !f.is_empty())
        .collect();
    (!fields.is_empty()).then_some(fields)
}

/// Parses the leading digits of a directive value (`3600`, `003600`, `3600.5` → 3600), as
/// deployed caches do; a value without a leading digit is invalid.
pub fn parse_delta_prefix(value: &str) -> Option<u64> {
    let end = value
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(value.len());
    parse_delta(&value[..end])
}

/// Parses delta-seconds: digits only, clamped to [`DELTA_SECONDS_MAX`].
pub fn parse_delta(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Leading zeros are digits like any other; overflow clamps instead of failing.
    let mut n: u64 = 0;
    for b in value.bytes() {
        n = n.saturating_mul(10).saturating_add(u64::from(b - b'0'));
        if n >= DELTA_SECONDS_MAX {
            return Some(DELTA_SECONDS_MAX);
        }
    }
    Some(n)
}

/// Iterator over `name[=value]` directives of one field line, honouring quoted strings.
struct Directives<'a> {
    rest: &'a str,
}

impl<'a> Directives<'a> {
    fn new(line: &'a str) -> Self {
        Self { rest: line }
    }
}

impl<'a> Iterator for Directives<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            self.rest = self.rest.trim_start_matches([' ', '\t', ',']);
            if self.rest.is_empty() {
                return None;
            }
            let end = self.rest.find([',', '=']).unwrap_or(self.rest.len());
            let after = &self.rest[end..];
            // Whitespace before `=` or after it makes a different (unknown) directive, as a
            // token may not contain it: `max-age =5` is not `max-age=5`.
            if let Some(value_part) = after.strip_prefix('=') {
                let name = self.rest[..end].trim_start();
                let (value, rest) = if let Some(quoted) = value_part.strip_prefix('"') {
                    split_quoted(quoted)
                } else {
                    let end = value_part.find(',').unwrap_or(value_part.len());
                    (value_part[..end].trim_end(), &value_part[end..])
                };
                self.rest = rest;
                if name.is_empty() {
                    continue;
                }
                return Some((name, Some(value)));
            }
            let name = self.rest[..end].trim();
            self.rest = after;
            if name.is_empty() {
                continue;
            }
            return Some((name, None));
        }
    }
}

/// Splits after the opening quote: the quoted content (escapes left in place; directive
/// values we read never contain them) and what follows the closing quote and up to a comma.
fn split_quoted(s: &str) -> (&str, &str) {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => {
                let value = &s[..i];
                let tail = &s[i + 1..];
                let end = tail.find(',').unwrap_or(tail.len());
                return (value, &tail[end..]);
            }
            _ => i += 1,
        }
    }
    // No closing quote: the value runs to the end of the line.
    (s, "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc(line: &str) -> CacheControl {
        let mut c = CacheControl::default();
        c.parse_into(line);
        c
    }

    #[test]
    fn reads_common_directives() {
        let c = cc("public, max-age=3600, s-maxage=60, stale-while-revalidate=30");
        assert!(c.public);
        assert_eq!(c.max_age, Some(3600));
        assert_eq!(c.s_maxage, Some(60));
        assert_eq!(c.stale_while_revalidate, Some(30));
        assert!(c.present);
    }

    #[test]
    fn names_are_case_insensitive_and_whitespace_tolerated() {
        let c = cc("  MAX-AGE=10 ,No-Store,,PRIVATE ");
        assert_eq!(c.max_age, Some(10));
        assert!(c.no_store && c.private);
    }

    #[test]
    fn first_occurrence_wins() {
        assert_eq!(cc("max-age=10, max-age=20").max_age, Some(10));
    }

    #[test]
    fn invalid_seconds_mean_stale() {
        assert_eq!(cc("max-age=abc").max_age, Some(0));
        assert_eq!(cc("max-age=-1").max_age, Some(0));
        assert_eq!(cc("max-age").max_age, Some(0));
        assert_eq!(cc("max-age='60'").max_age, Some(0));
        assert_eq!(cc("max-age= 60").max_age, Some(0));
        assert_eq!(cc("max-age=60.5").max_age, Some(60));
    }

    #[test]
    fn space_before_equals_is_another_directive() {
        assert_eq!(cc("max-age =60").max_age, None);
    }

    #[test]
    fn quoted_strings_hide_commas_and_directives() {
        let c = cc("extension=\"max-age=3600\", max-age=1");
        assert_eq!(c.max_age, Some(1));
        let c = cc("max-age=1, extension=\"max-age=3600\"");
        assert_eq!(c.max_age, Some(1));
    }

    #[test]
    fn qualified_no_cache_and_private_name_fields() {
        let c = cc("no-cache=\"Set-Cookie, X-A\", private=\"x-b\", max-age=5");
        assert!(!c.no_cache && !c.private);
        assert_eq!(c.no_cache_fields, vec!["set-cookie", "x-a"]);
        assert_eq!(c.private_fields, vec!["x-b"]);
    }

    #[test]
    fn targeted_field_must_be_a_valid_dictionary() {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            CDN_CACHE_CONTROL,
            HeaderValue::from_static("max-age=10000, &&&&&"),
        );
        let (c, t) = CacheControl::for_response(&h);
        assert_eq!((c.no_store, t), (true, Targeted::None));
        h.insert(
            CDN_CACHE_CONTROL,
            HeaderValue::from_static("max-age=\"10000\""),
        );
        let (c, t) = CacheControl::for_response(&h);
        assert_eq!((c.max_age, c.no_store, t), (None, false, Targeted::Cdn));
        h.insert(CDN_CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let (c, _) = CacheControl::for_response(&h);
        assert!(c.no_store);
    }

    #[test]
    fn quoted_and_padded_values() {
        assert_eq!(cc("max-age=\"60\"").max_age, Some(60));
        assert_eq!(cc("max-age=007").max_age, Some(7));
        let c = cc("no-cache=\"set-cookie, x-foo\", max-age=5");
        assert!(!c.no_cache);
        assert_eq!(c.max_age, Some(5));
    }

    #[test]
    fn huge_values_clamp() {
        assert_eq!(
            cc("max-age=99999999999999999999999").max_age,
            Some(DELTA_SECONDS_MAX)
        );
    }

    #[test]
    fn max_stale_with_and_without_value() {
        assert_eq!(cc("max-stale").max_stale, Some(MaxStale::Any));
        assert_eq!(cc("max-stale=5").max_stale, Some(MaxStale::Seconds(5)));
    }

    #[test]
    fn unterminated_quote_does_not_panic() {
        let c = cc("private=\"abc, max-age=5");
        assert_eq!(c.private_fields, vec!["abc", "max-age=5"]);
    }

    #[test]
    fn targeted_field_wins() {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(CDN_CACHE_CONTROL, HeaderValue::from_static("max-age=30"));
        let (c, t) = CacheControl::for_response(&h);
        assert_eq!((c.max_age, c.no_store, t), (Some(30), false, Targeted::Cdn));
        h.insert(
            EDGECACHE_CACHE_CONTROL,
            HeaderValue::from_static("max-age=5"),
        );
        let (c, t) = CacheControl::for_response(&h);
        assert_eq!((c.max_age, t), (Some(5), Targeted::Edgecache));
    }

    #[test]
    fn pragma_no_cache_only_without_cache_control() {
        let mut h = HeaderMap::new();
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(CacheControl::for_request(&h).no_cache);
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=10"));
        assert!(!CacheControl::for_request(&h).no_cache);
    }

    mod properties {
        use super::*;
        use http::HeaderValue;
        use proptest::prelude::*;

        /// Directive-shaped text: names, `=`, quotes, commas, numbers of any size, junk.
        fn field() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop_oneof![
                    Just("max-age".to_owned()),
                    Just("s-maxage".to_owned()),
                    Just("no-cache".to_owned()),
                    Just("private".to_owned()),
                    Just("stale-while-revalidate".to_owned()),
                    Just("stale-if-error".to_owned()),
                    Just("=".to_owned()),
                    Just("\"".to_owned()),
                    Just(",".to_owned()),
                    Just(" ".to_owned()),
                    "[0-9]{1,25}",
                    "-[0-9]{1,5}",
                    "[ -~]{0,6}",
                ],
                0..16,
            )
            .prop_map(|parts| parts.concat())
        }

        proptest! {
            /// Whatever an origin or client sends, parsing never panics and every lifetime
            /// stays within the range RFC 9111 §1.2.2 allows a cache to keep.
            #[test]
            fn any_cache_control_parses_without_panic(cc in field(), cdn in field()) {
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(&cc) {
                    h.insert(http::header::CACHE_CONTROL, v);
                }
                if let Ok(v) = HeaderValue::from_str(&cdn) {
                    h.insert("cdn-cache-control", v);
                }
                let (resp, _) = CacheControl::for_response(&h);
                let req = CacheControl::for_request(&h);
                for v in [resp.max_age, resp.s_maxage, req.max_age, req.min_fresh].into_iter().flatten() {
                    prop_assert!(v <= DELTA_SECONDS_MAX);
                }
            }
        }
    }
}
