//! What a purge request and a PoP registration may contain, checked before anything is stored.

use crate::error::PurgeApiError;
use crate::{PurgeRequest, RegisterPop};

/// Longest accepted URL, prefix, tag or PoP URL, in bytes.
pub const MAX_ENTRY_LEN: usize = 8192;

/// Longest PoP name, in bytes.
const MAX_POP_NAME_LEN: usize = 64;

/// Checks `request` and returns a `400` naming the first bad field, e.g. `urls[3]: …`.
///
/// Rules: something must be named (`urls`, `prefixes`, `tags` or `all`); each list holds at
/// most `max_entries`; a URL is a path starting with `/` or an absolute `http(s)://host…`
/// URL; a prefix starts with `/`; a tag is non-empty without whitespace; no entry holds
/// control characters or is longer than [`MAX_ENTRY_LEN`].
pub fn validate_purge(request: &PurgeRequest, max_entries: usize) -> Result<(), PurgeApiError> {
    if request.is_empty() {
        return Err(PurgeApiError::bad_request(
            "purge names nothing: give urls, prefixes, tags or \"all\": true",
        ));
    }
    let lists = [
        ("urls", &request.urls),
        ("prefixes", &request.prefixes),
        ("tags", &request.tags),
    ];
    for (field, list) in lists {
        if list.len() > max_entries {
            return Err(PurgeApiError::bad_request(format!(
                "{field}: {} entries, at most {max_entries} per request",
                list.len()
            )));
        }
        for (i, entry) in list.iter().enumerate() {
            check_entry(field, entry)
                .map_err(|why| PurgeApiError::bad_request(format!("{field}[{i}]: {why}")))?;
        }
    }
    Ok(())
}

fn check_entry(field: &str, entry: &str) -> Result<(), String> {
    if entry.is_empty() {
        return Err("must not be empty".into());
    }
    if entry.len() > MAX_ENTRY_LEN {
        return Err(format!("longer than {MAX_ENTRY_LEN} bytes"));
    }
    if entry.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if entry.chars().any(char::is_whitespace) {
        return Err(format!("must not contain whitespace, got {entry:?}"));
    }
    match field {
        "urls" if !(entry.starts_with('/') || is_http_url(entry)) => Err(format!(
            "must be a path starting with / or an absolute http(s) URL, got {entry:?}"
        )),
        "prefixes" if !entry.starts_with('/') => {
            Err(format!("must be a path starting with /, got {entry:?}"))
        }
        _ => Ok(()),
    }
}

/// True for `http://host…` or `https://host…` with a non-empty host.
pub(crate) fn is_http_url(s: &str) -> bool {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(rest) => {
            let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..host_end];
            !authority.is_empty()
                && !authority.starts_with(':')
                && !authority.contains('@')
                && !authority
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

/// Checks a registration, naming the bad field.
pub(crate) fn validate_registration(pop: &RegisterPop) -> Result<(), PurgeApiError> {
    if !is_pop_name(&pop.name) {
        return Err(PurgeApiError::bad_request(format!(
            "name: must be 1-{MAX_POP_NAME_LEN} characters of A-Z a-z 0-9 . _ -, got {:?}",
            pop.name
        )));
    }
    let urls = [
        ("url", Some(&pop.url)),
        ("admin_url", pop.admin_url.as_ref()),
    ];
    for (field, url) in urls {
        if let Some(url) = url
            && (url.len() > MAX_ENTRY_LEN || !is_http_url(url))
        {
            return Err(PurgeApiError::bad_request(format!(
                "{field}: must be an absolute http(s) URL, got {url:?}"
            )));
        }
    }
    Ok(())
}

/// True for 1–64 characters of `A-Z a-z 0-9 . _ -`: safe in a sled key, a URL path and a
/// Prometheus label without escaping.
pub(crate) fn is_pop_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_POP_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn purge(urls: &[&str], prefixes: &[&str], tags: &[&str]) -> PurgeRequest {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        PurgeRequest {
            urls: own(urls),
            prefixes: own(prefixes),
            tags: own(tags),
            ..Default::default()
        }
    }

    fn message(request: &PurgeRequest) -> String {
        validate_purge(request, 1000).unwrap_err().to_string()
    }

    #[test]
    fn paths_urls_prefixes_tags_and_all_are_accepted() {
        let ok = purge(
            &[
                "/app.js?v=2",
                "https://cdn.example.com/a.css",
                "http://h:8080",
            ],
            &["/img/"],
            &["product-42", "images"],
        );
        validate_purge(&ok, 1000).unwrap();
        let all = PurgeRequest {
            all: true,
            ..Default::default()
        };
        validate_purge(&all, 1000).unwrap();
    }

    #[test]
    fn an_empty_purge_is_refused() {
        assert!(message(&PurgeRequest::default()).starts_with("purge names nothing"));
    }

    #[test]
    fn bad_entries_are_named_by_field_and_index() {
        let m = message(&purge(&["/ok", "app.js"], &[], &[]));
        assert!(
            m.starts_with("urls[1]: must be a path starting with /"),
            "{m}"
        );
        let m = message(&purge(&["ftp://h/x"], &[], &[]));
        assert!(m.starts_with("urls[0]:"), "{m}");
        let m = message(&purge(&["https:///nohost"], &[], &[]));
        assert!(m.starts_with("urls[0]:"), "{m}");
        let m = message(&purge(&["/a b"], &[], &[]));
        assert!(m.contains("whitespace"), "{m}");
        let m = message(&purge(&[], &["img/"], &[]));
        assert!(
            m.starts_with("prefixes[0]: must be a path starting with /"),
            "{m}"
        );
        let m = message(&purge(&[], &[], &["ok", "two words"]));
        assert_eq!(m, "tags[1]: must not contain whitespace, got \"two words\"");
        let m = message(&purge(&[], &[], &[""]));
        assert_eq!(m, "tags[0]: must not be empty");
        let m = message(&purge(&["/a\u{7}"], &[], &[]));
        assert!(m.contains("control characters"), "{m}");
        let long = format!("/{}", "a".repeat(MAX_ENTRY_LEN));
        assert!(message(&purge(&[&long], &[], &[])).contains("longer than"));
    }

    #[test]
    fn too_many_entries_are_counted() {
        let request = purge(&[], &[], &["a", "b", "c"]);
        let err = validate_purge(&request, 2).unwrap_err().to_string();
        assert_eq!(err, "tags: 3 entries, at most 2 per request");
    }

    #[test]
    fn registrations_need_a_plain_name_and_http_urls() {
        let mut pop = RegisterPop {
            name: "us-east".into(),
            url: "http://127.0.1.1:8080".into(),
            admin_url: Some("http://127.0.1.1:9080".into()),
            applied_seq: None,
        };
        validate_registration(&pop).unwrap();
        pop.admin_url = Some("127.0.1.1:9080".into());
        let err = validate_registration(&pop).unwrap_err().to_string();
        assert!(
            err.starts_with("admin_url: must be an absolute http(s) URL"),
            "{err}"
        );
        pop.name = "us east".into();
        let err = validate_registration(&pop).unwrap_err().to_string();
        assert!(err.starts_with("name: must be 1-64 characters"), "{err}");
        assert!(is_pop_name("eu-west_2.a"));
        assert!(!is_pop_name(""));
        assert!(!is_pop_name("a/b"));
    }
}
