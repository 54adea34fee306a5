//! Conditional requests (RFC 9110 §13): preconditions, `304 Not Modified` and `If-Range`.

use std::time::SystemTime;

use http::HeaderMap;
use http::header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE};

use crate::headers::Validators;

/// The outcome of evaluating a GET or HEAD request's preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// Serve the representation (possibly a range of it).
    Proceed,
    /// The client's copy is current: `304`.
    NotModified,
    /// `If-Match` or `If-Unmodified-Since` failed: `412`.
    Failed,
}

impl Precondition {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Precondition::Proceed => "proceed",
            Precondition::NotModified => "not-modified",
            Precondition::Failed => "precondition-failed",
        }
    }
}

/// Evaluates preconditions in the order of RFC 9110 §13.2.2, for a GET or HEAD.
pub(crate) fn evaluate(headers: &HeaderMap, current: &Validators) -> Precondition {
    if headers.contains_key(IF_MATCH) {
        if !matches(headers, IF_MATCH, &current.etag, Comparison::Strong) {
            return Precondition::Failed;
        }
    } else if modified_since(headers, IF_UNMODIFIED_SINCE, current) == Some(true) {
        return Precondition::Failed;
    }

    if headers.contains_key(IF_NONE_MATCH) {
        if matches(headers, IF_NONE_MATCH, &current.etag, Comparison::Weak) {
            return Precondition::NotModified;
        }
    } else if modified_since(headers, IF_MODIFIED_SINCE, current) == Some(false) {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// Whether a `Range` may be honoured: true without `If-Range`, else only when it names the
/// current representation by strong ETag or by its exact `Last-Modified` date (§13.1.5).
pub(crate) fn if_range_allows(headers: &HeaderMap, current: &Validators) -> bool {
    let Some(value) = headers.get(IF_RANGE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return entity_tags(value).is_some_and(|tags| {
            tags.len() == 1 && tags[0].matches(&current.etag, Comparison::Strong)
        });
    }
    match (httpdate::parse_http_date(value), current.last_modified) {
        (Ok(date), Some(modified)) => date == modified,
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Strong,
    Weak,
}

/// One entity tag from a request header; `opaque` keeps its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a str,
}

impl EntityTag<'_> {
    /// Compares with our own tag, which is always strong (§8.8.3.2).
    fn matches(&self, ours: &str, comparison: Comparison) -> bool {
        (comparison == Comparison::Weak || !self.weak) && self.opaque == ours
    }
}

/// Whether any line of an `If-Match` / `If-None-Match` header matches `ours`: `*` matches
/// any existing representation, and a malformed list matches nothing.
fn matches(
    headers: &HeaderMap,
    name: http::HeaderName,
    ours: &str,
    comparison: Comparison,
) -> bool {
    headers.get_all(name).iter().any(|value| {
        let Ok(value) = value.to_str() else {
            return false;
        };
        if value.trim() == "*" {
            return true;
        }
        entity_tags(value).is_some_and(|tags| tags.iter().any(|tag| tag.matches(ours, comparison)))
    })
}

/// Parses `#entity-tag`, allowing commas inside the quotes; `None` if malformed.
fn entity_tags(value: &str) -> Option<Vec<EntityTag<'_>>> {
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(tags);
        }
        let (weak, tagged) = match rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, rest),
        };
        let body = tagged.strip_prefix('"')?;
        let close = body.find('"')?;
        let (opaque, after) = tagged.split_at(close + 2);
        if !opaque[1..opaque.len() - 1].bytes().all(is_etagc) {
            return None;
        }
        tags.push(EntityTag { weak, opaque });
        rest = after.trim_start_matches([' ', '\t']);
        if !(rest.is_empty() || rest.starts_with(',')) {
            return None;
        }
    }
}

/// `etagc = %x21 / %x23-7E / obs-text`
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

/// Whether the representation changed after the date in header `name`; `None` when there is
/// no usable date on either side, which means the header is ignored (§13.1.3, §13.1.4).
fn modified_since(
    headers: &HeaderMap,
    name: http::HeaderName,
    current: &Validators,
) -> Option<bool> {
    let value = headers.get(name)?.to_str().ok()?;
    let since: SystemTime = httpdate::parse_http_date(value.trim()).ok()?;
    Some(current.last_modified? > since)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use http::HeaderValue;

    use super::*;

    const ETAG: &str = "\"a-1\"";
    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const EARLIER: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
    const LATER: &str = "Sun, 06 Nov 1994 08:49:38 GMT";

    fn current() -> Validators {
        Validators {
            etag: ETAG.to_owned(),
            last_modified: Some(UNIX_EPOCH + Duration::from_secs(784_111_777)),
        }
    }

    fn eval(pairs: &[(http::HeaderName, &str)]) -> Precondition {
        evaluate(&headers(pairs), &current())
    }

    fn headers(pairs: &[(http::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn no_conditions_proceed() {
        assert_eq!(eval(&[]), Precondition::Proceed);
    }

    #[test]
    fn if_match_is_strong() {
        assert_eq!(eval(&[(IF_MATCH, ETAG)]), Precondition::Proceed);
        assert_eq!(eval(&[(IF_MATCH, "*")]), Precondition::Proceed);
        assert_eq!(eval(&[(IF_MATCH, "\"x\", \"a-1\"")]), Precondition::Proceed);
        assert_eq!(eval(&[(IF_MATCH, "W/\"a-1\"")]), Precondition::Failed);
        assert_eq!(eval(&[(IF_MATCH, "\"other\"")]), Precondition::Failed);
        assert_eq!(
            eval(&[(IF_MATCH, "a-1")]),
            Precondition::Failed,
            "unquoted is malformed"
        );
    }

    #[test]
    fn if_unmodified_since_only_without_if_match() {
        assert_eq!(eval(&[(IF_UNMODIFIED_SINCE, DATE)]), Precondition::Proceed);
        assert_eq!(
            eval(&[(IF_UNMODIFIED_SINCE, EARLIER)]),
            Precondition::Failed
        );
        assert_eq!(
            eval(&[(IF_UNMODIFIED_SINCE, "yesterday")]),
            Precondition::Proceed
        );
        assert_eq!(
            eval(&[(IF_MATCH, ETAG), (IF_UNMODIFIED_SINCE, EARLIER)]),
            Precondition::Proceed
        );
    }

    #[test]
    fn if_none_match_is_weak_and_accepts_lists_and_star() {
        assert_eq!(eval(&[(IF_NONE_MATCH, ETAG)]), Precondition::NotModified);
        assert_eq!(
            eval(&[(IF_NONE_MATCH, "W/\"a-1\"")]),
            Precondition::NotModified
        );
        assert_eq!(
            eval(&[(IF_NONE_MATCH, "\"x,y\" ,W/\"a-1\"")]),
            Precondition::NotModified
        );
        assert_eq!(eval(&[(IF_NONE_MATCH, "*")]), Precondition::NotModified);
        assert_eq!(
            eval(&[(IF_NONE_MATCH, "\"x\""), (IF_NONE_MATCH, ETAG)]),
            Precondition::NotModified
        );
        assert_eq!(
            eval(&[(IF_NONE_MATCH, "\"a-1-gz\"")]),
            Precondition::Proceed
        );
        assert_eq!(
            eval(&[(IF_NONE_MATCH, "\"a-1\" junk")]),
            Precondition::Proceed
        );
    }

    #[test]
    fn if_modified_since_only_without_if_none_match() {
        assert_eq!(
            eval(&[(IF_MODIFIED_SINCE, DATE)]),
            Precondition::NotModified
        );
        assert_eq!(
            eval(&[(IF_MODIFIED_SINCE, LATER)]),
            Precondition::NotModified
        );
        assert_eq!(eval(&[(IF_MODIFIED_SINCE, EARLIER)]), Precondition::Proceed);
        assert_eq!(
            eval(&[(IF_MODIFIED_SINCE, "not a date")]),
            Precondition::Proceed
        );
        assert_eq!(
            eval(&[(IF_NONE_MATCH, "\"x\""), (IF_MODIFIED_SINCE, DATE)]),
            Precondition::Proceed
        );
    }

    #[test]
    fn failed_if_match_beats_not_modified() {
        assert_eq!(
            eval(&[(IF_MATCH, "\"x\""), (IF_NONE_MATCH, ETAG)]),
            Precondition::Failed
        );
    }

    #[test]
    fn if_range_needs_a_strong_etag_or_the_exact_date() {
        let allows = |value: &str| if_range_allows(&headers(&[(IF_RANGE, value)]), &current());
        assert!(if_range_allows(&HeaderMap::new(), &current()));
        assert!(allows(ETAG));
        assert!(allows(DATE));
        assert!(!allows("W/\"a-1\""));
        assert!(!allows("\"b-2\""));
        assert!(!allows(LATER));
        assert!(!allows("garbage"));
    }

    #[test]
    fn entity_tag_parsing() {
        let tags = entity_tags(" \"a\", W/\"b\",,\"\"").unwrap();
        let parsed: Vec<_> = tags.iter().map(|t| (t.weak, t.opaque)).collect();
        assert_eq!(parsed, [(false, "\"a\""), (true, "\"b\""), (false, "\"\"")]);
        assert_eq!(entity_tags(""), Some(vec![]));
        assert_eq!(entity_tags("\"open"), None);
        assert_eq!(entity_tags("\"a\"\"b\""), None);
        assert_eq!(entity_tags("\"a b\""), None);
        assert_eq!(entity_tags("w/\"a\""), None);
    }
}
