//! Origin configuration: the document root, `Cache-Control` and `Surrogate-Key` rules, allowed dot-paths.

use std::path::PathBuf;

use serde::Deserialize;

use crate::dot_paths::DotPaths;
use crate::error::OriginError;
use crate::rules::Rules;

/// Pattern value that matches fingerprinted file names rather than a glob; see [`OriginConfig`].
pub const FINGERPRINTED: &str = "@fingerprinted";

/// The `[origin]` config table.
///
/// ```toml
/// [origin]
/// root = "./site"              # required: the directory served
/// listen = "127.0.0.1:8000"    # used by the `edgecache origin` command only
///
/// # Cache-Control by URL path; the first matching rule wins. Setting any rule replaces
/// # all three defaults, which are, in order:
/// [[origin.cache_rules]]
/// pattern = "@fingerprinted"
/// cache_control = "public, max-age=31536000, immutable"
/// [[origin.cache_rules]]
/// pattern = "*.html"
/// cache_control = "public, max-age=60"
/// [[origin.cache_rules]]
/// pattern = "*"
/// cache_control = "public, max-age=3600"
///
/// # Surrogate-Key tags for purging by tag; every matching rule contributes its tags.
/// [[origin.tags]]
/// pattern = "/img/**"
/// tags = ["images", "static"]
/// ```
///
/// Dot-files and dot-directories (`/.env`, `/.git/config`, `/a/.secret/x`) answer 404, the
/// same as a missing file, unless `allow_dot_paths` (a top-level key of `[origin]`, e.g.
/// `allow_dot_paths = ["/.well-known/"]`) lists a decoded path prefix, starting with `/`,
/// that spells out every dot-named segment of the path. The built-in
/// `/.edgecache/fallback.js` is always served.
///
/// Patterns are globs over the decoded URL path, which always starts with `/`. `*` also
/// matches `/`, so `*.html` matches `/docs/a.html`. A directory request is matched as its
/// index file (`/docs/` as `/docs/index.html`). The special pattern `"@fingerprinted"`
/// matches a path whose last segment has a `.`-delimited part, other than the extension,
/// of at least 8 hex digits: `app.3f9c2a1b.js`, `logo.3f9c2a1bde.png`. A path that
/// matches no cache rule gets no `Cache-Control` header.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginConfig {
    pub root: PathBuf,
    #[serde(default)]
    pub listen: Option<String>,
    #[serde(default = "default_cache_rules")]
    pub cache_rules: Vec<CacheRule>,
    #[serde(default)]
    pub tags: Vec<TagRule>,
    /// Path prefixes under which dot-named files and directories are served, e.g. `"/.well-known/"`.
    #[serde(default)]
    pub allow_dot_paths: Vec<String>,
}

/// One `Cache-Control` rule: paths matching `pattern` get `cache_control` verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRule {
    pub pattern: String,
    pub cache_control: String,
}

/// One tag rule: paths matching `pattern` are tagged with `tags` in `Surrogate-Key`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagRule {
    pub pattern: String,
    pub tags: Vec<String>,
}

impl CacheRule {
    pub fn new(pattern: impl Into<String>, cache_control: impl Into<String>) -> Self {
        CacheRule {
            pattern: pattern.into(),
            cache_control: cache_control.into(),
        }
    }
}

impl TagRule {
    pub fn new(
        pattern: impl Into<String>,
        tags: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        TagRule {
            pattern: pattern.into(),
            tags: tags.into_iter().map(Into::into).collect(),
        }
    }
}

/// Long-lived for content-addressed names, a minute for pages, an hour for the rest.
pub fn default_cache_rules() -> Vec<CacheRule> {
    vec![
        CacheRule::new(FINGERPRINTED, "public, max-age=31536000, immutable"),
        CacheRule::new("*.html", "public, max-age=60"),
        CacheRule::new("*", "public, max-age=3600"),
    ]
}

impl OriginConfig {
    /// A config serving `root` with the default cache rules and no tags.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        OriginConfig {
            root: root.into(),
            listen: None,
            cache_rules: default_cache_rules(),
            tags: Vec::new(),
            allow_dot_paths: Vec::new(),
        }
    }

    /// Checks every value, naming the first bad key, e.g.
    /// `origin.cache_rules[1].pattern: invalid glob …` or `origin.root: /x is not a directory`.
    pub fn validate(&self) -> Result<(), OriginError> {
        check_root(&self.root)?;
        Rules::compile(self)?;
        DotPaths::compile(self).map(drop)
    }
}

fn check_root(root: &std::path::Path) -> Result<(), OriginError> {
    if root.as_os_str().is_empty() {
        return Err(OriginError::config("origin.root", "must not be empty"));
    }
    match std::fs::metadata(root) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(OriginError::config(
            "origin.root",
            format!("{} is not a directory", root.display()),
        )),
        Err(err) => Err(OriginError::config(
            "origin.root",
            format!("{}: {err}", root.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn new_uses_the_default_rules_in_order() {
        let config = OriginConfig::new("/srv");
        let patterns: Vec<_> = config
            .cache_rules
            .iter()
            .map(|r| r.pattern.as_str())
            .collect();
        assert_eq!(patterns, [FINGERPRINTED, "*.html", "*"]);
        assert!(config.tags.is_empty());
        assert!(config.allow_dot_paths.is_empty());
        assert_eq!(config.listen, None);
    }

    #[test]
    fn valid_config_passes() {
        let dir = site();
        let mut config = OriginConfig::new(dir.path());
        config.tags.push(TagRule::new("/img/**", ["images"]));
        config.validate().unwrap();
    }

    #[test]
    fn missing_root_is_named() {
        let err = OriginConfig::new("/definitely/not/here")
            .validate()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("origin.root: /definitely/not/here"),
            "{err}"
        );
    }

    #[test]
    fn file_root_is_not_a_directory() {
        let dir = site();
        let file = dir.path().join("f.txt");
        std::fs::write(&file, "x").unwrap();
        let err = OriginConfig::new(&file).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("origin.root: {} is not a directory", file.display())
        );
    }

    #[test]
    fn invalid_glob_names_the_rule_index() {
        let dir = site();
        let mut config = OriginConfig::new(dir.path());
        config
            .cache_rules
            .insert(1, CacheRule::new("/a/[b", "no-store"));
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("origin.cache_rules[1].pattern: invalid glob"),
            "{err}"
        );
    }

    #[test]
    fn bad_cache_control_and_tags_are_named() {
        let dir = site();
        let mut config = OriginConfig::new(dir.path());
        config.cache_rules = vec![CacheRule::new("*", "max-age=1\n")];
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("origin.cache_rules[0].cache_control:"),
            "{err}"
        );

        let mut config = OriginConfig::new(dir.path());
        config.tags = vec![
            TagRule::new("*", ["ok"]),
            TagRule::new("*", ["ok", "two words"]),
        ];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("origin.tags[1].tags[1]:"), "{err}");
    }

    #[test]
    fn deserializes_with_defaults_and_refuses_unknown_keys() {
        let config: OriginConfig = serde_json::from_str(r#"{"root": "/srv"}"#).unwrap();
        assert_eq!(config.cache_rules, default_cache_rules());
        assert!(config.allow_dot_paths.is_empty());
        let config: OriginConfig = serde_json::from_str(
            r#"{"root": "/srv", "cache_rules": [{"pattern": "*", "cache_control": "no-store"}],
                "tags": [{"pattern": "/img/**", "tags": ["images"]}],
                "allow_dot_paths": ["/.well-known/"]}"#,
        )
        .unwrap();
        assert_eq!(config.cache_rules, [CacheRule::new("*", "no-store")]);
        assert_eq!(config.tags, [TagRule::new("/img/**", ["images"])]);
        assert_eq!(config.allow_dot_paths, ["/.well-known/"]);
        let err = serde_json::from_str::<OriginConfig>(r#"{"root": "/srv", "rooot": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `rooot`"), "{err}");
        assert!(serde_json::from_str::<OriginConfig>(r#"{"listen": "x"}"#).is_err());
    }

    #[test]
    fn allow_dot_paths_entry_without_leading_slash_is_named() {
        let dir = site();
        let mut config = OriginConfig::new(dir.path());
        config.allow_dot_paths = vec!["/.well-known/".into(), ".well-known/".into()];
        let err = config.validate().unwrap_err().to_string();
        assert_eq!(
            err,
            r#"origin.allow_dot_paths[1]: ".well-known/" must start with /"#
        );
        config.allow_dot_paths.truncate(1);
        config.validate().unwrap();
    }

    #[test]
    fn unknown_special_pattern_is_refused() {
        let dir = site();
        let mut config = OriginConfig::new(dir.path());
        config.tags = vec![TagRule::new("@hashed", ["x"])];
        let err = config.validate().unwrap_err().to_string();
        assert!(err.starts_with("origin.tags[0].pattern:"), "{err}");
    }
}
