//! Compiled cache and tag rules: which `Cache-Control` and `Surrogate-Key` a URL path gets.

use globset::{GlobBuilder, GlobMatcher};
use http::HeaderValue;

use crate::config::{FINGERPRINTED, OriginConfig};
use crate::error::OriginError;

/// Shortest run of hex digits taken as a content hash; shorter runs are too often words
/// or numbers (`cafe`, `2024`).
const MIN_FINGERPRINT_HEX: usize = 8;

/// A rule's path pattern, compiled once at startup.
#[derive(Debug, Clone)]
enum PathPattern {
    Fingerprinted,
    Glob(GlobMatcher),
}

impl PathPattern {
    fn compile(pattern: &str) -> Result<Self, String> {
        if pattern == FINGERPRINTED {
            return Ok(PathPattern::Fingerprinted);
        }
        if pattern.starts_with('@') {
            return Err(format!(
                "unknown special pattern {pattern:?} (the only one is {FINGERPRINTED:?})"
            ));
        }
        GlobBuilder::new(pattern)
            .literal_separator(false)
            .build()
            .map(|glob| PathPattern::Glob(glob.compile_matcher()))
            .map_err(|err| format!("invalid glob {pattern:?}: {}", err.kind()))
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Fingerprinted => is_fingerprinted(path),
            PathPattern::Glob(glob) => glob.is_match(path),
        }
    }
}

/// Whether the last segment of `path` carries a content hash, e.g. `app.3f9c2a1b.js`.
pub(crate) fn is_fingerprinted(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut parts: Vec<&str> = name.split('.').collect();
    // The extension is never the hash; without a dot there is no delimited part at all.
    if parts.len() < 2 {
        return false;
    }
    parts.pop();
    parts.iter().any(|part| {
        part.len() >= MIN_FINGERPRINT_HEX && part.bytes().all(|b| b.is_ascii_hexdigit())
    })
}

/// Cache and tag rules ready for matching.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    cache: Vec<(PathPattern, HeaderValue)>,
    tags: Vec<(PathPattern, Vec<String>)>,
}

impl Rules {
    /// Compiles every rule of `config`, naming the first bad key.
    pub(crate) fn compile(config: &OriginConfig) -> Result<Self, OriginError> {
        let mut cache = Vec::with_capacity(config.cache_rules.len());
        for (i, rule) in config.cache_rules.iter().enumerate() {
            let pattern = PathPattern::compile(&rule.pattern).map_err(|msg| {
                OriginError::config(format!("origin.cache_rules[{i}].pattern"), msg)
            })?;
            let key = || format!("origin.cache_rules[{i}].cache_control");
            if rule.cache_control.trim().is_empty() {
                return Err(OriginError::config(key(), "must not be empty"));
            }
            let value = HeaderValue::from_str(&rule.cache_control)
                .map_err(|_| OriginError::config(key(), "not a valid header value"))?;
            cache.push((pattern, value));
        }

        let mut tags = Vec::with_capacity(config.tags.len());
        for (i, rule) in config.tags.iter().enumerate() {
            let pattern = PathPattern::compile(&rule.pattern)
                .map_err(|msg| OriginError::config(format!("origin.tags[{i}].pattern"), msg))?;
            for (j, tag) in rule.tags.iter().enumerate() {
                // Tags are space-separated on the wire, so a tag must be one visible token.
                if tag.is_empty() || !tag.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(OriginError::config(
                        format!("origin.tags[{i}].tags[{j}]"),
                        format!("{tag:?} must be non-empty visible ASCII without spaces"),
                    ));
                }
            }
            tags.push((pattern, rule.tags.clone()));
        }
        Ok(Rules { cache, tags })
    }

    /// `Cache-Control` of the first rule matching `path`.
    pub(crate) fn cache_control(&self, path: &str) -> Option<&HeaderValue> {
        self.cache
            .iter()
            .find(|(pattern, _)| pattern.matches(path))
            .map(|(_, value)| value)
    }

    /// `Surrogate-Key` value joining, in rule order and without repeats, the tags of every rule matching `path`.
    pub(crate) fn surrogate_key(&self, path: &str) -> Option<HeaderValue> {
        let mut joined: Vec<&str> = Vec::new();
        for (pattern, tags) in &self.tags {
            if pattern.matches(path) {
                for tag in tags {
                    if !joined.contains(&tag.as_str()) {
                        joined.push(tag);
                    }
                }
            }
        }
        if joined.is_empty() {
            return None;
        }
        // Tags were checked to be visible ASCII when compiled.
        HeaderValue::from_str(&joined.join(" ")).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CacheRule, TagRule};

    fn defaults() -> Rules {
        Rules::compile(&OriginConfig::new("/unused")).unwrap()
    }

    #[test]
    fn fingerprints_are_eight_or_more_hex_digits_between_dots() {
        assert!(is_fingerprinted("/app.3f9c2a1b.js"));
        assert!(is_fingerprinted("/img/logo.3f9c2a1bde.png"));
        assert!(is_fingerprinted("/3F9C2A1B.css"));
        assert!(is_fingerprinted("/a.b.0123456789abcdef.min.js"));
    }

    #[test]
    fn non_fingerprints() {
        assert!(!is_fingerprinted("/app.js"));
        assert!(!is_fingerprinted("/app.3f9c2a1.js"), "seven digits");
        assert!(!is_fingerprinted("/app.3f9c2a1g.js"), "not hex");
        assert!(!is_fingerprinted("/app-3f9c2a1b.js"), "dash-delimited");
        assert!(!is_fingerprinted("/3f9c2a1b"), "no dot");
        assert!(
            !is_fingerprinted("/file.3f9c2a1b"),
            "extension is not a hash"
        );
        assert!(
            !is_fingerprinted("/3f9c2a1bde.d/app.js"),
            "only the last segment"
        );
        assert!(!is_fingerprinted("/"));
        assert!(!is_fingerprinted(""));
    }

    #[test]
    fn default_rules_pick_immutable_then_html_then_hour() {
        let rules = defaults();
        let cc = |p: &str| rules.cache_control(p).unwrap().to_str().unwrap().to_owned();
        assert_eq!(
            cc("/app.3f9c2a1b.js"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(
            cc("/index.3f9c2a1b.html"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(cc("/docs/deep/page.html"), "public, max-age=60");
        assert_eq!(cc("/index.html"), "public, max-age=60");
        assert_eq!(cc("/style.css"), "public, max-age=3600");
        assert_eq!(cc("/README"), "public, max-age=3600");
    }

    #[test]
    fn first_matching_rule_wins_and_no_match_means_no_header() {
        let mut config = OriginConfig::new("/unused");
        config.cache_rules = vec![
            CacheRule::new("/api/**", "no-store"),
            CacheRule::new("*.json", "max-age=5"),
        ];
        let rules = Rules::compile(&config).unwrap();
        assert_eq!(rules.cache_control("/api/v1/x.json").unwrap(), "no-store");
        assert_eq!(rules.cache_control("/data/x.json").unwrap(), "max-age=5");
        assert!(rules.cache_control("/x.css").is_none());
    }

    #[test]
    fn surrogate_key_joins_all_matching_rules_without_repeats() {
        let mut config = OriginConfig::new("/unused");
        config.tags = vec![
            TagRule::new("/img/**", ["images", "static"]),
            TagRule::new("*.png", ["png", "static"]),
            TagRule::new("@fingerprinted", ["hashed"]),
            TagRule::new("/css/**", ["css"]),
        ];
        let rules = Rules::compile(&config).unwrap();
        assert_eq!(
            rules.surrogate_key("/img/a/logo.3f9c2a1b.png").unwrap(),
            "images static png hashed"
        );
        assert_eq!(rules.surrogate_key("/b.png").unwrap(), "png static");
        assert!(rules.surrogate_key("/js/app.js").is_none());
    }
}
