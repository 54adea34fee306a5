//! What `edgecache warm` fetches: the URL list file, the PoPs it goes to, and which of
//! them `--pops` selects.

use std::collections::HashSet;

use reqwest::Url;

use super::WarmError;
use crate::up::POPS;

/// A PoP to warm: its name (for the summary) and base URL without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub url: String,
}

/// The URL paths of a list: one per line, trimmed; blank lines and `#` comments skipped,
/// repeats dropped (a second request for one URL would only be a hit). `source` names the
/// file in errors.
pub fn parse_list(text: &str, source: &str) -> Result<Vec<String>, WarmError> {
    let mut seen = HashSet::new();
    let mut paths = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| WarmError::BadLine {
            file: source.to_owned(),
            line: i + 1,
            text: line.to_owned(),
            reason: reason.to_owned(),
        };
        if !line.starts_with('/') || line.starts_with("//") {
            return Err(bad("a URL path starts with a single '/', e.g. /app.js?v=2"));
        }
        if line.contains(char::is_whitespace) {
            return Err(bad("a URL path has no spaces (percent-encode them as %20)"));
        }
        if line.contains('#') {
            return Err(bad("a fragment (#…) is never sent to a server"));
        }
        // Checks the path is one a URL can carry.
        Url::parse("http://pop.invalid")
            .and_then(|base| base.join(line))
            .map_err(|e| bad(&e.to_string()))?;
        if seen.insert(line.to_owned()) {
            paths.push(line.to_owned());
        }
    }
    if paths.is_empty() {
        return Err(WarmError::EmptyList(source.to_owned()));
    }
    Ok(paths)
}

/// `--pop NAME=URL` or a bare `--pop URL` (named by its host and port).
pub fn parse_target(spec: &str) -> Result<Target, WarmError> {
    let bad = |reason: String| WarmError::BadPop {
        spec: spec.to_owned(),
        reason,
    };
    let (name, url) = match spec.split_once('=') {
        Some((name, url)) if !name.contains("://") => (Some(name.trim()), url.trim()),
        _ => (None, spec.trim()),
    };
    let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad("must be an http:// or https:// URL".into()));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("a PoP's base URL has no query or fragment".into()));
    }
    let name = match name {
        Some("") => return Err(bad("empty name before '='".into())),
        Some(name) => name.to_owned(),
        None => match parsed.port() {
            Some(port) => format!("{}:{port}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_owned(),
        },
    };
    Ok(Target {
        name,
        url: url.trim_end_matches('/').to_owned(),
    })
}

/// The PoPs of `edgecache up`'s local topology.
pub fn up_targets() -> Vec<Target> {
    POPS.iter()
        .map(|p| Target {
            name: p.name.to_owned(),
            url: format!("http://{}:8080", p.ip),
        })
        .collect()
}

/// The PoPs `--pops` names, in `all`'s order: everything for `all`, else each name once.
pub fn select(all: Vec<Target>, wanted: &[String]) -> Result<Vec<Target>, WarmError> {
    let wanted: Vec<&str> = wanted
        .iter()
        .map(|w| w.trim())
        .filter(|w| !w.is_empty())
        .collect();
    if wanted.is_empty() || wanted.contains(&"all") {
        return Ok(all);
    }
    for name in &wanted {
        if !all.iter().any(|t| t.name == *name) {
            return Err(WarmError::UnknownPop {
                name: (*name).to_owned(),
                known: all
                    .iter()
                    .map(|t| t.name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok(all
        .into_iter()
        .filter(|t| wanted.contains(&t.name.as_str()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_skip_blanks_comments_and_repeats() {
        let list =
            "# assets\n/app.js?v=2\n\n  /css/site.css  \n# again\n/app.js?v=2\n/img/a%20b.png\n";
        assert_eq!(
            parse_list(list, "urls.txt").unwrap(),
            ["/app.js?v=2", "/css/site.css", "/img/a%20b.png"]
        );
    }

    #[test]
    fn bad_lines_are_named_by_file_and_number() {
        let err = |text| parse_list(text, "urls.txt").unwrap_err().to_string();
        assert_eq!(
            err("/ok\napp.js"),
            "urls.txt:2: \"app.js\": a URL path starts with a single '/', e.g. /app.js?v=2"
        );
        assert!(err("/a b").contains("no spaces"), "{}", err("/a b"));
        assert!(err("//evil.example/x").contains("single '/'"));
        assert!(err("/a#top").contains("fragment"));
        assert_eq!(err("# nothing\n\n"), "urls.txt: no URL paths in the list");
    }

    #[test]
    fn pop_targets_with_and_without_names() {
        let t = parse_target("us-east=http://127.0.1.1:8080/").unwrap();
        assert_eq!(
            t,
            Target {
                name: "us-east".into(),
                url: "http://127.0.1.1:8080".into()
            }
        );
        let t = parse_target("http://127.0.2.1:8080").unwrap();
        assert_eq!(t.name, "127.0.2.1:8080");
        assert!(
            parse_target("x=ftp://a")
                .unwrap_err()
                .to_string()
                .contains("http://")
        );
        assert!(
            parse_target("=http://a")
                .unwrap_err()
                .to_string()
                .contains("empty name")
        );
        assert!(parse_target("nope").is_err());
    }

    #[test]
    fn selection_by_name_or_all() {
        let all = up_targets();
        assert_eq!(all[0].url, "http://127.0.1.1:8080");
        assert_eq!(select(all.clone(), &["all".into()]).unwrap().len(), 3);
        assert_eq!(select(all.clone(), &[]).unwrap().len(), 3);
        let two = select(all.clone(), &["ap-south".into(), "us-east".into()]).unwrap();
        let names: Vec<&str> = two.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["us-east", "ap-south"]);
        let err = select(all, &["mars".into()]).unwrap_err().to_string();
        assert_eq!(
            err,
            "--pops: no PoP named \"mars\" (known: us-east, eu-west, ap-south)"
        );
    }
}
